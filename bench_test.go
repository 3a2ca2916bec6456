package devmem

import (
	"testing"
)

// realisticControl is 200 SCM_DEVMEM_DMABUF messages in this
// architecture's layout, as one recvmsg of ~800 KB of 4 KiB frags returns.
func realisticControl(tb testing.TB) []byte {
	a := nativeABI()
	var b []byte
	for i := 0; i < 200; i++ {
		b = append(b, a.dmabuf(uint64(i)*4096, 4096, uint32(i+1), 1)...)
	}
	return b
}

// nativeABI is the golden-test abi matching this architecture's layout.
func nativeABI() abi {
	l := nativeCmsgLayout
	a := abiAMD64
	switch {
	case l.wordSize == 8 && l.bigEndian:
		a = abiS390X
	case l.wordSize == 4 && !l.bigEndian:
		a = abi386
	case l.wordSize == 4:
		a = abiMIPS
	}
	a.solSocket, a.scmLinear, a.scmDMABuf = l.level, l.linear, l.dmabuf
	return a
}

func BenchmarkParseControl(b *testing.B) {
	oob := realisticControl(b)
	frags := make([]Frag, MaxFrags(len(oob)))
	b.SetBytes(int64(len(oob)))
	b.ReportAllocs()
	for b.Loop() {
		n, err := ParseControl(oob, frags)
		if err != nil || n != 200 {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkParseControlGeneric parses the same bytes through the
// layout-driven walk that the golden tests use for every ABI: what the native
// fast path saves.
func BenchmarkParseControlGeneric(b *testing.B) {
	oob := realisticControl(b)
	frags := make([]Frag, MaxFrags(len(oob)))
	b.SetBytes(int64(len(oob)))
	b.ReportAllocs()
	for b.Loop() {
		n, err := parseControlFrom(nativeCmsgLayout, oob, 0, frags, 0, 0)
		if err != nil || n != 200 {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkCopyControl copies the same control bytes: the floor that
// ParseControl is measured against.
func BenchmarkCopyControl(b *testing.B) {
	oob := realisticControl(b)
	dst := make([]byte, len(oob))
	b.SetBytes(int64(len(oob)))
	b.ReportAllocs()
	for b.Loop() {
		copy(dst, oob)
	}
}

func benchTokens() []uint32 {
	tokens := make([]uint32, 1024)
	for i := range tokens {
		// Mostly consecutive, as lowest-free allocation hands them out,
		// with a gap every 64 and arriving out of order in pairs.
		tokens[i] = uint32(i + 1 + i/64)
	}
	for i := 0; i+1 < len(tokens); i += 2 {
		tokens[i], tokens[i+1] = tokens[i+1], tokens[i]
	}
	return tokens
}

func BenchmarkCoalesceTokens(b *testing.B) {
	in := benchTokens()
	tokens := make([]uint32, len(in))
	ranges := make([]TokenRange, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		copy(tokens, in)
		ranges = CoalesceTokens(ranges[:0], tokens)
	}
}

// recordedStream is the control data of the recvmsg calls of one token
// cycle, as the kernel writes it for a receiver that returns tokens 1024 at a
// time (cmd/ncdevmem's batcher): the kernel hands out tokens lowest-free from
// 1, so after a full release the next calls reuse 1, 2, 3... Each call
// carries 200 4-KiB frags (an 800 KiB iovec's worth) plus one linear cmsg for
// a header the NIC did not split off every fourth call.
type recordedStream struct {
	calls   [][]byte // msg_control of each recvmsg
	n       []int    // recvmsg's return value: payload bytes
	payload int64
}

const (
	recordedFragsPerCall = 200
	recordedCalls        = 6 // 1200 tokens: the 1024 threshold is crossed once
	recordedDMABufID     = 7
)

func recordStream() recordedStream {
	a := nativeABI()
	var s recordedStream
	token := uint32(1)
	for call := range recordedCalls {
		var ctl []byte
		n := 0
		if call%4 == 3 {
			ctl = append(ctl, a.linear(66)...)
			n += 66
		}
		for range recordedFragsPerCall {
			// Buffers come back out of page order: a page pool recycles.
			page := uint64(token*37) % 16000
			ctl = append(ctl, a.dmabuf(page*4096, 4096, token, recordedDMABufID)...)
			token++
			n += 4096
		}
		s.calls = append(s.calls, ctl)
		s.n = append(s.n, n)
		s.payload += int64(n)
	}
	return s
}

// replayReleaser is the Receiver's release path minus the system call:
// coalesce, cut into SO_DEVMEM_DONTNEED-sized batches, forget the tokens.
type replayReleaser struct {
	rx     *Receiver
	tokens []uint32
	ranges []TokenRange
	batch  [maxDontneedRanges]TokenRange
	calls  int
}

func (f *replayReleaser) ReleaseTokens(tokens []uint32) (int, error) {
	f.rx.mu.Lock()
	defer f.rx.mu.Unlock()
	f.tokens = f.tokens[:0]
	for _, t := range tokens {
		if f.rx.outstanding.has(t) {
			f.tokens = append(f.tokens, t)
		}
	}
	f.ranges = CoalesceTokens(f.ranges[:0], f.tokens)
	freed := 0
	for rs := f.ranges; len(rs) > 0; {
		n, sent, rest := nextBatch(&f.batch, rs)
		if n == 0 {
			break
		}
		f.calls++
		f.rx.released(f.batch[:n])
		freed += sent
		rs = rest
	}
	return freed, nil
}

// BenchmarkRecvLoopRecorded replays recordedStream through what a receive
// loop runs per recvmsg after the system call returns: ParseControl into
// the Receiver's frags, its token accounting and checks (finish), and a
// TokenBatcher that coalesces and batches the releases. One op is one token
// cycle (6 calls, 1200 frags); bytes/s is the payload rate this CPU work
// alone would sustain.
func BenchmarkRecvLoopRecorded(b *testing.B) {
	s := recordStream()
	const controlSize = 8192
	rx := &Receiver{
		ids:   []uint32{recordedDMABufID},
		buf:   make([]byte, DefaultBufferSize),
		oob:   make([]byte, controlSize),
		frags: make([]Frag, MaxFrags(controlSize)),
	}
	rel := &replayReleaser{rx: rx}
	batcher := NewTokenBatcher(rel, nil)
	replay := func() {
		for i, ctl := range s.calls {
			// The kernel writes msg_control; so does the replay.
			copy(rx.oob, ctl)
			nf, err := parseControl(nativeCmsgLayout, rx.oob[:len(ctl)], rx.frags)
			msg, err := rx.finish(s.n[i], nf, err)
			if err != nil {
				b.Fatal(err)
			}
			if err := batcher.Add(msg.Frags); err != nil {
				b.Fatal(err)
			}
		}
		if err := batcher.Flush(); err != nil {
			b.Fatal(err)
		}
	}
	replay() // warm up: the token bitmap and scratch slices reach their size
	if out := rx.Outstanding(); out != 0 {
		b.Fatalf("%d tokens outstanding after a cycle", out)
	}
	rel.calls = 0
	b.SetBytes(s.payload)
	b.ReportAllocs()
	for b.Loop() {
		replay()
	}
	frags := float64(b.N * recordedCalls * recordedFragsPerCall)
	b.ReportMetric(float64(rel.calls)/frags, "dontneed/frag")
}
