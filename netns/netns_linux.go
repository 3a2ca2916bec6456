//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Hooks for tests: a restore that fails must leave the thread locked.
var (
	setns   = unix.Setns
	unshare = unix.Unshare
)

// threadSelf is the calling thread's netns. /proc/self would name the
// thread group leader's, which may be parked in another netns.
const threadSelf = "/proc/thread-self/ns/net"

// Current returns the netns of the calling OS thread. Unless the goroutine
// is locked to its thread (runtime.LockOSThread) that is the netns every
// goroutine of the process runs in, which this package never changes.
func Current() (*Handle, error) { return FromPath(threadSelf) }

// FromPid returns the netns of process pid.
func FromPid(pid int) (*Handle, error) {
	if pid <= 0 {
		return nil, &Error{Op: "open", Err: fmt.Errorf("bad pid %d", pid)}
	}
	return FromPath("/proc/" + strconv.Itoa(pid) + "/ns/net")
}

// FromName returns the named netns /run/netns/NAME, as "ip netns add NAME"
// or [NewNamed] makes it.
func FromName(name string) (*Handle, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	return FromPath(NamedDir + "/" + name)
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return &Error{Op: "name", Err: fmt.Errorf("bad netns name %q", name)}
	}
	return nil
}

// FromPath opens the netns file path: /proc/PID/ns/net, /proc/PID/task/TID/ns/net,
// a bind mount of one (/run/netns/NAME, /var/run/docker/netns/ID), or a
// /proc/self/fd/N naming an open one. A file that is not a netns is
// refused with ErrNotNetns.
func FromPath(path string) (*Handle, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &Error{Op: "open", Path: path, Err: err}
	}
	h, err := newHandle(f)
	if err != nil {
		f.Close()
		return nil, &Error{Op: "open", Path: path, Err: err}
	}
	return h, nil
}

func newHandle(f *os.File) (*Handle, error) {
	fd := int(f.Fd())
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err != nil {
		// Kernels before 4.11 lack NS_GET_NSTYPE; nsfs files are all we
		// can check then.
		var sfs unix.Statfs_t
		if serr := unix.Fstatfs(fd, &sfs); serr != nil || sfs.Type != unix.NSFS_MAGIC {
			return nil, ErrNotNetns
		}
		typ = unix.CLONE_NEWNET
	}
	if typ != unix.CLONE_NEWNET {
		return nil, ErrNotNetns
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	return &Handle{f: f, dev: uint64(st.Dev), ino: uint64(st.Ino)}, nil //nolint:unconvert // Dev and Ino are 32-bit on some ports
}

// New makes a new, empty network namespace (only a loopback device, down)
// and returns a handle on it. The namespace lives as long as the handle or
// anything created in it; no thread of the process moves into it.
func New() (*Handle, error) {
	var h *Handle
	err := onThread(func() error {
		if err := unshare(unix.CLONE_NEWNET); err != nil {
			return &Error{Op: "unshare", Err: err}
		}
		var err error
		h, err = Current()
		return err
	})
	if err != nil && h != nil {
		h.Close()
		h = nil
	}
	return h, err
}

// NewNamed makes a new network namespace bind-mounted at /run/netns/NAME,
// where "ip netns" and [FromName] find it, and returns a handle on it. The
// namespace outlives the process until [DeleteNamed].
func NewNamed(name string) (*Handle, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(NamedDir, 0o755); err != nil {
		return nil, &Error{Op: "mkdir", Path: NamedDir, Err: err}
	}
	path := NamedDir + "/" + name
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return nil, &Error{Op: "create", Path: path, Err: err}
	}
	f.Close()
	h, err := New()
	if err == nil {
		// The handle's fd names the new netns; bind-mounting its magic
		// link pins the namespace itself.
		src := "/proc/self/fd/" + strconv.Itoa(h.Fd())
		if merr := unix.Mount(src, path, "", unix.MS_BIND, ""); merr != nil {
			h.Close()
			h, err = nil, &Error{Op: "bind mount", Path: path, Err: merr}
		}
	}
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return h, nil
}

// DeleteNamed unmounts and removes /run/netns/NAME, as "ip netns delete"
// does. The namespace goes away once nothing else holds it.
func DeleteNamed(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	path := NamedDir + "/" + name
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
		return &Error{Op: "unmount", Path: path, Err: err}
	}
	if err := os.Remove(path); err != nil {
		return &Error{Op: "remove", Path: path, Err: err}
	}
	return nil
}

