package main

import (
	"sync"

	"github.com/devmem-go/devmem"
)

// The kernel's SO_DEVMEM_DONTNEED limits per call (net/core/sock.c): past
// 1024 frags it stops silently, past 128 ranges it refuses.
const (
	dontneedMaxRanges = 128
	dontneedMaxTokens = 1024
)

// splitRanges cuts ranges into batches that each fit one SO_DEVMEM_DONTNEED
// call, splitting a range that crosses the token limit. Each batch is passed
// to emit in order; emit's slice is only valid during the call.
func splitRanges(ranges []devmem.TokenRange, emit func([]devmem.TokenRange) error) error {
	var batch [dontneedMaxRanges]devmem.TokenRange
	n, tokens := 0, uint32(0)
	flush := func() error {
		if n == 0 {
			return nil
		}
		err := emit(batch[:n])
		n, tokens = 0, 0
		return err
	}
	for _, r := range ranges {
		for r.Count > 0 {
			take := min(r.Count, dontneedMaxTokens-tokens)
			batch[n] = devmem.TokenRange{Start: r.Start, Count: take}
			n++
			tokens += take
			r.Start += take
			r.Count -= take
			if n == dontneedMaxRanges || tokens == dontneedMaxTokens {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// countingReleaser is a devmem.Releaser (for a TokenBatcher) in front of
// another one (the Receiver, which keeps its outstanding-token accounting).
// It coalesces tokens and hands them on in batches that each fit one
// SO_DEVMEM_DONTNEED call, so it can count the system calls made.
type countingReleaser struct {
	rel devmem.Releaser

	mu      sync.Mutex
	scratch []uint32
	ranges  []devmem.TokenRange
	batch   []uint32
	calls   uint64
	freed   uint64
}

func (c *countingReleaser) ReleaseTokens(tokens []uint32) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	// CoalesceTokens sorts in place; the Releaser contract leaves tokens
	// untouched.
	c.scratch = append(c.scratch[:0], tokens...)
	c.ranges = devmem.CoalesceTokens(c.ranges[:0], c.scratch)
	total := 0
	err := splitRanges(c.ranges, func(ranges []devmem.TokenRange) error {
		c.batch = c.batch[:0]
		for _, r := range ranges {
			for i := uint32(0); i < r.Count; i++ {
				c.batch = append(c.batch, r.Start+i)
			}
		}
		freed, err := c.rel.ReleaseTokens(c.batch)
		c.calls++
		total += freed
		c.freed += uint64(max(freed, 0))
		return err
	})
	return total, err
}

func (c *countingReleaser) stats() (calls, freed uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls, c.freed
}
