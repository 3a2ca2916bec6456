package devmem

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestCoalesceTokens(t *testing.T) {
	tests := []struct {
		name   string
		tokens []uint32
		want   []TokenRange
	}{
		{"empty", nil, nil},
		{"one", []uint32{7}, []TokenRange{{7, 1}}},
		{"run", []uint32{3, 1, 2, 4}, []TokenRange{{1, 4}}},
		{"gaps", []uint32{1, 2, 5, 6, 9}, []TokenRange{{1, 2}, {5, 2}, {9, 1}}},
		{"duplicates", []uint32{2, 1, 2, 2, 3, 1}, []TokenRange{{1, 3}}},
		{"top", []uint32{math.MaxUint32, 0, math.MaxUint32 - 1}, []TokenRange{{0, 1}, {math.MaxUint32 - 1, 2}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CoalesceTokens(nil, slices.Clone(tt.tokens))
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Fatalf("ranges (-want +got):\n%s", diff)
			}
		})
	}
	// Appending to a non-empty dst never merges with its old ranges.
	got := CoalesceTokens([]TokenRange{{1, 1}}, []uint32{2})
	if diff := cmp.Diff([]TokenRange{{1, 1}, {2, 1}}, got); diff != "" {
		t.Fatalf("append (-want +got):\n%s", diff)
	}
}

// randomTokens draws token sets with runs, gaps, duplicates and values at
// both ends of the uint32 space.
func randomTokens(r *rand.Rand) []uint32 {
	n := r.IntN(3000)
	out := make([]uint32, 0, n)
	base := uint32(r.IntN(1 << 20))
	if r.IntN(4) == 0 {
		base = math.MaxUint32 - uint32(r.IntN(2000))
	}
	for len(out) < n {
		switch r.IntN(6) {
		case 0: // gap
			base += uint32(r.IntN(50)) + 2
		case 1: // duplicate
			if len(out) > 0 {
				out = append(out, out[r.IntN(len(out))])
				continue
			}
		case 2:
			out = append(out, r.Uint32())
			continue
		case 3:
			out = append(out, 0, math.MaxUint32)
			continue
		}
		out = append(out, base)
		base++
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func TestCoalesceTokensProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var ranges []TokenRange
	for iter := 0; iter < 500; iter++ {
		tokens := randomTokens(r)
		set := map[uint32]bool{}
		for _, tok := range tokens {
			set[tok] = true
		}
		ranges = CoalesceTokens(ranges[:0], slices.Clone(tokens))
		covered := 0
		for i, rg := range ranges {
			if rg.Count == 0 {
				t.Fatalf("empty range %v", rg)
			}
			end := uint64(rg.Start) + uint64(rg.Count)
			if end > 1<<32 {
				t.Fatalf("range %v wraps", rg)
			}
			if i > 0 {
				prevEnd := uint64(ranges[i-1].Start) + uint64(ranges[i-1].Count)
				if uint64(rg.Start) <= prevEnd {
					t.Fatalf("ranges %v and %v overlap or touch", ranges[i-1], rg)
				}
			}
			for v := uint64(rg.Start); v < end; v++ {
				if !set[uint32(v)] {
					t.Fatalf("range %v covers %d, which is not an input token", rg, v)
				}
				covered++
			}
		}
		if covered != len(set) {
			t.Fatalf("ranges cover %d tokens, input has %d distinct", covered, len(set))
		}
	}
}

func TestNextBatchProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	var batch [maxDontneedRanges]TokenRange
	for iter := 0; iter < 300; iter++ {
		in := make([]TokenRange, r.IntN(600))
		total := uint64(0)
		for i := range in {
			var c uint32
			switch r.IntN(5) {
			case 0:
				c = 0
			case 1:
				c = uint32(r.IntN(1 << 16)) // huge: many calls
			default:
				c = uint32(r.IntN(20)) + 1
			}
			in[i] = TokenRange{Start: r.Uint32(), Count: c} // may wrap
			if r.IntN(10) == 0 {
				in[i].Start = math.MaxUint32 - 3
			}
			total += uint64(c)
		}
		// Walk the input with a cursor: every batch entry must be the
		// next piece of it, in order.
		want := slices.Clone(in)
		rest := slices.Clone(in)
		sent := uint64(0)
		for len(rest) > 0 {
			var n, frags int
			n, frags, rest = nextBatch(&batch, rest)
			if n > maxDontneedRanges || frags > maxDontneedFrags {
				t.Fatalf("batch of %d ranges, %d frags", n, frags)
			}
			sum := 0
			for _, e := range batch[:n] {
				for len(want) > 0 && want[0].Count == 0 {
					want = want[1:]
				}
				if len(want) == 0 || e.Start != want[0].Start || e.Count == 0 || e.Count > want[0].Count {
					t.Fatalf("batch entry %v does not continue the input at %v", e, want[:min(1, len(want))])
				}
				want[0].Start += e.Count
				want[0].Count -= e.Count
				sum += int(e.Count)
			}
			if sum != frags {
				t.Fatalf("batch sums to %d, nextBatch said %d", sum, frags)
			}
			if n == 0 && len(rest) > 0 {
				t.Fatalf("no progress with %d ranges left", len(rest))
			}
			sent += uint64(sum)
		}
		if sent != total {
			t.Fatalf("sent %d tokens of %d", sent, total)
		}
	}
	// A range of 2^32-1 tokens is cut into full 1024-token calls.
	rest := []TokenRange{{Start: 5, Count: math.MaxUint32}}
	for i := 0; i < 3; i++ {
		n, frags, r := nextBatch(&batch, rest)
		rest = r
		if n != 1 || frags != maxDontneedFrags || batch[0] != (TokenRange{Start: 5 + uint32(i)*1024, Count: 1024}) {
			t.Fatalf("call %d: %d ranges, %d frags, %v", i, n, frags, batch[0])
		}
	}
}

