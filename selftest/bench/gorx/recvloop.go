//go:build linux

package main

// The receive loop of gorx, in one file so that it can follow the library's
// API as it changes: everything here is what an application writes.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/metrics"
	"sync"
	"sync/atomic"

	"github.com/devmem-go/devmem"
)

// flowCounts are one flow's counters (fastrx's).
type flowCounts struct {
	bytes, recvmsgs, frags, linear, readable, dontneed, tokens, responses, mismatches int64
	peak                                                                              int64 // tokens outstanding at most
}

func (t *flowCounts) add(o *flowCounts) {
	t.bytes += o.bytes
	t.recvmsgs += o.recvmsgs
	t.frags += o.frags
	t.linear += o.linear
	t.readable += o.readable
	t.dontneed += o.dontneed
	t.tokens += o.tokens
	t.responses += o.responses
	t.mismatches += o.mismatches
	t.peak += o.peak
}

type flow struct {
	flowCounts
	index int
	rr    bool
	err   error
}

// stats are shared by the flows: the steady-state allocation window.
type stats struct {
	recvmsgs atomic.Int64
	warming  atomic.Int64 // flows still in warm-up
	warmup   int

	mu                    sync.Mutex
	startAllocs           uint64
	warmAllocs, warmCalls int64
	endAllocs, endCalls   int64
	warmed, ended         bool
}

func newStats(flows, warmup int) *stats {
	s := &stats{warmup: warmup}
	s.warming.Store(int64(flows))
	s.startAllocs = heapAllocs()
	return s
}

// heapAllocs reads the cumulative count of heap allocations without
// stopping the world (runtime.ReadMemStats would).
func heapAllocs() uint64 {
	allocSample.mu.Lock()
	defer allocSample.mu.Unlock()
	metrics.Read(allocSample.s[:])
	return allocSample.s[0].Value.Uint64()
}

// allocSample is heapAllocs' buffer, made once so that reading the count
// allocates nothing itself.
var allocSample = struct {
	mu sync.Mutex
	s  [1]metrics.Sample
}{s: [1]metrics.Sample{{Name: "/gc/heap/allocs:objects"}}}

// warm is called by a flow after its warm-up calls; the last one opens the
// steady-state window.
func (s *stats) warm() {
	if s.warming.Add(-1) != 0 {
		return
	}
	a := heapAllocs()
	s.mu.Lock()
	s.warmAllocs, s.warmCalls, s.warmed = int64(a), s.recvmsgs.Load(), true
	s.mu.Unlock()
}

// eof closes the window at the first flow's end.
func (s *stats) eof() {
	a := heapAllocs()
	s.mu.Lock()
	if !s.ended {
		s.endAllocs, s.endCalls, s.ended = int64(a), s.recvmsgs.Load(), true
	}
	s.mu.Unlock()
}

// allocCounts returns all allocations since the start, those of the steady
// window ("n/a" if no window opened before the first EOF) and the recvmsg
// calls in it.
func (s *stats) allocCounts() (all int64, steady string, calls int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all = int64(heapAllocs() - s.startAllocs)
	if !s.warmed || !s.ended || s.endCalls < s.warmCalls {
		return all, "n/a", 0
	}
	return all, itoa(s.endAllocs - s.warmAllocs), s.endCalls - s.warmCalls
}

// openBuffer wraps the inherited dma-buf and, to validate, maps it.
func openBuffer(fd int, mapIt bool) (*devmem.DMABuf, []byte, error) {
	buf, err := devmem.OpenDMABuf(fd)
	if err != nil {
		return nil, nil, err
	}
	if !mapIt {
		return buf, nil, nil
	}
	mem, err := buf.Map()
	if err != nil {
		buf.Close()
		return nil, nil, err
	}
	return buf, mem, nil
}

// bind binds the inherited dma-buf to the queues the driver steered the
// flows to.
func bind(c *config, buf *devmem.DMABuf) (*devmem.Binding, error) {
	if c.ifindex <= 0 || len(c.queues) == 0 {
		return nil, fmt.Errorf("-I IFINDEX and -Q QUEUES are required")
	}
	var opts *devmem.BindRXOptions
	if c.pageSize != 0 {
		opts = &devmem.BindRXOptions{RXPageSize: uint32(c.pageSize)}
	}
	return devmem.BindRX(c.ifindex, buf, c.queues, opts)
}

