//go:build linux && (amd64 || arm64 || ppc64le)

package devmem

import (
	"math/rand/v2"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
)

// TestParseControlFastPaths checks the native parser (and, where the CPU
// has it, its assembly run loop, and the Go run loop it falls back to)
// against the generic walk on random mixes of dma-buf, linear, foreign and
// malformed control messages, with every capacity of frags.
func TestParseControlFastPaths(t *testing.T) {
	a := nativeABI()
	r := rand.New(rand.NewPCG(3, 4))
	runs := map[string]func(src, dst unsafe.Pointer, n int) int{"default": dmabufRun, "go": dmabufRunWords}
	defer func(f func(src, dst unsafe.Pointer, n int) int) { dmabufRun = f }(dmabufRun)
	for name, run := range runs {
		dmabufRun = run
		for iter := 0; iter < 800; iter++ {
			var oob []byte
			for m := r.IntN(40); m > 0; m-- {
				switch r.IntN(20) {
				case 0:
					oob = append(oob, a.linear(uint32(r.IntN(200)))...)
				case 1:
					oob = append(oob, a.timestamp()...)
				case 2:
					if r.IntN(4) == 0 { // rarely: garbage
						oob = append(oob, byte(r.IntN(256)), 0, 0)
					}
				default:
					oob = append(oob, a.dmabuf(r.Uint64(), r.Uint32(), r.Uint32(), r.Uint32())...)
				}
			}
			for capacity := 0; capacity <= 45; capacity += 1 + iter%5 {
				want := make([]Frag, capacity)
				got := make([]Frag, capacity)
				wn, werr := parseControlFrom(nativeCmsgLayout, oob, 0, want, 0, 0)
				gn, gerr := parseControl(nativeCmsgLayout, oob, got)
				if wn != gn || (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
					t.Fatalf("%s: native %d, %v; generic %d, %v", name, gn, gerr, wn, werr)
				}
				if diff := cmp.Diff(want[:wn], got[:gn], cmp.AllowUnexported(Frag{})); diff != "" {
					t.Fatalf("%s: frags (-generic +native):\n%s", name, diff)
				}
			}
		}
	}
}

// BenchmarkParseControlWords is BenchmarkParseControl through the Go run
// loop, as on arm64, ppc64le or an amd64 without AVX2.
func BenchmarkParseControlWords(b *testing.B) {
	defer func(f func(src, dst unsafe.Pointer, n int) int) { dmabufRun = f }(dmabufRun)
	dmabufRun = dmabufRunWords
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
