// Package netns gives Go code a handle on Linux network namespaces and runs
// work inside one without moving the whole process.
//
// A network namespace is per thread on Linux, and Go multiplexes goroutines
// over threads, so entering a netns with a bare setns(2) puts some unknown
// set of goroutines there. [Handle.Do] runs a function on a locked OS thread
// that has joined the namespace and returns the thread to where it was; if
// that fails the thread is never given back to the scheduler (it exits with
// its goroutine), so no other goroutine can ever run in the wrong netns.
//
// What a socket belongs to is fixed when it is created: a socket, listener
// or netlink connection opened inside Do stays in that netns for its whole
// life and may be used from any goroutine afterwards. The helpers
// [Handle.Listen], [Handle.Dial], [Handle.ListenPacket], [Handle.Socket] and
// [Handle.DialNetlink] do exactly that. Devmem bindings work the same way:
// devmem.BindRX called inside Do binds a queue of a netdev of that netns,
// and the Binding keeps its netlink socket (and so its netns) until Close.
//
// User namespaces cannot be entered this way: setns(CLONE_NEWUSER) is
// refused to multi-threaded processes, which every Go program is. Code that
// must hold capabilities of a non-init user namespace (bind-rx from inside
// a rootless pod) runs as a child process started inside it, for example by
// nsenter(1) --user --net.
//
// Handles follow the model of github.com/vishvananda/netns: open one by
// path, by pid, by name (/run/netns/NAME, as ip-netns(8) makes them) or for
// the calling thread, and compare them by inode. Outside Linux every
// function returns ErrNotSupported.
package netns

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
)

// ErrNotSupported is returned outside Linux.
var ErrNotSupported = errors.New("netns: network namespaces are not supported on this system")

// ErrNotNetns is returned when a path opens a file that is not a network
// namespace.
var ErrNotNetns = errors.New("netns: not a network namespace")

// NamedDir is where named network namespaces live, as ip-netns(8) makes
// them.
const NamedDir = "/run/netns"

// A Handle is an open network namespace: an nsfs file descriptor. It keeps
// the namespace alive while open. Its methods are safe for concurrent use;
// after Close they return an error matching net.ErrClosed.
type Handle struct {
	mu     sync.RWMutex
	f      *os.File
	dev    uint64
	ino    uint64
	closed bool
}

// file returns the handle's file with the read lock held; the caller must
// call h.mu.RUnlock when done with it.
func (h *Handle) file(op string) (*os.File, error) {
	h.mu.RLock()
	if h.closed || h.f == nil {
		h.mu.RUnlock()
		return nil, &Error{Op: op, Err: net.ErrClosed}
	}
	return h.f, nil
}

// Close closes the handle. The namespace itself lives on while anything
// else (a process, a bind mount, another handle, a socket) holds it.
// Close is idempotent: later calls return nil.
func (h *Handle) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed || h.f == nil {
		h.closed = true
		return nil
	}
	h.closed = true
	return h.f.Close()
}

// Fd returns the handle's file descriptor, for system calls that take one
// (IFLA_NET_NS_FD, setns). It stays valid until Close.
func (h *Handle) Fd() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	if h.closed || h.f == nil {
		return -1
	}
	return int(h.f.Fd())
}

// Equal reports whether h and o are the same namespace (same nsfs inode).
func (h *Handle) Equal(o *Handle) bool {
	if h == nil || o == nil {
		return h == o
	}
	return h.dev == o.dev && h.ino == o.ino
}

// Inode returns the namespace's inode number: the number in "net:[N]" of
// /proc/PID/ns/net, unique among live namespaces.
func (h *Handle) Inode() uint64 { return h.ino }

// String returns the namespace the way /proc/PID/ns/net names it,
// "net:[INODE]".
func (h *Handle) String() string {
	if h == nil {
		return "net:[none]"
	}
	return fmt.Sprintf("net:[%d]", h.ino)
}

// Error is the error type of this package: the operation and what went
// wrong (an errno, net.ErrClosed, ...).
type Error struct {
	Op   string // "setns", "open /run/netns/pod", ...
	Path string // the namespace file, when one is involved
	Err  error
}

func (e *Error) Error() string {
	s := "netns: " + e.Op
	if e.Path != "" {
		s += " " + e.Path
	}
	return s + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }
