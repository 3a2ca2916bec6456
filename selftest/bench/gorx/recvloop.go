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
}

type flow struct {
	flowCounts
	index int
	rr    bool
	err   error
}

// stats are shared by the flows: outstanding tokens of all of them and the
// steady-state allocation window.
type stats struct {
	outstanding, maxOutstanding atomic.Int64
	recvmsgs                    atomic.Int64
	warming                     atomic.Int64 // flows still in warm-up
	warmup                      int

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
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func (s *stats) addOutstanding(n int64) {
	now := s.outstanding.Add(n)
	for {
		peak := s.maxOutstanding.Load()
		if now <= peak || s.maxOutstanding.CompareAndSwap(peak, now) {
			return
		}
	}
}

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

// countingReleaser counts the SO_DEVMEM_DONTNEED calls behind each release
// of a TokenBatcher and keeps the outstanding-token count. The Receiver
// coalesces the tokens into ranges and splits them into calls of at most 128
// ranges and 1024 tokens; the count here is that split over the runs in
// arrival order, an upper bound (sorting only merges runs), exact when every
// batch fits one call, as it does with consecutive tokens.
type countingReleaser struct {
	rx    *devmem.Receiver
	st    *stats
	calls int64
	freed int64
}

func (c *countingReleaser) ReleaseTokens(tokens []uint32) (int, error) {
	ranges, n := 0, 0
	for i, t := range tokens {
		if i == 0 || t != tokens[i-1]+1 {
			ranges++
		}
		n++
	}
	if n > 0 {
		c.calls += int64(max((ranges+127)/128, (n+1023)/1024))
	}
	freed, err := c.rx.ReleaseTokens(tokens)
	c.freed += int64(freed)
	c.st.addOutstanding(-int64(freed))
	return freed, err
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

// receiveFlow receives one connection until EOF.
func receiveFlow(c *config, st *stats, f *flow, conn *net.TCPConn, buf *devmem.DMABuf, mem []byte) (err error) {
	rx, err := devmem.NewReceiver(conn, &devmem.ReceiverConfig{DMABufIDs: []uint32{c.id}})
	if err != nil {
		return err
	}
	rel := &countingReleaser{rx: rx, st: st}
	var bcfg *devmem.TokenBatcherConfig
	if c.batch > 0 {
		bcfg = &devmem.TokenBatcherConfig{Threshold: c.batch}
	}
	batcher := devmem.NewTokenBatcher(rel, bcfg)
	defer func() {
		err = errors.Join(err, batcher.Close(), rx.Close())
		f.dontneed, f.tokens = rel.calls, rel.freed
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
			if cerr := consume(f, &msg, buf, mem, v, st); cerr != nil {
				batcher.Add(msg.Frags)
				return cerr
			}
			if aerr := batcher.Add(msg.Frags); aerr != nil {
				return aerr
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
func consume(f *flow, msg *devmem.Message, buf *devmem.DMABuf, mem []byte, v *validator, st *stats) error {
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
	st.addOutstanding(dm)
	if v != nil {
		return buf.EndCPUAccess(devmem.SyncRead)
	}
	return nil
}
