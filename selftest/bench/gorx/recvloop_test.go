//go:build linux

package main

import (
	"bytes"
	"testing"
)

// stream returns n bytes of the -v modulus stream from offset off.
func stream(modulus, off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if v := (off+i)%modulus + 1; v == modulus {
			b[i] = '\n'
		} else {
			b[i] = byte(v)
		}
	}
	return b
}

func TestValidatorPhaseAcrossChunks(t *testing.T) {
	for _, modulus := range []int{2, 7, 255} {
		v := &validator{pattern: newPattern(modulus), modulus: uint64(modulus)}
		all := stream(modulus, 0, 3*patternChunk+123)
		// Frags of awkward sizes, one crossing patternChunk.
		for off, sizes := 0, []int{1, 6, 4095, patternChunk + 17, 3, 2*patternChunk - 5}; len(sizes) > 0 && off < len(all); sizes = sizes[1:] {
			end := min(off+sizes[0], len(all))
			v.check(all[off:end])
			off = end
		}
		if v.bad != 0 {
			t.Fatalf("modulus %d: %d mismatches on a correct stream: %v", modulus, v.bad, v.first)
		}
	}
}

func TestValidatorFindsCorruption(t *testing.T) {
	all := stream(7, 0, 2*patternChunk)
	for _, at := range []int{0, 6, patternChunk - 1, patternChunk, len(all) - 1} {
		b := bytes.Clone(all)
		b[at] ^= 0x40
		v := &validator{pattern: newPattern(7), modulus: 7}
		v.check(b[:at/2])
		v.check(b[at/2:])
		if v.bad != 1 || v.first == nil {
			t.Errorf("corrupt byte %d: %d mismatches (%v), want 1", at, v.bad, v.first)
		}
	}
}
