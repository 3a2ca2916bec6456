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

func (r *Receiver) initSys(bufSize int) {
	if r.buf != nil {
		r.sys.iov.Base = &r.buf[0]
	} // else strict: iov_base NULL, so copying readable data faults.
	r.sys.iov.SetLen(bufSize)
	r.readFn = r.recvmsg
}

// recvmsg is the RawConn.Read callback: one recvmsg(MSG_SOCK_DEVMEM),
// returning false on EAGAIN so the poller parks the goroutine.
func (r *Receiver) recvmsg(fd uintptr) bool {
	m := &r.sys.msg
	m.Iov = &r.sys.iov
	m.SetIovlen(1)
	m.Control = &r.oob[0]
	m.SetControllen(len(r.oob))
	m.Flags = 0
	for {
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(m)), unix.MSG_SOCK_DEVMEM)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.n, r.errno = int(n), errno
		return true
	}
}

func (r *Receiver) recv() (Message, error) {
	if err := r.rc.Read(r.readFn); err != nil {
		return Message{}, &Error{Op: opRecvmsg, Err: err}
	}
	switch r.errno {
	case 0:
	case ETOOSMALL:
		return Message{}, &Error{Op: opRecvmsg, Errno: ETOOSMALL, Err: ErrControlTooSmall}
	case unix.EFAULT:
		if r.strict {
			return Message{}, &Error{Op: opRecvmsg, Errno: unix.EFAULT, Err: ErrNotDevmem}
		}
		fallthrough
	default:
		return Message{}, &Error{Op: opRecvmsg, Errno: r.errno, Err: r.errno}
	}
	if r.n == 0 {
		return Message{}, io.EOF
	}
	controlLen := min(int(r.sys.msg.Controllen), len(r.oob))
	nf, err := parseControl(nativeCmsgLayout, r.oob[:controlLen], r.frags)
	return r.finish(r.n, nf, err)
}
