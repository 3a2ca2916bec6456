//go:build linux

package devmem

import (
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// recvSys is the msghdr and iovec of the receiver's recvmsg, built by hand:
// unix.Recvmsg would swap an empty iovec for a 1-byte one (capping each call
// at one byte) and cannot express a NULL iov_base.
type recvSys struct {
	msg unix.Msghdr
	iov unix.Iovec

	// BlockThread's state: the wake-up fd and poll(2)'s arguments.
	waker   *waker
	pfds    [2]unix.PollFd
	timeout unix.Timespec
	// woken: the wait ended for Close or a cancelled context, not for
	// data; sliceOver: for the end of a pollSlice.
	woken, sliceOver bool
	// drained: the last receive was short, so the socket is most likely
	// empty and the next one starts with the poll, not with a recvmsg
	// bound to fail with EAGAIN (which locks the socket and runs its
	// backlog; poll does neither). Wrong, it costs one poll that returns
	// at once.
	drained bool
	// yieldedAt: when this receiver last yielded its P (see yield), on
	// the monotonic clock since monoEpoch.
	yieldedAt time.Duration
}

// yieldEvery is how often a receive loop that does not park gives up its
// P. The runtime takes a goroutine that has run on one scheduling slice
// for 10 ms (sysmon's forcePreemptNS, Go 1.14 to 1.26 at least) for a CPU
// hog: it preempts it, or takes its P away in the middle of a system call
// and hands it to another thread, and after each P it takes sysmon polls
// every 20 µs for a millisecond and more. A BlockThread receiver never
// parks (it waits in ppoll), nor does any receiver whose socket always has
// data; yielding at half that slice keeps all of that from starting.
const yieldEvery = 5 * time.Millisecond

// monoEpoch gives the receivers a cheap monotonic clock: time.Since on a
// time with a monotonic reading is one clock read, time.Now two.
var monoEpoch = time.Now()

// yield gives up the P once yieldEvery has passed since the last time:
// goyield puts the goroutine at the back of its P's run queue and runs the
// scheduler, which starts a new slice for it: with nothing else to run it
// comes back on the same thread at once, otherwise the others get their
// turn, as they would after a preemption.
// It returns the time it read, on the same clock as yieldedAt.
func (s *recvSys) yield() time.Duration {
	now := time.Since(monoEpoch)
	if now-s.yieldedAt >= yieldEvery {
		s.yieldedAt = now
		goyield()
	}
	return now
}

// goyield is the runtime's runtime.Gosched without the wake-up. Gosched
// puts the goroutine on the global run queue and wakes an idle P's thread
// to look for work (goschedImpl: globrunqput, wakep; Go 1.26): a futex
// wake-up per yield, a thread that spins and goes back to sleep, and now
// and then the goroutine taken to that thread. A receive loop runs alone,
// so there is always an idle P to wake. BenchmarkYield on this project's
// 2-CPU host: Gosched 22-26 µs and one voluntary context switch per call,
// goyield 1.5 µs and none; in the TCG VM 63-71 µs against 7-9 µs
// (docs/PERFORMANCE.md). goyield queues the goroutine on its
// own P (runqput, not runnext, so the scheduler still counts a new slice)
// and wakes nobody. The runtime keeps it for the packages that link to it
// (go.dev/issue/67401: "Do not remove or change the type signature").
//
//go:linkname goyield runtime.goyield
func goyield()

// pollSlice bounds how long a BlockThread receiver waits before it goes
// back through the runtime's poller bookkeeping (RawConn.Read), which is
// where a closed conn and a read deadline are seen: so a conn closed under
// a blocked Recv (its Close waits for the read in flight) and a deadline
// are noticed within this long.
const pollSlice = 10 * time.Millisecond

// pollAfterYield bounds each poll(2) to end this long after the last
// yield, so that a wait, however long, never leaves the goroutine
// unscheduled for the runtime's 10 ms: a poll that starts just before the
// next yield is due would otherwise run to 5 + 10 ms, and sysmon would
// take the P from the system call and poll every 20 µs for a millisecond
// and more (TestReceiverYieldsToScheduler's 9 ms trickle).
const pollAfterYield = 8 * time.Millisecond

func (r *Receiver) initSys() error {
	r.readFn = r.recvmsg
	if !r.blockThread {
		return nil
	}
	w, err := newWaker()
	if err != nil {
		return err
	}
	r.sys.waker = w
	r.readFn = r.recvmsgBlocking
	// A Receiver dropped without Close must not leak the eventfd; w does
	// not point back to r, and closing twice is harmless.
	runtime.AddCleanup(r, (*waker).close, w)
	return nil
}

// wake interrupts a BlockThread wait; false without BlockThread.
func (s *recvSys) wake() bool {
	if s.waker == nil {
		return false
	}
	s.waker.wake()
	return true
}

// unwake forgets a wake-up that found no wait; false without BlockThread.
func (s *recvSys) unwake() bool {
	if s.waker == nil {
		return false
	}
	s.waker.reset()
	return true
}

// closeWaker releases the eventfd (Close, with no receive in flight).
func (s *recvSys) closeWaker() {
	if s.waker != nil {
		s.waker.close()
	}
}

// recvmsg is the RawConn.Read callback: one recvmsg(MSG_SOCK_DEVMEM),
// returning false on EAGAIN so the poller parks the goroutine — after
// giving the release policy its chance to return tokens first.
func (r *Receiver) recvmsg(fd uintptr) bool {
	for {
		if r.tryRecvmsg(fd) {
			return true
		}
		if r.errno != unix.EINTR {
			r.beforeBlock()
			return false
		}
	}
}

// tryRecvmsg makes one recvmsg(MSG_SOCK_DEVMEM); false with r.errno EAGAIN
// or EINTR when it should be made again.
func (r *Receiver) tryRecvmsg(fd uintptr) bool {
	m := &r.sys.msg
	m.Iov = &r.sys.iov
	m.SetIovlen(1)
	m.Control = &r.oob[0]
	m.SetControllen(r.ctlLen)
	m.Flags = 0
	n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(m)), unix.MSG_SOCK_DEVMEM)
	r.n, r.errno = int(n), errno
	return errno != unix.EAGAIN && errno != unix.EINTR
}

