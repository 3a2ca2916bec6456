package devmem

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// On loopback nothing is in device memory: the kernel ignores
// MSG_SOCK_DEVMEM for readable skbs and copies them.
func TestReceiverReadable(t *testing.T) { waitModes(t, testReceiverReadable) }

func testReceiverReadable(t *testing.T, blockThread bool) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BufferSize: 4096, BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := []byte("not in device memory")
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	msg, err := r.Recv()
	if err != nil {
		t.Fatal(err)
	}
	want := Message{Frags: []Frag{{Kind: FragLinear, Size: uint32(len(data))}}, Linear: data, N: len(data), Readable: true}
	if diff := cmp.Diff(want, msg, cmpopts.IgnoreUnexported(Frag{})); diff != "" {
		t.Fatalf("message (-want +got):\n%s", diff)
	}
	c.Close()
	if _, err := r.Recv(); err != io.EOF {
		t.Fatalf("after the peer closed: %v, want io.EOF", err)
	}
	if r.Outstanding() != 0 {
		t.Fatalf("%d tokens outstanding", r.Outstanding())
	}
}

// A strict receiver's recvmsg faults on readable data without consuming
// it: a plain Read still gets every byte.
func TestReceiverStrict(t *testing.T) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BufferSize: 4096, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := []byte("steered to the wrong queue")
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	msg, err := r.Recv()
	if !errors.Is(err, ErrNotDevmem) || !errors.Is(err, syscall.EFAULT) || msg.N != 0 {
		t.Fatalf("Recv = %+v, %v; want ErrNotDevmem (EFAULT)", msg, err)
	}
	t.Log(err)
	got := make([]byte, len(data))
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("plain read after strict Recv: %q, %v", got, err)
	}
}

func TestReceiverDeadline(t *testing.T) { waitModes(t, testReceiverDeadline) }

func testReceiverDeadline(t *testing.T, blockThread bool) {
	_, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = r.Recv()
	var e *Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &e) || e.Op != "recvmsg" {
		t.Fatalf("Recv = %v, want os.ErrDeadlineExceeded from recvmsg", err)
	}
}

func TestReceiverContext(t *testing.T) { waitModes(t, testReceiverContext) }

func testReceiverContext(t *testing.T, blockThread bool) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.RecvContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RecvContext = %v, want context.DeadlineExceeded", err)
	}
	// The deadline used to interrupt is cleared: the next receive
	// blocks until data comes.
	go func() {
		time.Sleep(30 * time.Millisecond)
		c.Write([]byte("x"))
	}()
	msg, err := r.RecvContext(context.Background())
	if err != nil || msg.N != 1 {
		t.Fatalf("RecvContext after a cancellation: %+v, %v", msg, err)
	}
	// Data that is already there wins over a live context.
	c.Write([]byte("y"))
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if msg, err := r.RecvContext(ctx2); err != nil || msg.N != 1 {
		t.Fatalf("RecvContext with data: %+v, %v", msg, err)
	}
	cancel2()
	if _, err := r.RecvContext(ctx2); !errors.Is(err, context.Canceled) {
		t.Fatalf("RecvContext with a cancelled ctx: %v", err)
	}
}

// Close and conn.Close both wake a blocked Recv (run with -race).
func TestReceiverCloseRace(t *testing.T) { waitModes(t, testReceiverCloseRace) }

