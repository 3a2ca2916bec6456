//go:build linux

package devmem

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"syscall"
	"time"
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

// sendSys is the state of the sendmsg call in progress, shared with the
// pre-bound write function so that RawConn.Write does not allocate a closure.
type sendSys struct {
	hdr        unix.Msghdr
	mayWait    bool // on EAGAIN, wait for the poller (else report wouldBlock)
	wouldBlock bool
	written    int64
	errno      unix.Errno
	writeFn    func(fd uintptr) bool
}

// reapSys is the completion reaper's own wait: an epoll instance watching the
// socket for error-queue wake-ups (EPOLLERR, edge-triggered), registered with
// the Go poller through an os.File. Sleeping on it takes neither the
// connection's read nor its write lock, and its deadline is the reaper's
// alone. The instance holds no reference on the socket, so closing the
// connection still closes it.
type reapSys struct {
	ep     *os.File
	eprc   syscall.RawConn
	events [8]unix.EpollEvent
	cond   func() bool // the reaping waiter's condition
	err    error       // what the last drain failed with
	waitFn func(fd uintptr) bool
	drain  func(fd uintptr)
}

// reaperCheckInterval is how often a reaper with nothing to reap checks that
// the connection is still open: its closing removes the socket from the
// epoll instance without waking it.
const reaperCheckInterval = 500 * time.Millisecond

// init checks that the connection is an open TCP socket, turns SO_ZEROCOPY
// on (without it the kernel refuses a devmem sendmsg with EINVAL) and sets up
// the reaper's epoll instance.
func (s *Sender) init() error {
	const op = "new sender"
	var serr error
	epfd := -1
	err := s.rc.Control(func(fd uintptr) {
		serr = checkTCP(int(fd))
		if serr != nil {
			return
		}
		if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ZEROCOPY, 1); err != nil {
			serr = errnoError("setsockopt SO_ZEROCOPY", err)
			return
		}
		epfd, serr = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if serr != nil {
			serr = errnoError("epoll_create1", serr)
			return
		}
		// No event bits: EPOLLERR (and EPOLLHUP) are always reported,
		// and nothing else should wake the reaper.
		ev := unix.EpollEvent{Events: unix.EPOLLET}
		if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
			serr = errnoError("epoll_ctl", err)
		}
	})
	if err != nil {
		serr = connError(op, err)
	}
	if serr == nil {
		if err := unix.SetNonblock(epfd, true); err != nil {
			serr = errnoError("fcntl O_NONBLOCK", err)
		}
	}
	if serr != nil {
		if epfd >= 0 {
			unix.Close(epfd)
		}
		return serr
	}
	s.reap.ep = os.NewFile(uintptr(epfd), "devmem-sender-errqueue")
	if err := s.reap.ep.SetReadDeadline(time.Time{}); err != nil {
		s.reap.ep.Close()
		return &Error{Op: op, Err: err, Message: "the Go poller does not take an epoll instance"}
	}
	if s.reap.eprc, err = s.reap.ep.SyscallConn(); err != nil {
		s.reap.ep.Close()
		return &Error{Op: op, Err: err}
	}
	s.sys.writeFn = s.write
	s.reap.waitFn = s.reapReady
	s.reap.drain = s.drain
	return nil
}

// checkTCP refuses what is not a TCP socket, with a message saying what it
// is.
func checkTCP(fd int) error {
	const op = "new sender"
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		e := errnoError(op, err).(*Error)
		if e.Errno == unix.ENOTSOCK {
			e.Message = "the connection is not a socket"
		}
		return e
	}
	domain, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	proto, _ := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PROTOCOL)
	if typ != unix.SOCK_STREAM || (domain != unix.AF_INET && domain != unix.AF_INET6) || proto != unix.IPPROTO_TCP {
		return &Error{Op: op, Errno: unix.EOPNOTSUPP, Err: unix.EOPNOTSUPP,
			Message: "devmem TX needs a TCP socket (this one has domain " + itoa(uint64(domain)) +
				", type " + itoa(uint64(typ)) + ", protocol " + itoa(uint64(proto)) + ")"}
	}
	return nil
}

// write is the RawConn.Write function of a sendmsg call (s.sys.writeFn).
func (s *Sender) write(fd uintptr) bool {
	for {
		r, _, e := unix.Syscall(unix.SYS_SENDMSG, fd, uintptr(unsafe.Pointer(&s.sys.hdr)), unix.MSG_ZEROCOPY|unix.MSG_NOSIGNAL)
		switch e {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			if s.sys.mayWait {
				return false
			}
			s.sys.wouldBlock = true
			return true
		}
		s.sys.written, s.sys.errno = int64(r), e
		return true
	}
}

