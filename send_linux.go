//go:build linux

package devmem

import (
	"encoding/binary"
	"io"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// nativeTxABI is this architecture's ABI, from x/sys (SOL_SOCKET is 0xffff
// on mips, SCM_DEVMEM_DMABUF 0x58 on sparc64). A 32-bit task on a 64-bit
// kernel uses the 32-bit (compat) layout, which is what a 32-bit GOARCH is.
var nativeTxABI = txABI{
	wordSize:        unix.SizeofPtr,
	bigEndian:       binary.NativeEndian.Uint16([]byte{0, 1}) == 1,
	solSocket:       unix.SOL_SOCKET,
	scmDevmemDMABuf: unix.SCM_DEVMEM_DMABUF,
}

// init turns SO_ZEROCOPY on: without it the kernel refuses a devmem sendmsg
// with EINVAL.
func (s *Sender) init() error {
	var serr error
	err := s.rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		e := errnoError("setsockopt SO_ZEROCOPY", err).(*Error)
		if e.Errno == unix.EOPNOTSUPP || e.Errno == unix.ENOPROTOOPT {
			e.Message = "SO_ZEROCOPY needs a TCP socket"
		}
		return e
	}
	return nil
}

// sendRange issues sendmsg(MSG_ZEROCOPY) calls until [off, off+n) is queued
// or one fails, recording each call's zerocopy id under seq. It returns the
// bytes queued. The caller holds s.sendMu.
func (s *Sender) sendRange(seq uint32, off, n int64) (int64, error) {
	var queued int64
	for queued < n {
		s.iovs, _ = appendIovecs(s.iovs[:0], s.iovBase, off+queued, n-queued, s.chunk, s.maxIOVs, maxSendmsgBytes)
		var hdr unix.Msghdr
		hdr.Iov = (*unix.Iovec)(unsafe.Pointer(&s.iovs[0]))
		hdr.SetIovlen(len(s.iovs))
		if len(s.control) > 0 {
			hdr.Control = &s.control[0]
			hdr.SetControllen(len(s.control))
		}
		var (
			written int64
			errno   unix.Errno
		)
		err := s.rc.Write(func(fd uintptr) bool {
			for {
				r, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&hdr)), unix.MSG_ZEROCOPY|unix.MSG_NOSIGNAL)
				switch e {
				case unix.EINTR:
					continue
				case unix.EAGAIN:
					return false
				}
				written, errno = int64(r), e
				if e == 0 && r > 0 {
					// Record before giving up the write lock, so
					// a reaper cannot see this call's completion
					// first.
					s.noteSent(seq, off+queued, int64(r))
				}
				return true
			}
		})
		runtime.KeepAlive(s.iovs)
		runtime.KeepAlive(s.control)
		switch {
		case err != nil:
			return queued, &Error{Op: "sendmsg", Err: err}
		case errno != 0:
			return queued, &Error{Op: "sendmsg", Errno: errno, Err: errno, Message: sendErrnoHint(syscall.Errno(errno), s.dmabufID)}
		case written <= 0:
			return queued, &Error{Op: "sendmsg", Err: io.ErrShortWrite}
		}
		queued += written
	}
	return queued, nil
}

// reapUntil drains the error queue, waiting through the poller (an error
// queue entry raises EPOLLERR, which wakes writers) until cond, called with
// s.mu held, holds. record says the reap is for Completions.
func (s *Sender) reapUntil(record bool, cond func() bool) error {
	var rerr error
	err := s.rc.Write(func(fd uintptr) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		if err := s.drainLocked(int(fd), record); err != nil {
			rerr = err
			return true
		}
		return cond()
	})
	if err != nil {
		return &Error{Op: "wait completion", Err: err}
	}
	return rerr
}

// reapNow drains the error queue without waiting.
func (s *Sender) reapNow() error {
	var rerr error
	err := s.rc.Control(func(fd uintptr) {
		s.mu.Lock()
		defer s.mu.Unlock()
		rerr = s.drainLocked(int(fd), false)
	})
	if err != nil {
		return &Error{Op: "recvmsg MSG_ERRQUEUE", Err: err}
	}
	return rerr
}

// drainLocked reads every error-queue message (recvmsg with MSG_ERRQUEUE
// never blocks) and applies it. The caller holds s.mu.
func (s *Sender) drainLocked(fd int, record bool) error {
	if s.reapBuf == nil {
		// One sock_extended_err plus the offender address, with room
		// for a timestamp or packet-info cmsg alongside.
		s.reapBuf = make([]byte, 256)
	}
	s.recordDone = record
	defer func() { s.recordDone = false }()
	for {
		var hdr unix.Msghdr
		hdr.Control = &s.reapBuf[0]
		hdr.SetControllen(len(s.reapBuf))
		_, _, e := unix.Syscall(unix.SYS_RECVMSG, uintptr(fd), uintptr(unsafe.Pointer(&hdr)), unix.MSG_ERRQUEUE|unix.MSG_DONTWAIT)
		switch e {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return nil
		default:
			return &Error{Op: "recvmsg MSG_ERRQUEUE", Errno: e, Err: e}
		}
		if err := s.handleErrqueue(nativeTxABI, s.reapBuf[:hdr.Controllen], int(hdr.Flags)); err != nil {
			return err
		}
	}
}

func bindToDevice(c syscall.Conn, ifname string) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return &Error{Op: "setsockopt SO_BINDTODEVICE", Err: err}
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, ifname)
	}); err != nil {
		return &Error{Op: "setsockopt SO_BINDTODEVICE", Err: err}
	}
	if serr != nil {
		e := errnoError("setsockopt SO_BINDTODEVICE", serr).(*Error)
		e.Message = "device " + ifname
		return e
	}
	return nil
}
