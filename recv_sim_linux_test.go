package devmem

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/bits"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// simKernel stands in for the socket under a Receiver: its RawConn's Read
// writes the control messages a devmem recvmsg would (tokens allocated
// lowest-free from 1 like the kernel's xarray, at most as many messages as
// the control length offered allows), and SO_DEVMEM_DONTNEED frees them.
// It runs the Receiver's whole receive and release path except the system
// calls, so policies and bounds can be checked and benchmarked by count.
type simKernel struct {
	r *Receiver
	// fragsPerCall is how many frags each recvmsg finds queued (the NIC's
	// pace): few when the NIC is the bottleneck, a full buffer when the
	// receiver is.
	fragsPerCall int
	// blockEvery makes every call find the socket empty first (EAGAIN),
	// as when the receiver waits for the NIC; the Receiver's policy then
	// runs before the (simulated) wait.
	blockEvery bool
	// eofAfter ends the stream after that many calls (0: never).
	eofAfter int

	mu       sync.Mutex // the real kernel locks its xarray too
	used     tokenSet   // tokens handed out, not returned
	page     uint64
	calls    int
	dontneed int
	// onBlock, if set, sees the state right after the policy ran.
	onBlock func()
}

func newSimReceiver(t testing.TB, k *simKernel, b *Binding, cfg *ReceiverConfig) *Receiver {
	t.Helper()
	r, err := newReceiver(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	k.r = r
	if err := r.start(simRawConn{k}, nil); err != nil {
		t.Fatal(err)
	}
	r.rel.control = k.dontneedCall
	return r
}

type simRawConn struct{ k *simKernel }

func (c simRawConn) Control(f func(uintptr)) error { f(0); return nil }
func (c simRawConn) Read(f func(uintptr) bool) error {
	if c.k.blockEvery {
		c.k.r.beforeBlock()
		if c.k.onBlock != nil {
			c.k.onBlock()
		}
	}
	c.k.recvmsg()
	return nil
}
func (c simRawConn) Write(f func(uintptr) bool) error { return syscall.ENOSYS }

var _ syscall.RawConn = simRawConn{}

func (k *simKernel) alloc() uint32 {
	for wi, w := range k.used.words {
		if w != ^uint64(0) {
			t := uint32(wi*64 + bits.TrailingZeros64(^w))
			if t != 0 {
				k.used.add(t)
				return t
			}
			if w|1 != ^uint64(0) {
				t = uint32(wi*64 + bits.TrailingZeros64(^(w | 1)))
				k.used.add(t)
				return t
			}
		}
	}
	t := uint32(max(len(k.used.words)*64, 1))
	k.used.add(t)
	return t
}

func (k *simKernel) recvmsg() {
	k.mu.Lock()
	defer k.mu.Unlock()
	r := k.r
	k.calls++
	if k.eofAfter > 0 && k.calls > k.eofAfter {
		r.n, r.errno = 0, 0
		r.sys.msg.SetControllen(0)
		return
	}
	nf := min(k.fragsPerCall, MaxFrags(r.ctlLen), r.bufSize/4096)
	if nf == 0 {
		r.n, r.errno = -1, errnoTooSmall
		return
	}
	ne := binary.NativeEndian
	const hdr = unix.SizeofPtr + 8
	off := 0
	for range nf {
		c := r.oob[off : off+devmemCmsgSpace]
		if unix.SizeofPtr == 8 {
			ne.PutUint64(c, uint64(devmemCmsgSpace))
		} else {
			ne.PutUint32(c, uint32(devmemCmsgSpace))
		}
		ne.PutUint32(c[hdr-8:], unix.SOL_SOCKET)
		ne.PutUint32(c[hdr-4:], unix.SCM_DEVMEM_DMABUF)
		p := c[hdr:]
		ne.PutUint64(p, (k.page%4096)*4096)
		ne.PutUint32(p[8:], 4096)
		ne.PutUint32(p[12:], k.alloc())
		ne.PutUint32(p[16:], r.ids[0])
		ne.PutUint32(p[20:], 0)
		k.page += 7
		off += devmemCmsgSpace
	}
	r.sys.msg.SetControllen(off)
	r.n, r.errno = nf*4096, 0
}

func (k *simKernel) dontneedCall(fd uintptr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.dontneed++
	rel := &k.r.rel
	freed := 0
	for _, tr := range rel.batch[:rel.batchN] {
		freed += k.used.removeRange(tr.Start, tr.Count)
	}
	rel.ret, rel.errno = uintptr(freed), 0
}

// simConfigs are the regimes of the release policy: the NIC the bottleneck
// (every recvmsg finds a few frags, then the receiver waits), or the
// receiver (every recvmsg finds a full buffer).
var simRegimes = []struct {
	name         string
	fragsPerCall int
	blockEvery   bool
}{
	{"nic-bound", 8, true},
	{"rx-bound", 1000, false},
}

// TestReleasePolicy checks that Done's batching keeps SO_DEVMEM_DONTNEED
// at most one call per 64 frags in both regimes, that the tokens the
// receiver keeps back never reach half its buffers when it waits for data,
// and that every token comes back.
func TestReleasePolicy(t *testing.T) {
	for _, reg := range simRegimes {
		for _, cfg := range []struct {
			name string
			b    *Binding
			cfg  ReceiverConfig
		}{
			{"defaults", testRXBinding(1), ReceiverConfig{}},
			{"MaxOutstanding=1024", testRXBinding(1), ReceiverConfig{MaxOutstanding: 1024}},
			{"MaxOutstanding=4096", testRXBinding(1), ReceiverConfig{MaxOutstanding: 4096}},
		} {
			t.Run(reg.name+"/"+cfg.name, func(t *testing.T) {
				k := &simKernel{fragsPerCall: reg.fragsPerCall, blockEvery: reg.blockEvery, eofAfter: 3000}
				c := cfg.cfg
				c.ReleaseDelay = time.Hour // counts only: no timer flushes
				r := newSimReceiver(t, k, cfg.b, &c)
				worst := 0
				k.onBlock = func() { worst = max(worst, r.outstanding.n) }
				for {
					m, err := r.Recv()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if err := r.Done(m.Frags); err != nil {
						t.Fatal(err)
					}
				}
				if err := r.Close(); err != nil {
					t.Fatal(err)
				}
				st := r.Stats()
				ratio := float64(st.DontneedCalls) / float64(st.Frags)
				t.Logf("%d frags in %d recvmsg, %d DONTNEED (%.5f per frag, 1/%.0f), batch %d, peak outstanding %d, worst kept back while waiting %d",
					st.Frags, st.RecvCalls, st.DontneedCalls, ratio, 1/ratio, r.batch, st.PeakOutstanding, worst)
				if ratio > 1.0/64 {
					t.Errorf("%.5f DONTNEED per frag, want <= 1/64", ratio)
				}
				if 2*worst > r.budget {
					t.Errorf("%d tokens kept back while waiting for data, budget %d", worst, r.budget)
				}
				if k.used.n != 0 || st.TokensFreed != st.Frags || st.Outstanding != 0 {
					t.Errorf("%d tokens still held by the kernel, %d freed of %d", k.used.n, st.TokensFreed, st.Frags)
				}
				if c.MaxOutstanding > 0 && st.PeakOutstanding > c.MaxOutstanding {
					t.Errorf("peak outstanding %d > MaxOutstanding %d", st.PeakOutstanding, c.MaxOutstanding)
				}
			})
		}
	}
}

// TestMaxOutstandingBound holds frags back (as a slow consumer would) and
// checks that no receive ever pushes the outstanding count over
// MaxOutstanding: the control buffer offered shrinks to what is left, and
// with nothing left Recv fails at once instead of blocking.
func TestMaxOutstandingBound(t *testing.T) {
	for _, maxOut := range []int{1, 7, 64, 200} {
		k := &simKernel{fragsPerCall: 1000}
		r := newSimReceiver(t, k, testRXBinding(1), &ReceiverConfig{MaxOutstanding: maxOut})
		var held []Frag
		full := 0
		for i := 0; i < 500; i++ {
			m, err := r.Recv()
			if err != nil {
				if !errors.Is(err, ErrTooManyOutstanding) {
					t.Fatal(err)
				}
				full++
				// Give back half of what is held.
				n := (len(held) + 1) / 2
				if _, err := r.Release(held[:n]); err != nil {
					t.Fatal(err)
				}
				held = append(held[:0], held[n:]...)
				continue
			}
			held = append(held, m.Frags...)
			if out := r.Outstanding(); out > maxOut {
				t.Fatalf("MaxOutstanding %d: %d outstanding after a receive", maxOut, out)
			}
		}
		if full == 0 {
			t.Fatalf("MaxOutstanding %d: never reached", maxOut)
		}
		if st := r.Stats(); st.PeakOutstanding != maxOut {
			t.Fatalf("MaxOutstanding %d: peak %d", maxOut, st.PeakOutstanding)
		}
		r.Close()
	}
}

// TestReceiverConcurrent receives into caller-owned Messages on one
// goroutine and consumes them on three others (Done or Release, with the
// idle timer on), with a fifth reading Stats and flushing, and Close
// racing all of them at a random point. Run with -race. Whatever the
// interleaving: no frag is released twice, every error after Close is
// net.ErrClosed, and the kernel gets every token back.
func TestReceiverConcurrent(t *testing.T) {
	for iter := 0; iter < 40; iter++ {
		k := &simKernel{fragsPerCall: 1 + iter%17, blockEvery: iter%2 == 0}
		r := newSimReceiver(t, k, testRXBinding(1), &ReceiverConfig{MaxOutstanding: 300, ReleaseDelay: 50 * time.Microsecond})
		free := make(chan *Message, 8)
		for range cap(free) {
			free <- new(Message)
		}
		work := make(chan *Message)
		var wg sync.WaitGroup
		fail := make(chan error, 16)
		report := func(what string, err error) {
			if err != nil && !errors.Is(err, net.ErrClosed) {
				select {
				case fail <- errors.Join(errors.New(what), err):
				default:
				}
			}
		}
		for c := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for m := range work {
					if c == 0 {
						_, err := r.Release(m.Frags)
						report("Release", err)
					} else {
						report("Done", r.Done(m.Frags))
					}
					free <- m
				}
			}()
		}
		stop := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				st := r.Stats()
				if st.Outstanding > 300 {
					report("Stats", errors.New("outstanding over MaxOutstanding"))
				}
				report("Flush", r.Flush())
			}
		}()
		closeAfter := time.Duration(iter%7) * 200 * time.Microsecond
		closed := make(chan error, 1)
		go func() {
			time.Sleep(closeAfter)
			closed <- r.Close()
		}()
		for {
			m := <-free
			err := r.RecvInto(context.Background(), m)
			if len(m.Frags) > 0 {
				work <- m
			} else {
				free <- m
			}
			if errors.Is(err, net.ErrClosed) {
				break
			}
			if err != nil && !errors.Is(err, ErrTooManyOutstanding) {
				t.Fatal(err)
			}
		}
		close(work)
		close(stop)
		wg.Wait()
		if err := <-closed; err != nil {
			t.Fatalf("Close: %v", err)
		}
		select {
		case err := <-fail:
			t.Fatal(err)
		default:
		}
		k.mu.Lock()
		left := k.used.n
		k.mu.Unlock()
		if left != 0 || r.Outstanding() != 0 {
			t.Fatalf("iteration %d: the kernel still has %d tokens out, the receiver %d", iter, left, r.Outstanding())
		}
	}
}
