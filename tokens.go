package devmem

import (
	"math"
	"math/bits"
	"slices"
)

// Kernel limits of one SO_DEVMEM_DONTNEED call (net/core/sock.c).
const (
	// maxDontneedRanges is MAX_DONTNEED_TOKENS: struct dmabuf_token
	// entries per call; more is EINVAL.
	maxDontneedRanges = 128
	// maxDontneedFrags is MAX_DONTNEED_FRAGS: token indices examined per
	// call, valid or not. The kernel stops silently after that many.
	maxDontneedFrags = 1024
)

// TokenRange is struct dmabuf_token: Count consecutive tokens from Start.
// The kernel computes Start+i in uint32 arithmetic, so a range may wrap.
type TokenRange struct {
	// Start is the first token of the range (frag_token).
	Start uint32
	// Count is the number of consecutive tokens (token_count).
	Count uint32
}

// CoalesceTokens sorts tokens in place, drops duplicates and appends to dst
// one TokenRange per run of consecutive tokens. It allocates only when dst
// must grow.
func CoalesceTokens(dst []TokenRange, tokens []uint32) []TokenRange {
	slices.Sort(tokens)
	first := len(dst)
	for _, t := range tokens {
		if n := len(dst); n > first {
			last := &dst[n-1]
			end := uint64(last.Start) + uint64(last.Count)
			if uint64(t) < end {
				continue // duplicate
			}
			if uint64(t) == end && last.Count < math.MaxUint32 {
				last.Count++
				continue
			}
		}
		dst = append(dst, TokenRange{Start: t, Count: 1})
	}
	return dst
}

// nextBatch fills batch with ranges from rs, at most maxDontneedRanges
// entries and maxDontneedFrags tokens, splitting the range that crosses the
// token limit and skipping empty ones. It returns the entries used, the
// tokens they cover and the ranges left (whose first element may have been
// advanced in place past the part taken).
func nextBatch(batch *[maxDontneedRanges]TokenRange, rs []TokenRange) (n, frags int, rest []TokenRange) {
	budget := uint32(maxDontneedFrags)
	for len(rs) > 0 && n < len(batch) && budget > 0 {
		r := rs[0]
		if r.Count == 0 {
			rs = rs[1:]
			continue
		}
		if r.Count <= budget {
			batch[n] = r
			budget -= r.Count
			rs = rs[1:]
		} else {
			batch[n] = TokenRange{Start: r.Start, Count: budget}
			rs[0] = TokenRange{Start: r.Start + budget, Count: r.Count - budget}
			budget = 0
		}
		n++
	}
	return n, maxDontneedFrags - int(budget), rs
}

// tokenSet is a bitmap of outstanding tokens. The kernel allocates tokens
// lowest-free from 1 (xa_alloc, XA_FLAGS_ALLOC1), so the highest token is
// close to the peak number outstanding and the bitmap stays small; it only
// grows, and never allocates in steady state.
type tokenSet struct {
	words []uint64
	n     int
}

// reserve makes room for tokens up to t without marking any.
func (s *tokenSet) reserve(t uint32) {
	if w := int(t / 64); w >= len(s.words) {
		// append zeroes the whole new backing array; use all of it.
		s.words = append(s.words, make([]uint64, w+1-len(s.words))...)
		s.words = s.words[:cap(s.words)]
	}
}

// add marks t outstanding and reports whether it was not already.
func (s *tokenSet) add(t uint32) bool {
	s.reserve(t)
	w := int(t / 64)
	bit := uint64(1) << (t % 64)
	if s.words[w]&bit != 0 {
		return false
	}
	s.words[w] |= bit
	s.n++
	return true
}

// removeRange clears the count tokens from start, wrapping at 2^32 as the
// kernel's arithmetic does, a word at a time, and returns how many of them
// were set.
func (s *tokenSet) removeRange(start, count uint32) (removed int) {
	lo := uint64(start)
	hi := lo + uint64(count)
	if hi > 1<<32 {
		removed = s.removeRange(0, uint32(hi-1<<32))
		hi = 1 << 32
	}
	hi = min(hi, uint64(len(s.words))*64)
	for lo < hi {
		w, b := lo/64, lo%64
		n := min(64-b, hi-lo)
		mask := ^uint64(0) >> (64 - n) << b
		cleared := bits.OnesCount64(s.words[w] & mask)
		s.n -= cleared
		removed += cleared
		s.words[w] &^= mask
		lo += n
	}
	return removed
}

// clear empties the set, keeping its words.
func (s *tokenSet) clear() {
	if s.n > 0 {
		clear(s.words)
		s.n = 0
	}
}

// appendRanges appends every outstanding token to dst as sorted ranges.
func (s *tokenSet) appendRanges(dst []TokenRange) []TokenRange {
	first := len(dst)
	for wi, w := range s.words {
		for w != 0 {
			b := bits.TrailingZeros64(w)
			w &= w - 1
			t := uint32(wi*64 + b)
			if n := len(dst); n > first && dst[n-1].Start+dst[n-1].Count == t {
				dst[n-1].Count++
				continue
			}
			dst = append(dst, TokenRange{Start: t, Count: 1})
		}
	}
	return dst
}