func testReceiverCloseRace(t *testing.T, blockThread bool) {
	for _, closeConn := range []bool{false, true} {
		_, s := tcpPair(t)
		r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BlockThread: blockThread})
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := r.Recv()
			errc <- err
		}()
		// Releases race Close too, on a receiver that holds tokens.
		held := fakeRecv(t, r, dmabufFrags(1, 1, 2, 3, 4)...)
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var err error
				if i%2 == 0 {
					_, err = r.Release(held[i : i+1])
				} else {
					err = r.Done(held[i : i+1])
				}
				var re *ReleaseError
				if err != nil && !errors.Is(err, net.ErrClosed) && !(errors.As(err, &re) && re.NotOwned == 0) {
					t.Errorf("release racing Close: %v", err)
				}
				r.Stats()
			}()
		}
		time.Sleep(20 * time.Millisecond)
		if closeConn {
			s.Close()
		}
		// Loopback knows none of the made-up tokens: what Close returns
		// is not freed, and says so; with the conn closed, the kernel
		// dropped them already.
		var re *ReleaseError
		if err := r.Close(); err != nil && (closeConn || !errors.As(err, &re) || re.NotOwned != 0) {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("closeConn=%v: Recv = %v, want net.ErrClosed", closeConn, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("closeConn=%v: Recv still blocked after Close", closeConn)
		}
		if _, err := r.Recv(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Recv after Close: %v", err)
		}
		wg.Wait()
		if n := r.Outstanding(); n != 0 {
			t.Fatalf("%d tokens outstanding after Close", n)
		}
	}
}

// waitModes runs a test for both ways a Receiver waits for data: parked in
// the runtime's poller, and BlockThread's poll(2) on its own thread.
func waitModes(t *testing.T, f func(t *testing.T, blockThread bool)) {
	for _, bt := range []bool{false, true} {
		name := "poller"
		if bt {
			name = "thread"
		}
		t.Run(name, func(t *testing.T) { f(t, bt) })
	}
}

// fakeRecv runs the receiver's bookkeeping for a receive that returned
// frags (as the kernel would have): the frags come back stamped with the
// receive's identity, as from Recv.
func fakeRecv(t testing.TB, r *Receiver, frags ...Frag) []Frag {
	t.Helper()
	n := 0
	for _, f := range frags {
		n += int(f.Size)
	}
	buf := make([]byte, max(n, 1))
	msg, err := r.finish(slices.Clone(frags), buf, n, len(frags), nil)
	if err != nil {
		t.Fatalf("fake receive: %v", err)
	}
	return msg.Frags
}

func dmabufFrags(id uint32, tokens ...uint32) []Frag {
	var fs []Frag
	for _, tok := range tokens {
		fs = append(fs, Frag{Kind: FragDMABuf, Offset: uint64(tok) * 4096, Size: 100, Token: tok, DMABufID: id})
	}
	return fs
}

func TestReceiverRelease(t *testing.T) {
	_, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Pretend the kernel handed out tokens 1..3: on loopback the kernel
	// knows none of them, so it frees nothing and says so.
	got := fakeRecv(t, r, append([]Frag{{Kind: FragLinear, Size: 5}}, dmabufFrags(1, 1, 2, 3)...)...)
	freed, err := r.Release(got[:3])
	var re *ReleaseError
	if !errors.As(err, &re) || freed != 0 || re.Requested != 2 || re.NotOwned != 0 || errors.Is(err, ErrNotOwned) {
		t.Fatalf("Release = %d, %v", freed, err)
	}
	// Accepted batches are forgotten, whatever the count.
	if r.Outstanding() != 1 {
		t.Fatalf("%d outstanding, want 1", r.Outstanding())
	}
	st := r.Stats()
	if st.DontneedCalls != 1 || st.TokensFreed != 0 || st.Frags != 3 || st.RecvCalls != 1 || st.PeakOutstanding != 3 {
		t.Fatalf("stats %+v", st)
	}
	if err := r.Done(got[3:]); err != nil {
		t.Fatal(err)
	}
	if err := r.Flush(); !errors.As(err, &re) || re.Requested != 1 {
		t.Fatalf("Flush: %v", err)
	}
	if r.Outstanding() != 0 {
		t.Fatalf("%d outstanding, want 0", r.Outstanding())
	}
	fakeRecv(t, r, dmabufFrags(1, 4)...)
	if err := r.Close(); !errors.As(err, &re) || re.Requested != 1 {
		t.Fatalf("Close: %v", err)
	}
	if _, err := r.Release(got); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Release after Close: %v", err)
	}
	if err := r.Done(got); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Done after Close: %v", err)
	}
}