// pattern is ncdevmem's -v stream for a modulus, repeated so that any
// window of patternChunk bytes starts at every phase.
const patternChunk = 1 << 16

func newPattern(modulus int) []byte {
	p := make([]byte, patternChunk+modulus)
	for i := range p {
		if v := i%modulus + 1; v == modulus {
			p[i] = '\n'
		} else {
			p[i] = byte(v)
		}
	}
	return p
}

// validator checks the stream in place, chunk by chunk.
type validator struct {
	pattern []byte
	modulus uint64
	pos     uint64
	first   error
	bad     int64
}

func (v *validator) check(p []byte) {
	for len(p) > 0 {
		n := min(len(p), patternChunk)
		phase := v.pos % v.modulus
		want := v.pattern[phase : phase+uint64(n)]
		if !bytes.Equal(p[:n], want) {
			for i := range n {
				if p[i] != want[i] {
					if v.bad == 0 {
						v.first = fmt.Errorf("byte %d is %d, want %d", v.pos+uint64(i), p[i], want[i])
					}
					v.bad++
				}
			}
		}
		v.pos += uint64(n)
		p = p[n:]
	}
}

var zeros [65536]byte

// receiveFlow receives one connection until EOF: Recv, use the payload
// in place, Done with the frags (the Receiver batches the releases by its
// own policy).
func receiveFlow(c *config, st *stats, f *flow, conn *net.TCPConn, b *devmem.Binding, buf *devmem.DMABuf, mem []byte) (err error) {
	rx, err := devmem.NewReceiver(conn, b, &devmem.ReceiverConfig{ReleaseBatch: c.batch, BlockThread: c.blockThread})
	if err != nil {
		return err
	}
	defer func() {
		s := rx.Stats()
		f.dontneed, f.tokens, f.peak = int64(s.DontneedCalls), int64(s.TokensFreed), int64(s.PeakOutstanding)
		err = errors.Join(err, rx.Close())
	}()
	var v *validator
	if c.validate != 0 {
		v = &validator{pattern: newPattern(c.validate), modulus: uint64(c.validate)}
	}
	inReq := 0
	for {
		msg, rerr := rx.Recv()
		if msg.N > 0 {
			f.recvmsgs++
			f.bytes += int64(msg.N)
			if st.recvmsgs.Add(1); f.recvmsgs == int64(c.warmup) {
				st.warm()
			}
			cerr := consume(f, &msg, buf, mem, v)
			// Whatever happened, the tokens go back.
			if derr := rx.Done(msg.Frags); derr != nil || cerr != nil {
				return errors.Join(cerr, derr)
			}
			if f.rr {
				for inReq += msg.N; inReq >= c.req; inReq -= c.req {
					if _, werr := conn.Write(zeros[:c.resp]); werr != nil {
						return werr
					}
					f.responses++
				}
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			st.eof()
			if err := rx.Flush(); err != nil {
				return err
			}
			if s := rx.Stats(); s.Outstanding != 0 {
				return fmt.Errorf("%d tokens still outstanding after Flush", s.Outstanding)
			}
			if v != nil && v.bad > 0 {
				f.mismatches = v.bad
				return v.first
			}
			return nil
		default:
			return rerr
		}
	}
}

// consume checks the frags of one Recv and validates their payload where
// it landed.
func consume(f *flow, msg *devmem.Message, buf *devmem.DMABuf, mem []byte, v *validator) error {
	if msg.Readable {
		f.readable += int64(msg.N)
		if v != nil {
			v.check(msg.Linear)
		}
		return nil
	}
	if v != nil {
		if err := buf.BeginCPUAccess(devmem.SyncRead); err != nil {
			return err
		}
	}
	dm := int64(0)
	for _, fr := range msg.Frags {
		switch fr.Kind {
		case devmem.FragLinear:
			f.linear += int64(fr.Size)
			if v != nil {
				v.check(msg.Linear[fr.Offset : fr.Offset+uint64(fr.Size)])
			}
		case devmem.FragDMABuf:
			dm++
			if v != nil {
				end := fr.Offset + uint64(fr.Size)
				if end > uint64(len(mem)) || end < fr.Offset {
					return fmt.Errorf("frag [%d, %d) outside the %d-byte dma-buf", fr.Offset, end, len(mem))
				}
				v.check(mem[fr.Offset:end])
			}
		}
	}
	f.frags += dm
	if v != nil {
		return buf.EndCPUAccess(devmem.SyncRead)
	}
	return nil
}
