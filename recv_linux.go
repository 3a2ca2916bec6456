//go:build linux

package devmem

import (
	"io"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvSys is the msghdr and iovec of the receiver's recvmsg, built by hand:
// unix.Recvmsg would swap an empty iovec for a 1-byte one (capping each call
// at one byte) and cannot express a NULL iov_base.
type recvSys struct {
	msg unix.Msghdr
	iov unix.Iovec
}

func (r *Receiver) initSys() {
	r.readFn = r.recvmsg
}

// recvmsg is the RawConn.Read callback: one recvmsg(MSG_SOCK_DEVMEM),
// returning false on EAGAIN so the poller parks the goroutine — after
// giving the release policy its chance to return tokens first.
func (r *Receiver) recvmsg(fd uintptr) bool {
	m := &r.sys.msg
	m.Iov = &r.sys.iov
	m.SetIovlen(1)
	m.Control = &r.oob[0]
	m.SetControllen(r.ctlLen)
	m.Flags = 0
	for {
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(m)), unix.MSG_SOCK_DEVMEM)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			r.beforeBlock()
			return false
		}
		r.n, r.errno = int(n), errno
		return true
	}
}

// recv makes one receive into frags and buf (the iovec; unused when
// strict, whose iov_base is NULL so that copying readable data faults).
func (r *Receiver) recv(frags []Frag, buf []byte) (Message, error) {
	empty := Message{Frags: frags[:0], Linear: buf[:0]}
	r.sys.iov.Base = nil
	if !r.strict {
		r.sys.iov.Base = &buf[0]
	}
	r.sys.iov.SetLen(r.bufSize)
	err := r.rc.Read(r.readFn)
	r.sys.iov.Base = nil // keep no pointer to a caller's buffer
	if err != nil {
		return empty, &Error{Op: opRecvmsg, Err: err}
	}
	switch r.errno {
	case 0:
	case errnoTooSmall:
		return empty, &Error{Op: opRecvmsg, Errno: errnoTooSmall, Err: ErrControlTooSmall}
	case unix.EFAULT:
		if r.strict {
			return empty, &Error{Op: opRecvmsg, Errno: unix.EFAULT, Err: ErrNotDevmem}
		}
		fallthrough
	default:
		return empty, &Error{Op: opRecvmsg, Errno: r.errno, Err: r.errno}
	}
	if r.n == 0 {
		return empty, io.EOF
	}
	controlLen := min(int(r.sys.msg.Controllen), r.ctlLen)
	nf, err := parseControl(nativeCmsgLayout, r.oob[:controlLen], frags)
	return r.finish(frags, buf, r.n, nf, err)
}
