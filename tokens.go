package devmem

import (
	"math"
	"math/bits"
	"net"
	"slices"
	"sync"
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

// add marks t outstanding and reports whether it was not already.
func (s *tokenSet) add(t uint32) bool {
	w := int(t / 64)
	if w >= len(s.words) {
		// append zeroes the whole new backing array; use all of it.
		s.words = append(s.words, make([]uint64, w+1-len(s.words))...)
		s.words = s.words[:cap(s.words)]
	}
	bit := uint64(1) << (t % 64)
	if s.words[w]&bit != 0 {
		return false
	}
	s.words[w] |= bit
	s.n++
	return true
}

func (s *tokenSet) has(t uint32) bool {
	w := int(t / 64)
	return w < len(s.words) && s.words[w]&(uint64(1)<<(t%64)) != 0
}

// remove clears t and reports whether it was set.
func (s *tokenSet) remove(t uint32) bool {
	if !s.has(t) {
		return false
	}
	s.words[t/64] &^= uint64(1) << (t % 64)
	s.n--
	return true
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

// A Releaser returns devmem tokens to the kernel, such as a
// *TokenReleaser. ReleaseTokens reports how many the kernel freed. (A
// *Receiver is not one: bare tokens cannot say which receive they came
// from; Receiver.Done batches with ownership checks.)
type Releaser interface {
	ReleaseTokens(tokens []uint32) (freed int, err error)
}

// TokenBatcherConfig configures a TokenBatcher.
type TokenBatcherConfig struct {
	// Threshold is the number of pending tokens at which Add releases
	// them. It is also the cap: after Add returns, at most Threshold-1
	// tokens are pending, so a consumer that stalls keeps no more than
	// that many buffers away from the NIC's queue on the batcher's
	// account. Default (0) is 1024, one full SO_DEVMEM_DONTNEED call;
	// size it well below the number of buffers in the dma-buf (size /
	// page size).
	Threshold int
}

// TokenStats counts a TokenBatcher's tokens. Added == Released + Failed +
// Pending at all times.
type TokenStats struct {
	// Added is the number of tokens handed to Add.
	Added int
	// Released is the number the kernel reported freed.
	Released int
	// Failed is the number not freed: refused by the kernel (see
	// ReleaseError), or part of a call that failed.
	Failed int
	// Pending is the number waiting for the next release.
	Pending int
}

// A TokenBatcher collects the tokens of consumed frags and returns them to
// the kernel in batches: one SO_DEVMEM_DONTNEED per 1024 tokens instead of
// one per frag. It is safe for concurrent use.
//
// Add releases synchronously once Threshold tokens are pending, so it never
// blocks on anything but that system call and never holds more than
// Threshold-1 tokens when it returns. Tokens whose release fails are not
// retried: they are counted as Failed and the error is returned (a
// *ReleaseError for tokens the kernel did not know, an *Error for a
// refused call). Call Flush when the stream goes idle, and Close at the
// end.
type TokenBatcher struct {
	mu        sync.Mutex
	rel       Releaser
	threshold int
	pending   []uint32
	stats     TokenStats
	closed    bool
}

// NewTokenBatcher returns a TokenBatcher that releases through rel, such
// as a *TokenReleaser for a socket received from by other means than a
// Receiver.
func NewTokenBatcher(rel Releaser, cfg *TokenBatcherConfig) *TokenBatcher {
	threshold := maxDontneedFrags
	if cfg != nil && cfg.Threshold > 0 {
		threshold = cfg.Threshold
	}
	return &TokenBatcher{rel: rel, threshold: threshold, pending: make([]uint32, 0, threshold)}
}

// Add queues the tokens of frags (FragDMABuf only; linear frags carry none)
// and releases them if Threshold is reached. The frags' payload must no
// longer be needed. After Close, Add returns net.ErrClosed and takes
// nothing.
func (b *TokenBatcher) Add(frags []Frag) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return net.ErrClosed
	}
	for i := range frags {
		if frags[i].Kind == FragDMABuf {
			b.pending = append(b.pending, frags[i].Token)
			b.stats.Added++
		}
	}
	if len(b.pending) >= b.threshold {
		return b.flushLocked()
	}
	return nil
}

// AddTokens is Add for bare tokens.
func (b *TokenBatcher) AddTokens(tokens []uint32) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return net.ErrClosed
	}
	b.pending = append(b.pending, tokens...)
	b.stats.Added += len(tokens)
	if len(b.pending) >= b.threshold {
		return b.flushLocked()
	}
	return nil
}

// Flush releases every pending token now.
func (b *TokenBatcher) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *TokenBatcher) flushLocked() error {
	if len(b.pending) == 0 {
		return nil
	}
	freed, err := b.rel.ReleaseTokens(b.pending)
	freed = min(max(freed, 0), len(b.pending))
	b.stats.Released += freed
	b.stats.Failed += len(b.pending) - freed
	b.pending = b.pending[:0]
	return err
}

// Stats returns the batcher's counts.
func (b *TokenBatcher) Stats() TokenStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Pending = len(b.pending)
	return s
}

// Close releases what is pending and stops accepting tokens. Its error is
// that of the final release; Stats then accounts for every token added.
// Close does not close the underlying Releaser.
func (b *TokenBatcher) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	return b.flushLocked()
}
