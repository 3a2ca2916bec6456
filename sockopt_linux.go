//go:build linux

package devmem

import (
	"errors"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

const sockoptSupported = true

// dontneed runs setsockopt(fd, SOL_SOCKET, SO_DEVMEM_DONTNEED, batch) as a
// raw system call because the kernel returns the number of frags freed as
// the (positive) return value, which x/sys's Setsockopt* helpers drop.
//
// SYS_SETSOCKOPT is the direct system call on every architecture,
// including 386 and s390x where x/sys multiplexes setsockopt through
// socketcall(2): both got direct socket calls in Linux 4.3, long before
// devmem TCP (6.12).
func (r *TokenReleaser) dontneed(fd uintptr) {
	r1, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_DEVMEM_DONTNEED,
		uintptr(unsafe.Pointer(&r.batch[0])), uintptr(r.batchN)*unsafe.Sizeof(r.batch[0]), 0)
	r.ret, r.errno = r1, errno
}

// checkTCPSocket checks that rc is a connected TCP socket: devmem TCP
// exists for nothing else, and recvmsg on a UDP or Unix socket would take
// datagrams or stream bytes as readable data without a word. Errors carry
// ENOTSOCK (not a socket) or EPROTOTYPE (another kind of socket), or
// ENOTCONN for a listener, and say what the socket is.
func checkTCPSocket(rc syscall.RawConn) error {
	var typ, proto, listening int
	var serr error
	err := rc.Control(func(fd uintptr) {
		if typ, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); serr != nil {
			return
		}
		if proto, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL); serr != nil {
			return
		}
		listening, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN)
	})
	if err != nil {
		return err // closed: matches net.ErrClosed
	}
	if serr != nil {
		var errno syscall.Errno
		if errors.As(serr, &errno) && errno == unix.ENOTSOCK {
			return &Error{Errno: errno, Err: errors.New("conn is not a socket")}
		}
		return &Error{Err: serr}
	}
	if listening != 0 {
		return &Error{Errno: unix.ENOTCONN, Err: errors.New("conn is a listening socket; use an accepted connection")}
	}
	if typ != unix.SOCK_STREAM || proto != unix.IPPROTO_TCP {
		return &Error{Errno: unix.EPROTOTYPE, Err: errors.New("conn is not a TCP socket (" + socketKind(typ, proto) + ")")}
	}
	return nil
}

func socketKind(typ, proto int) string {
	var s string
	switch typ {
	case unix.SOCK_STREAM:
		s = "SOCK_STREAM"
	case unix.SOCK_DGRAM:
		s = "SOCK_DGRAM"
	case unix.SOCK_SEQPACKET:
		s = "SOCK_SEQPACKET"
	case unix.SOCK_RAW:
		s = "SOCK_RAW"
	default:
		s = "type " + strconv.Itoa(typ)
	}
	switch proto {
	case unix.IPPROTO_TCP:
		return s + ", TCP"
	case unix.IPPROTO_UDP:
		return s + ", UDP"
	case unix.IPPROTO_MPTCP:
		return s + ", MPTCP, which has no devmem receive"
	case 0:
		return s + ", protocol 0 (a Unix socket?)"
	}
	return s + ", protocol " + strconv.Itoa(proto)
}