// recvmsgBlocking is BlockThread's RawConn.Read callback: recvmsg, and
// while the socket is dry, wait in poll(2) on this thread for it or the
// waker, as a C receiver blocks in recvmsg: no park, no poller thread, no
// hand-off. The release policy runs before each wait; the ReleaseDelay
// flush is made here, when the poll times out. It always returns true, with
// r.sys.woken or r.sys.sliceOver when the wait ended without data.
func (r *Receiver) recvmsgBlocking(fd uintptr) bool {
	s := &r.sys
	s.woken, s.sliceOver = false, false
	var sliceEnd time.Duration // from the first wait
	for {
		if !s.drained {
			if r.tryRecvmsg(fd) {
				return true
			}
			if r.errno == unix.EINTR {
				continue
			}
		}
		s.drained = false
		wait := pollSlice
		if d, armed := r.beforeBlock(); armed {
			if d <= 0 {
				r.idleFlush()
				continue
			}
			wait = min(wait, d)
		}
		now := s.yield()
		if sliceEnd == 0 {
			sliceEnd = now + pollSlice
		}
		wait = max(0, min(wait, sliceEnd-now, s.yieldedAt+pollAfterYield-now))
		s.pfds[0] = unix.PollFd{Fd: int32(fd), Events: unix.POLLIN}
		s.pfds[1] = unix.PollFd{Fd: int32(s.waker.fd), Events: unix.POLLIN}
		s.timeout = unix.NsecToTimespec(int64(wait))
		_, _, errno := unix.Syscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&s.pfds[0])), 2,
			uintptr(unsafe.Pointer(&s.timeout)), 0, 0, 0)
		switch {
		case errno == unix.EINTR:
		case errno != 0:
			r.n, r.errno = -1, errno
			return true
		case s.pfds[1].Revents != 0:
			if s.waker.consume() {
				s.woken = true
				return true
			}
		case s.pfds[0].Revents == 0 && now+wait >= sliceEnd:
			s.sliceOver = true
			return true
		case s.pfds[0].Revents == 0:
			// A shorter poll ran out (the next yield, the delayed
			// flush): still dry, so poll again without a recvmsg.
			s.drained = true
		}
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
	r.sys.yield()
	err := r.rc.Read(r.readFn)
	for err == nil && r.sys.sliceOver && !r.closed.Load() {
		err = r.rc.Read(r.readFn)
	}
	r.sys.iov.Base = nil // keep no pointer to a caller's buffer
	if err == nil && (r.sys.woken || r.sys.sliceOver) {
		// Close or a cancelled context woke the wait (withContext and
		// recvLocked say which), as a deadline in the past would.
		err = os.ErrDeadlineExceeded
	}
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
	// Neither the iovec nor the control buffer was filled: the kernel
	// stopped for lack of data.
	r.sys.drained = r.sys.waker != nil && r.n < r.bufSize && nf < MaxFrags(r.ctlLen)-1
	return r.finish(frags, buf, r.n, nf, err)
}

// A waker interrupts a BlockThread receiver's poll: an eventfd that Close
// and context cancellation write to. Its own mutex orders writes against
// closing, so a late cancellation never writes to a reused fd number.
type waker struct {
	mu      sync.Mutex
	fd      int // -1 once closed
	pending atomic.Bool
	buf     [8]byte
}

func newWaker() (*waker, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, &Error{Op: opNewReceiver, Err: os.NewSyscallError("eventfd", err)}
	}
	return &waker{fd: fd}, nil
}

// wake interrupts the receiver's current or next wait.
func (w *waker) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd < 0 {
		return
	}
	w.pending.Store(true)
	one := [8]byte{1}
	unix.Write(w.fd, one[:])
}

// consume reads the eventfd (only the receiving goroutine does) and
// reports whether a wake-up was pending.
func (w *waker) consume() bool {
	unix.Syscall(unix.SYS_READ, uintptr(w.fd), uintptr(unsafe.Pointer(&w.buf[0])), 8)
	return w.pending.Swap(false)
}

// reset forgets a wake-up that came too late to interrupt anything.
func (w *waker) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd >= 0 && w.pending.Swap(false) {
		var b [8]byte
		unix.Read(w.fd, b[:])
	}
}

func (w *waker) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
}
