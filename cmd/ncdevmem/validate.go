package main

import (
	"bytes"
	"fmt"
)

// maxMismatches is ncdevmem's tolerance: more mismatches than this fail.
const maxMismatches = 20

// A validator checks a byte stream against ncdevmem's -v pattern, exactly as
// ncdevmem's validate_buffer does: a uint8 seed starting at 1 gives the
// expected byte (the seed, or '\n' when the seed is 0); after each byte the
// seed increments and wraps to 0 when it equals the modulus. With modulus 7
// the stream is 1,2,3,4,5,6,'\n' repeating (what `yes "$(printf
// '\1\2\3\4\5\6')"` writes). The seed carries over between calls, so frags
// may be checked one by one in stream order.
type validator struct {
	modulus uint64
	seed    uint8
	// cycle is the seed sequence from seed 1 until it repeats; pos[s] is
	// the index of seed s in it. pattern is the expected bytes of cycle,
	// repeated so that any window up to fastChunk long can be compared
	// with one bytes.Equal.
	cycle    []uint8
	pos      [256]int
	pattern  []byte
	periodic bool

	offset     uint64 // stream offset of the next byte
	mismatches int
	// first holds the first mismatches (at most maxMismatches+1), for the
	// report.
	first []mismatch
}

type mismatch struct {
	Offset           uint64
	Expected, Actual byte
}

const fastChunk = 4096

func newValidator(modulus uint64) *validator {
	v := &validator{modulus: modulus, seed: 1}
	for i := range v.pos {
		v.pos[i] = -1
	}
	s := uint8(1)
	for ; v.pos[s] < 0; s = v.next(s) {
		v.pos[s] = len(v.cycle)
		v.cycle = append(v.cycle, s)
	}
	// With modulus 1 the seed sticks at 0 after the first wrap (0 -> 1 is
	// reset to 0): not a cycle through 1, so no fast path.
	v.periodic = s == 1
	for len(v.pattern) < len(v.cycle)+fastChunk {
		for _, s := range v.cycle {
			v.pattern = append(v.pattern, expectedByte(s))
		}
	}
	return v
}

func (v *validator) next(s uint8) uint8 {
	s++
	if uint64(s) == v.modulus {
		s = 0
	}
	return s
}

func expectedByte(seed uint8) byte {
	if seed == 0 {
		return '\n'
	}
	return seed
}

// check validates p, the next bytes of the stream. It returns an error once
// more than maxMismatches bytes were wrong in the stream so far.
func (v *validator) check(p []byte) error {
	for len(p) > 0 {
		n := min(len(p), fastChunk)
		at := v.pos[v.seed]
		if v.periodic && bytes.Equal(p[:n], v.pattern[at:at+n]) {
			v.seed = v.cycle[(at+n)%len(v.cycle)]
			v.offset += uint64(n)
			p = p[n:]
			continue
		}
		for _, b := range p[:n] {
			if want := expectedByte(v.seed); b != want {
				v.mismatches++
				if len(v.first) <= maxMismatches {
					v.first = append(v.first, mismatch{Offset: v.offset, Expected: want, Actual: b})
				}
				if v.mismatches > maxMismatches {
					return v.err()
				}
			}
			v.seed = v.next(v.seed)
			v.offset++
		}
		p = p[n:]
	}
	return nil
}

// failed reports whether the stream has failed validation.
func (v *validator) failed() bool { return v.mismatches > maxMismatches }

func (v *validator) err() error {
	m := v.first[0]
	return &dataError{fmt.Errorf("validation failed: %d mismatches in %d bytes; first at stream offset %d: expected %d, got %d",
		v.mismatches, v.offset, m.Offset, m.Expected, m.Actual)}
}