// onThread runs fn on a new goroutine locked to its OS thread, and puts
// the thread back into its original netns afterwards. If that fails, the
// goroutine exits still locked, which makes the Go runtime terminate the
// thread instead of reusing it. A panic in fn is re-raised in the caller's
// goroutine once the thread is restored; fn calling runtime.Goexit (t.FailNow)
// ends only the helper goroutine and is reported as an error.
func onThread(fn func() error) error {
	type outcome struct {
		err      error
		panicked bool
		pval     any
	}
	done := make(chan outcome, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.OpenFile(threadSelf, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- outcome{err: &Error{Op: "open", Path: threadSelf, Err: err}}
			return
		}
		var out outcome
		normal := false
		defer func() {
			if !normal {
				if r := recover(); r != nil {
					out = outcome{panicked: true, pval: r}
				} else {
					out = outcome{err: &Error{Op: "do", Err: errors.New("function called runtime.Goexit")}}
				}
			}
			rerr := setns(int(orig.Fd()), unix.CLONE_NEWNET)
			orig.Close()
			if rerr != nil {
				// Stay locked: the thread dies with this goroutine.
				out.err = errors.Join(out.err, &Error{Op: "restore netns", Err: rerr})
				done <- out
				return
			}
			runtime.UnlockOSThread()
			done <- out
		}()
		out.err = fn()
		normal = true
	}()
	out := <-done
	if out.panicked {
		panic(out.pval)
	}
	return out.err
}

// Do runs fn on a locked OS thread that has joined h and returns fn's error.
// Sockets fn creates belong to h for their whole life; goroutines fn starts
// do not run in h. The thread goes back to its netns afterwards, or, should
// that fail, is discarded: the error then says so, and no goroutine ever
// runs in h outside fn. (If that thread is the process's main thread, which
// Linux does not let exit, the runtime parks it for good instead; then
// /proc/PID/ns/net, which names the main thread's netns, shows h.)
//
// A panic in fn is re-raised in the caller after the thread is restored.
// Do may be nested and called from many goroutines at once.
func (h *Handle) Do(fn func() error) error {
	return onThread(func() error {
		// The lock covers only setns: fn may close h or nest Do on it.
		f, err := h.file("do")
		if err != nil {
			return err
		}
		err = setns(int(f.Fd()), unix.CLONE_NEWNET)
		h.mu.RUnlock()
		if err != nil {
			return &Error{Op: "setns", Err: err}
		}
		return fn()
	})
}

// dupFd returns a close-on-exec duplicate of the handle's descriptor, for
// requests that name the namespace by fd while other locks are taken.
func (h *Handle) dupFd(op string) (int, error) {
	f, err := h.file(op)
	if err != nil {
		return -1, err
	}
	defer h.mu.RUnlock()
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return -1, &Error{Op: op, Err: err}
	}
	return fd, nil
}

// Socket returns a new close-on-exec socket(2) of h.
func (h *Handle) Socket(domain, typ, proto int) (int, error) {
	fd := -1
	err := h.Do(func() error {
		var err error
		fd, err = unix.Socket(domain, typ|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return &Error{Op: "socket", Err: err}
		}
		return nil
	})
	return fd, err
}

// Listen listens in h, as net.ListenConfig.Listen does. The listener and
// the connections it accepts belong to h.
func (h *Handle) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	var ln net.Listener
	err := h.Do(func() error {
		var err error
		ln, err = (&net.ListenConfig{}).Listen(ctx, network, address)
		return err
	})
	return ln, err
}

// ListenPacket is the packet-oriented Listen.
func (h *Handle) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := h.Do(func() error {
		var err error
		pc, err = (&net.ListenConfig{}).ListenPacket(ctx, network, address)
		return err
	})
	return pc, err
}

// Dial connects from h, as net.Dialer.DialContext does.
func (h *Handle) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return h.DialWith(ctx, nil, network, address)
}

