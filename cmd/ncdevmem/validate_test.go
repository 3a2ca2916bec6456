package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// refValidate is ncdevmem.c's validate_buffer transcribed literally, the
// reference the fast validator must agree with.
type refValidate struct {
	modulus uint64
	seed    uint8
	errors  int
}

func (r *refValidate) check(p []byte) bool {
	for _, b := range p {
		expected := r.seed
		if expected == 0 {
			expected = '\n'
		}
		if b != expected {
			r.errors++
			if r.errors > 20 {
				return false
			}
		}
		r.seed++
		if uint64(r.seed) == r.modulus {
			r.seed = 0
		}
	}
	return true
}

func TestValidatorGolden(t *testing.T) {
	// `yes "$(printf '\1\2\3\4\5\6')"` is what ncdevmem -v 7 expects.
	golden7 := []byte("\x01\x02\x03\x04\x05\x06\n\x01\x02\x03\x04\x05\x06\n\x01")
	v := newValidator(7)
	if err := v.check(golden7); err != nil || v.mismatches != 0 {
		t.Fatalf("golden -v 7 stream: %v, %d mismatches", err, v.mismatches)
	}
	// Modulus 2: 1, '\n', 1, '\n'...
	v = newValidator(2)
	if err := v.check([]byte("\x01\n\x01\n")); err != nil || v.mismatches != 0 {
		t.Fatalf("-v 2: %v, %d mismatches", err, v.mismatches)
	}
	// Beyond 255 the uint8 seed just wraps: 1..255, '\n', 1...
	var wrap []byte
	for i := 1; i < 256; i++ {
		wrap = append(wrap, byte(i))
	}
	wrap = append(wrap, '\n', 1)
	v = newValidator(1000)
	if err := v.check(wrap); err != nil || v.mismatches != 0 {
		t.Fatalf("-v 1000: %v, %d mismatches", err, v.mismatches)
	}
}

func pattern(modulus uint64, n int) []byte {
	r := &refValidate{modulus: modulus, seed: 1}
	out := make([]byte, n)
	for i := range out {
		out[i] = r.seed
		if out[i] == 0 {
			out[i] = '\n'
		}
		r.check(out[i : i+1])
	}
	return out
}

// The seed carries across calls: any split of a valid stream validates.
func TestValidatorSeedContinuesAcrossSplits(t *testing.T) {
	for _, modulus := range []uint64{1, 2, 7, 13, 255, 256, 300} {
		stream := pattern(modulus, 3*fastChunk+17)
		for _, step := range []int{1, 3, 7, 100, fastChunk - 1, fastChunk + 5} {
			v := newValidator(modulus)
			for off := 0; off < len(stream); off += step {
				if err := v.check(stream[off:min(off+step, len(stream))]); err != nil {
					t.Fatalf("modulus %d step %d: %v", modulus, step, err)
				}
			}
			if v.mismatches != 0 {
				t.Errorf("modulus %d step %d: %d mismatches", modulus, step, v.mismatches)
			}
		}
	}
}

func TestValidatorCountsMismatches(t *testing.T) {
	stream := pattern(7, 10000)
	bad := bytes.Clone(stream)
	for _, i := range []int{5, 4095, 4096, 9000} {
		bad[i] ^= 0xff
	}
	v := newValidator(7)
	if err := v.check(bad); err != nil {
		t.Fatalf("4 mismatches must not fail yet: %v", err)
	}
	if v.mismatches != 4 || v.failed() {
		t.Fatalf("mismatches %d, failed %v; want 4, false", v.mismatches, v.failed())
	}
	if m := v.first[1]; m.Offset != 4095 || m.Expected != stream[4095] || m.Actual != stream[4095]^0xff {
		t.Errorf("second mismatch recorded as %+v", m)
	}
}

// More than 20 mismatches fail, at exactly the byte ncdevmem fails at.
func TestValidatorFailsLikeNcdevmem(t *testing.T) {
	stream := pattern(7, 5000)
	for i := 100; i < 200; i += 3 {
		stream[i] = 0
	}
	ref := &refValidate{modulus: 7, seed: 1}
	v := newValidator(7)
	for off := 0; off < len(stream); off += 50 {
		refOK := ref.check(stream[off : off+50])
		err := v.check(stream[off : off+50])
		if refOK != (err == nil) {
			t.Fatalf("at chunk %d: reference ok=%v, ours err=%v", off, refOK, err)
		}
		if err != nil {
			var de *dataError
			if !errors.As(err, &de) || exitCode(err) != exitData {
				t.Errorf("validation error %v is not a data error", err)
			}
			if !strings.Contains(err.Error(), "21 mismatches") {
				t.Errorf("error %q should count 21 mismatches", err)
			}
			return
		}
	}
	t.Fatal("never failed")
}

func BenchmarkValidator(b *testing.B) {
	stream := pattern(7, 1<<20)
	b.SetBytes(int64(len(stream)))
	v := newValidator(7)
	for b.Loop() {
		if err := v.check(stream); err != nil {
			b.Fatal(err)
		}
		v.seed = 1
	}
}