// TestReceiverFragOwnership: a frag released twice, released on another
// Receiver, or never received is refused before any system call, also when
// the kernel has reissued its token to a frag that is live.
func TestReceiverFragOwnership(t *testing.T) {
	_, s1 := tcpPair(t)
	_, s2 := tcpPair(t)
	r1, err := NewReceiver(s1, testRXBinding(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := NewReceiver(s2, testRXBinding(1), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	calls := func(r *Receiver) uint64 { return r.Stats().DontneedCalls }

	// Both receivers hold tokens 1 and 2 (tokens are per socket).
	m1 := fakeRecv(t, r1, dmabufFrags(1, 1, 2)...)
	m2 := fakeRecv(t, r2, dmabufFrags(1, 1, 2)...)
	wantRefused := func(t *testing.T, what string, err error, n int) {
		t.Helper()
		var re *ReleaseError
		if !errors.Is(err, ErrNotOwned) || !errors.As(err, &re) || re.NotOwned != n {
			t.Fatalf("%s: %v, want %d refused (ErrNotOwned)", what, err, n)
		}
	}
	before := calls(r1)
	freed, err := r1.Release(m2)
	wantRefused(t, "r1.Release(frags of r2)", err, 2)
	if freed != 0 || calls(r1) != before || r1.Outstanding() != 2 {
		t.Fatalf("wrong receiver: freed %d, %d calls, %d outstanding", freed, calls(r1)-before, r1.Outstanding())
	}
	wantRefused(t, "r1.Done(frags of r2)", r1.Done(m2), 2)
	wantRefused(t, "made-up frag", r1.Done(dmabufFrags(1, 1)), 1)

	// Release m1 (loopback: the kernel frees nothing, the receiver
	// forgets them), then the kernel reissues 1 and 2 for a new message
	// at the very same places.
	r1.Release(m1)
	m3 := fakeRecv(t, r1, dmabufFrags(1, 1, 2)...)
	before = calls(r1)
	freed, err = r1.Release(m1)
	wantRefused(t, "stale message", err, 2)
	if freed != 0 || calls(r1) != before || r1.Outstanding() != 2 {
		t.Fatalf("stale message: freed %d, %d calls, %d outstanding", freed, calls(r1)-before, r1.Outstanding())
	}
	// A mix: the live frag goes, the stale one does not.
	_, err = r1.Release([]Frag{m1[0], m3[1]})
	wantRefused(t, "stale+live", err, 1)
	if r1.Outstanding() != 1 || calls(r1) != before+1 {
		t.Fatalf("stale+live: %d outstanding, %d calls", r1.Outstanding(), calls(r1)-before)
	}
	// Twice in one call, and Done then Release.
	_, err = r1.Release([]Frag{m3[0], m3[0]})
	wantRefused(t, "same frag twice", err, 1)
	m4 := fakeRecv(t, r1, dmabufFrags(1, 5)...)
	if err := r1.Done(m4); err != nil {
		t.Fatal(err)
	}
	_, err = r1.Release(m4)
	wantRefused(t, "Release after Done", err, 1)
	wantRefused(t, "Done twice", r1.Done(m4), 1)
}

func TestReceiverMaxOutstanding(t *testing.T) {
	_, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{MaxOutstanding: 1})
	if err != nil {
		t.Fatal(err)
	}
	fakeRecv(t, r, dmabufFrags(1, 1)...)
	if _, err := r.Recv(); !errors.Is(err, ErrTooManyOutstanding) {
		t.Fatalf("Recv = %v, want ErrTooManyOutstanding", err)
	}
}

func TestReceiverRecvAllocs(t *testing.T) { waitModes(t, testReceiverRecvAllocs) }

func testReceiverRecvAllocs(t *testing.T, blockThread bool) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BufferSize: 4096, BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := make([]byte, 1000)
	allocs := testing.AllocsPerRun(200, func() {
		c.Write(data)
		for n := 0; n < len(data); {
			msg, err := r.Recv()
			if err != nil {
				t.Fatal(err)
			}
			n += msg.N
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per Write+Recv", allocs)
	}
	var m Message
	ctx := context.Background()
	allocs = testing.AllocsPerRun(200, func() {
		c.Write(data)
		for n := 0; n < len(data); {
			if err := r.RecvInto(ctx, &m); err != nil {
				t.Fatal(err)
			}
			if err := r.Done(m.Frags); err != nil {
				t.Fatal(err)
			}
			n += m.N
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per Write+RecvInto+Done", allocs)
	}
}

// TestReceiverFlushBeforeBlock: tokens waiting from Done go back when a Recv
// is about to block — at once when half the receiver's budget is out,
// else after ReleaseDelay — on a real socket, from inside the poller's
// read callback.
func TestReceiverFlushBeforeBlock(t *testing.T) { waitModes(t, testReceiverFlushBeforeBlock) }

func testReceiverFlushBeforeBlock(t *testing.T, blockThread bool) {
	_, s := tcpPair(t)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{MaxOutstanding: 256, ReleaseBatch: 200, ReleaseDelay: time.Hour, BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tokens := make([]uint32, 150)
	for i := range tokens {
		tokens[i] = uint32(i + 1)
	}
	if err := r.Done(fakeRecv(t, r, dmabufFrags(1, tokens...)...)); err != nil {
		t.Fatal(err)
	}
	if st := r.Stats(); st.Pending != 150 || st.DontneedCalls != 0 {
		t.Fatalf("before blocking: %+v", st)
	}
	s.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	if _, err := r.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Recv on an idle socket: %v", err)
	}
	if st := r.Stats(); st.Pending != 0 || st.DontneedCalls != 1 || st.Outstanding != 0 {
		t.Fatalf("150 of 256 out when blocking: not flushed: %+v", st)
	}

	// Few out: the batch waits for ReleaseDelay.
	r2, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{ReleaseDelay: 5 * time.Millisecond, BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	if err := r2.Done(fakeRecv(t, r2, dmabufFrags(1, 1, 2, 3)...)); err != nil {
		t.Fatal(err)
	}
	s.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := r2.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Recv on an idle socket: %v", err)
	}
	if st := r2.Stats(); st.Pending != 0 || st.DontneedCalls != 1 {
		t.Fatalf("idle for a second with a batch waiting: %+v", st)
	}
}

// TestReceiverTokenMapsPresized: a flow whose peak outstanding creeps up
// (the kernel hands out the lowest free token, so new highs come one at a
// time) must not allocate for it while it stays within the binding's
// budget.
func TestReceiverTokenMapsPresized(t *testing.T) {
	_, s := tcpPair(t)
	b := testRXBinding(1)
	b.size = 16 << 20 // a budget of 4096 tokens
	r, err := NewReceiver(s, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	const perRecv = 8
	frags := make([]Frag, perRecv)
	buf := make([]byte, perRecv*100)
	next := uint32(1)
	// AllocsPerRun averages (rounding down) and warms up with one run:
	// each run is 200 receives, tokens 1-1600 in the warm-up, then
	// 1601-3200 counted in full.
	allocs := testing.AllocsPerRun(1, func() {
		for range 200 {
			for i := range frags {
				frags[i] = Frag{Kind: FragDMABuf, Offset: uint64(next) * 4096, Size: 100, Token: next, DMABufID: 1}
				next++
			}
			if _, err := r.finish(frags, buf, len(buf), perRecv, nil); err != nil {
				t.Fatal(err)
			}
		}
	})
	if next < 3000 {
		t.Fatalf("only %d tokens out", next)
	}
	if allocs != 0 {
		t.Fatalf("%v allocs in 200 receives while the peak outstanding rose to %d", allocs, next-1)
	}
}