func TestTokenSet(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var s tokenSet
	ref := map[uint32]bool{}
	for i := 0; i < 20000; i++ {
		tok := uint32(r.IntN(5000))
		if r.IntN(3) == 0 {
			if (s.removeRange(tok, 1) == 1) != ref[tok] {
				t.Fatalf("removeRange(%d, 1) disagrees with the reference", tok)
			}
			delete(ref, tok)
		} else {
			if s.add(tok) == ref[tok] {
				t.Fatalf("add(%d) disagrees with the reference", tok)
			}
			ref[tok] = true
		}
	}
	checkTokenSet(t, &s, ref)
}

// checkTokenSet compares s with the reference set ref: count and ranges.
func checkTokenSet(t *testing.T, s *tokenSet, ref map[uint32]bool) {
	t.Helper()
	if s.n != len(ref) {
		t.Fatalf("n = %d, reference %d", s.n, len(ref))
	}
	var want []uint32
	for tok := range ref {
		want = append(want, tok)
	}
	if diff := cmp.Diff(CoalesceTokens(nil, want), s.appendRanges(nil)); diff != "" {
		t.Fatalf("appendRanges (-want +got):\n%s", diff)
	}
}

func TestTokenSetRemoveRange(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	var s tokenSet
	ref := map[uint32]bool{}
	for i := 0; i < 5000; i++ {
		tok := uint32(r.IntN(3000))
		if s.add(tok) {
			ref[tok] = true
		}
		if r.IntN(4) != 0 {
			continue
		}
		start, count := uint32(r.IntN(3100)), uint32(r.IntN(200))
		if r.IntN(20) == 0 {
			// A range that wraps at 2^32 into the low tokens.
			start, count = math.MaxUint32-uint32(r.IntN(100)), uint32(r.IntN(300))
		}
		removed := s.removeRange(start, count)
		inRef := 0
		for j := uint32(0); j < count; j++ {
			if ref[start+j] {
				inRef++
				delete(ref, start+j)
			}
		}
		if removed != inRef {
			t.Fatalf("removeRange(%d, %d) = %d, reference %d", start, count, removed, inRef)
		}
		if s.n != len(ref) {
			t.Fatalf("after removeRange(%d, %d): n = %d, reference %d", start, count, s.n, len(ref))
		}
	}
	checkTokenSet(t, &s, ref)
	s.clear()
	if s.n != 0 || len(s.appendRanges(nil)) != 0 {
		t.Fatalf("clear left %d tokens", s.n)
	}
}
