package devmem

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devmem-go/devmem/selftest"
)

// TestReceiverBlockThreadWaitsInPoll: with BlockThread a Recv on a dry
// socket sleeps in ppoll(2) on the calling goroutine's own thread; without
// it the goroutine parks and its thread does something else.
func TestReceiverBlockThreadWaitsInPoll(t *testing.T) { waitModes(t, receiverBlockThreadWaitsInPoll) }

func receiverBlockThreadWaitsInPoll(t *testing.T, blockThread bool) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tid := make(chan int, 1)
	done := make(chan error, 1)
	go func() {
		// Locked so that the thread is this goroutine's for the whole
		// wait: /proc tells what it is doing.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		tid <- unix.Gettid()
		_, err := r.Recv()
		done <- err
	}()
	path := "/proc/self/task/" + strconv.Itoa(<-tid) + "/syscall"
	inPoll := false
	wait := 200 * time.Millisecond // long enough to see the poller's thread in ppoll, were it
	if blockThread {
		wait = 5 * time.Second
	}
	for deadline := time.Now().Add(wait); time.Now().Before(deadline) && !inPoll; {
		time.Sleep(5 * time.Millisecond)
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		// The first field is the number of the system call the
		// thread is blocked in, "running" when it is not in one.
		nr, _, _ := strings.Cut(strings.TrimSpace(string(b)), " ")
		inPoll = nr == strconv.Itoa(unix.SYS_PPOLL)
	}
	if inPoll != blockThread {
		t.Errorf("blockThread=%v: the receiving thread waiting in ppoll: %v", blockThread, inPoll)
	}
	c.Write([]byte("x"))
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv did not return after data came")
	}
}

// syscallOnly is a conn with nothing but SyscallConn: no read deadline.
type syscallOnly struct{ c syscall.Conn }

func (s syscallOnly) SyscallConn() (syscall.RawConn, error) { return s.c.SyscallConn() }

// With BlockThread, Close and a cancelled context interrupt a Recv through
// the receiver's own eventfd: they work on a conn without SetReadDeadline.
func TestReceiverBlockThreadNoDeadliner(t *testing.T) {
	c, s := tcpPair(t)
	r, err := NewReceiver(syscallOnly{s}, testRXBinding(1), &ReceiverConfig{BlockThread: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.RecvContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RecvContext = %v, want context.DeadlineExceeded", err)
	}
	// The wake-up is consumed: the next Recv waits for data.
	go func() {
		time.Sleep(30 * time.Millisecond)
		c.Write([]byte("x"))
	}()
	if msg, err := r.Recv(); err != nil || msg.N != 1 {
		t.Fatalf("Recv after a cancellation: %+v, %v", msg, err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := r.Recv()
		errc <- err
	}()
	time.Sleep(20 * time.Millisecond)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Recv = %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Recv still blocked after Close")
	}

	// Without BlockThread such a conn cannot be interrupted.
	r2, err := NewReceiver(syscallOnly{s}, testRXBinding(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if _, err := r2.RecvContext(ctx2); err == nil || !strings.Contains(err.Error(), "SetReadDeadline") {
		t.Fatalf("RecvContext on a conn without deadlines, no BlockThread: %v", err)
	}
}

// TestReceiverBlockThreadReleaseDelay: a small batch waiting goes back
// maxHoldDelays ReleaseDelays after the first wait when data keeps
// trickling in so that no single wait lasts a delay (as the poller's timer
// does), and not at the first delay: waits between packets must not cost
// a release each.
func TestReceiverBlockThreadReleaseDelay(t *testing.T) { waitModes(t, receiverReleaseDelayTrickle) }

func receiverReleaseDelayTrickle(t *testing.T, blockThread bool) {
	c, s := tcpPair(t)
	const delay = 40 * time.Millisecond
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{ReleaseDelay: delay, BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Done(fakeRecv(t, r, dmabufFrags(1, 1, 2, 3)...)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
				c.Write([]byte("x"))
			}
		}
	}()
	start := time.Now()
	for time.Since(start) < 20*delay {
		if _, err := r.Recv(); err != nil {
			t.Fatal(err)
		}
		if st := r.Stats(); st.Pending == 0 {
			if st.DontneedCalls != 1 {
				t.Fatalf("flushed with %d calls", st.DontneedCalls)
			}
			took := time.Since(start)
			t.Logf("flushed after %v", took)
			if took < (maxHoldDelays-2)*delay {
				t.Fatalf("3 tokens flushed after %v of a trickle, want about %d ReleaseDelays (%v)", took, maxHoldDelays, delay)
			}
			return
		}
	}
	t.Fatalf("a batch still waits %v after the first wait, ReleaseDelay %v", time.Since(start), delay)
}

// A BlockThread receiver that is dropped without Close does not keep its
// eventfd.
func TestReceiverBlockThreadCleanup(t *testing.T) {
	_, s := tcpPair(t)
	open := func() int {
		n, err := selftest.OpenFDs()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := open()
	rs := make([]*Receiver, 20)
	for i := range rs {
		var err error
		if rs[i], err = NewReceiver(s, testRXBinding(1), &ReceiverConfig{BlockThread: true}); err != nil {
			t.Fatal(err)
		}
	}
	if n := open(); n < before+len(rs) {
		t.Fatalf("%d fds open with %d BlockThread receivers, %d before: no eventfd each?", n, len(rs), before)
	}
	runtime.KeepAlive(rs)
	rs = nil
	for i := 0; i < 10 && open() > before; i++ {
		collect()
	}
	if n := open(); n > before {
		t.Fatalf("%d fds open after the receivers were collected, %d before", n, before)
	}
}

// Waiting for data does not allocate either, in both modes.
func TestReceiverWaitAllocs(t *testing.T) { waitModes(t, receiverWaitAllocs) }

func receiverWaitAllocs(t *testing.T, blockThread bool) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BufferSize: 4096, BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	kick := make(chan struct{})
	defer close(kick)
	data := []byte("x")
	go func() {
		for range kick {
			time.Sleep(time.Millisecond)
			c.Write(data)
		}
	}()
	allocs := testing.AllocsPerRun(100, func() {
		kick <- struct{}{}
		if msg, err := r.Recv(); err != nil || msg.N != 1 {
			t.Fatalf("Recv = %+v, %v", msg, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per wait and Recv", allocs)
	}
}