// DialWith is Dial with the options of d (nil: defaults). Every address is
// tried in turn on fn's thread: Happy Eyeballs would race dials on other
// goroutines, outside h, so it is turned off. Host names are resolved
// outside h (the resolver's own sockets are not h's); pass literal
// addresses when h has its own DNS.
func (h *Handle) DialWith(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	var dd net.Dialer
	if d != nil {
		dd = *d
	}
	dd.FallbackDelay = -1
	var c net.Conn
	err := h.Do(func() error {
		var err error
		c, err = dd.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// DialNetlink opens a netlink socket of family in h. cfg.NetNS must be 0:
// the namespace is h.
func (h *Handle) DialNetlink(family int, cfg *netlink.Config) (*netlink.Conn, error) {
	if cfg != nil && cfg.NetNS != 0 {
		return nil, &Error{Op: "dial netlink", Err: errors.New("netlink.Config.NetNS is set; the handle picks the netns")}
	}
	var c *netlink.Conn
	err := h.Do(func() error {
		var err error
		c, err = netlink.Dial(family, cfg)
		return err
	})
	return c, err
}

// DialGenetlink opens a generic netlink socket in h, for families such as
// netdev or ethtool whose commands act on the netdevs of h.
func (h *Handle) DialGenetlink(cfg *netlink.Config) (*genetlink.Conn, error) {
	if cfg != nil && cfg.NetNS != 0 {
		return nil, &Error{Op: "dial genetlink", Err: errors.New("netlink.Config.NetNS is set; the handle picks the netns")}
	}
	var c *genetlink.Conn
	err := h.Do(func() error {
		var err error
		c, err = genetlink.Dial(cfg)
		return err
	})
	return c, err
}

// PeerID returns the id that h knows peer by (its "netnsid", as
// "ip netns list-id" shows it; the netns-id of a devmem queue lease),
// asking the kernel to assign one if there is none yet.
func (h *Handle) PeerID(peer *Handle) (int, error) {
	id, err := h.getID(peer)
	if err != nil || id >= 0 {
		return id, err
	}
	if err := h.SetPeerID(peer, -1); err != nil && !errors.Is(err, unix.EEXIST) {
		return -1, err
	}
	id, err = h.getID(peer)
	if err == nil && id < 0 {
		err = &Error{Op: "get nsid", Err: errors.New("kernel assigned no id")}
	}
	return id, err
}

// SetPeerID makes h know peer by id (as "ip netns set" does); id -1 lets the
// kernel pick the lowest free id. It fails with EEXIST if peer already has
// an id in h or id is taken.
func (h *Handle) SetPeerID(peer *Handle, id int) error {
	pfd, err := peer.dupFd("set nsid")
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	_, err = h.rtnsid(unix.RTM_NEWNSID, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NETNSA_FD, uint32(pfd))
		ae.Int32(unix.NETNSA_NSID, int32(id))
	})
	if err != nil {
		return &Error{Op: "set nsid", Err: unwrapNetlink(err)}
	}
	return nil
}

func (h *Handle) getID(peer *Handle) (int, error) {
	pfd, err := peer.dupFd("get nsid")
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	msgs, err := h.rtnsid(unix.RTM_GETNSID, 0, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(unix.NETNSA_FD, uint32(pfd))
	})
	if err != nil {
		return -1, &Error{Op: "get nsid", Err: unwrapNetlink(err)}
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		if err != nil {
			return -1, &Error{Op: "get nsid", Err: err}
		}
		for ad.Next() {
			if ad.Type() == unix.NETNSA_NSID {
				return int(ad.Int32()), nil
			}
		}
		if err := ad.Err(); err != nil {
			return -1, &Error{Op: "get nsid", Err: err}
		}
	}
	return -1, &Error{Op: "get nsid", Err: errors.New("reply carries no NETNSA_NSID")}
}

// rtnsid sends one RTM_*NSID request from a route socket of h. The body is
// a struct rtgenmsg (one byte, padded to four) and the attributes.
func (h *Handle) rtnsid(typ netlink.HeaderType, flags netlink.HeaderFlags, enc func(*netlink.AttributeEncoder)) ([]netlink.Message, error) {
	c, err := h.DialNetlink(unix.NETLINK_ROUTE, &netlink.Config{Strict: true})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	ae := netlink.NewAttributeEncoder()
	enc(ae)
	attrs, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	body := append([]byte{unix.AF_UNSPEC, 0, 0, 0}, attrs...)
	return c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | flags},
		Data:   body,
	})
}

// unwrapNetlink returns the errno under a netlink.OpError, keeping the
// kernel's message in the text.
func unwrapNetlink(err error) error {
	var oe *netlink.OpError
	if errors.As(err, &oe) {
		var errno unix.Errno
		if errors.As(oe.Err, &errno) {
			if oe.Message != "" {
				return &kernelError{errno: errno, msg: oe.Message}
			}
			return errno
		}
	}
	return err
}

type kernelError struct {
	errno unix.Errno
	msg   string
}

func (e *kernelError) Error() string { return e.errno.Error() + ": " + e.msg }
func (e *kernelError) Unwrap() error { return e.errno }
