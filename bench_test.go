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