// sendRange issues sendmsg(MSG_ZEROCOPY) calls until [off, off+n) is queued
// or one fails, recording each call's zerocopy id under seq. It returns the
// bytes queued. The caller holds s.sendTok.
func (s *Sender) sendRange(ctx context.Context, seq uint32, off, n int64) (int64, error) {
	var queued int64
	for queued < n {
		s.iovs, _ = appendIovecs(s.iovs[:0], s.iovBase, off+queued, n-queued, s.chunk, s.maxIOVs, maxSendmsgBytes)
		hdr := &s.sys.hdr
		*hdr = unix.Msghdr{}
		hdr.Iov = (*unix.Iovec)(unsafe.Pointer(&s.iovs[0]))
		hdr.SetIovlen(len(s.iovs))
		if len(s.control) > 0 {
			hdr.Control = &s.control[0]
			hdr.SetControllen(len(s.control))
		}
		s.sys.written, s.sys.errno, s.sys.wouldBlock, s.sys.mayWait = 0, 0, false, false
		if err := s.beginCall(seq, off+queued); err != nil {
			return queued, err
		}
		// First without waiting: a Send that finds room allocates
		// nothing, context or not.
		err := s.rc.Write(s.sys.writeFn)
		if err == nil && s.sys.wouldBlock {
			err = s.waitWritable(ctx)
		}
		s.endCall(s.sys.written)
		runtime.KeepAlive(s.iovs)
		runtime.KeepAlive(s.control)
		switch {
		case err != nil:
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return queued, errClosed("sendmsg")
			}
			return queued, connError("sendmsg", err)
		case s.sys.errno != 0:
			errno := s.sys.errno
			return queued, &Error{Op: "sendmsg", Errno: errno, Err: errno, Message: sendErrnoHint(syscall.Errno(errno), s.dmabufID)}
		case s.sys.written <= 0:
			return queued, &Error{Op: "sendmsg", Err: io.ErrShortWrite}
		}
		queued += s.sys.written
	}
	return queued, nil
}

// waitWritable retries the sendmsg call, waiting in the poller for room in
// the send buffer, and gives up when ctx ends by waking itself through the
// write deadline.
func (s *Sender) waitWritable(ctx context.Context) error {
	var stop func() bool
	if ctx.Done() != nil && s.dl != nil {
		stop = context.AfterFunc(ctx, s.wakeSend)
	}
	s.sys.mayWait = true
	err := s.rc.Write(s.sys.writeFn)
	s.sys.mayWait = false
	if stop != nil && !stop() {
		s.restoreDeadline()
		err = ctxWaitError(ctx, err)
	}
	return err
}

// reapWait is the reaping waiter's loop: it sleeps on the epoll instance
// until cond holds, the Sender closes, the connection closes or ctx ends. The
// caller holds s.reapTok.
func (s *Sender) reapWait(ctx context.Context, cond func() bool) error {
	const op = "wait completion"
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, s.wakeReaper)
		defer stop()
	}
	s.reap.cond = cond
	defer func() { s.reap.cond = nil }()
	for {
		if err := ctx.Err(); err != nil {
			return &Error{Op: op, Err: err}
		}
		_ = s.reap.ep.SetReadDeadline(time.Now().Add(reaperCheckInterval))
		s.reap.err = nil
		err := s.reap.eprc.Read(s.reap.waitFn)
		if s.reap.err != nil {
			return s.reap.err
		}
		if err == nil {
			return nil // cond holds or the Sender closed: the caller looks
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return nil // the epoll instance was closed: the Sender closed
		}
		// Woken by ctx (checked above), by the timer, or by a wake-up
		// meant for an earlier reaper: is the connection still open?
		if err := s.rc.Control(noopControl); err != nil {
			return connError(op, err)
		}
	}
}

func noopControl(uintptr) {}

// reapReady is the epoll instance's RawConn.Read function (s.reap.waitFn): it
// consumes the instance's readiness, drains the error queue and says whether
// the reaper may stop.
func (s *Sender) reapReady(epfd uintptr) bool {
	for {
		_, err := unix.EpollWait(int(epfd), s.reap.events[:], 0)
		if err != unix.EINTR {
			break
		}
	}
	if err := s.rc.Control(s.reap.drain); err != nil {
		s.reap.err = connError("recvmsg MSG_ERRQUEUE", err)
		return true
	}
	if s.reap.err != nil {
		return true
	}
	s.mu.Lock()
	stop := s.closed || s.reap.cond()
	s.mu.Unlock()
	return stop
}

// drain is the RawConn.Control function draining the error queue
// (s.reap.drain).
func (s *Sender) drain(fd uintptr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.drainLocked(int(fd)); err != nil {
		s.reap.err = err
		s.notifyLocked()
	}
}

// wakeReaper wakes the reaping waiter when its context ends. A wake-up that
// arrives after another waiter took over only makes that one look again.
func (s *Sender) wakeReaper() { _ = s.reap.ep.SetReadDeadline(txWakeDeadline) }

// stopReaper closes the epoll instance, which ends a reaper's wait.
func (s *Sender) stopReaper() {
	if s.reap.ep != nil {
		_ = s.reap.ep.Close()
	}
}

// reapNow drains the error queue without waiting.
func (s *Sender) reapNow() error {
	var rerr error
	err := s.rc.Control(func(fd uintptr) {
		s.mu.Lock()
		defer s.mu.Unlock()
		rerr = s.drainLocked(int(fd))
	})
	if err != nil {
		return connError("recvmsg MSG_ERRQUEUE", err)
	}
	return rerr
}

// drainLocked reads every error-queue message (recvmsg with MSG_ERRQUEUE
// never blocks) and applies it. The caller holds s.mu.
func (s *Sender) drainLocked(fd int) error {
	if s.reapBuf == nil {
		// One sock_extended_err plus the offender address, with room
		// for a timestamp or packet-info cmsg alongside.
		s.reapBuf = make([]byte, 256)
	}
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
