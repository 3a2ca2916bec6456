package devmem

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// refParse is a deliberately naive reference: it decodes every cmsg with
// the abi's encoding/binary order and collects all devmem frags, reporting
// whether the walk hit malformed data.
func refParse(a abi, b []byte) (frags []Frag, bad bool) {
	hdr := a.long + 8
	var linear uint64
	for len(b) > 0 {
		if len(b) < hdr {
			return frags, true
		}
		var l uint64
		if a.long == 8 {
			l = a.order.Uint64(b)
		} else {
			l = uint64(a.order.Uint32(b))
		}
		if l < uint64(hdr) || l > uint64(len(b)) {
			return frags, true
		}
		level, typ := a.order.Uint32(b[a.long:]), a.order.Uint32(b[a.long+4:])
		data := b[hdr:l]
		if level == a.solSocket && (typ == a.scmLinear || typ == a.scmDMABuf) {
			if len(data) != 24 {
				return frags, true
			}
			size := a.order.Uint32(data[8:])
			if typ == a.scmLinear {
				frags = append(frags, Frag{Kind: FragLinear, Offset: linear, Size: size})
				linear += uint64(size)
			} else {
				frags = append(frags, Frag{Kind: FragDMABuf, Offset: a.order.Uint64(data), Size: size,
					Token: a.order.Uint32(data[12:]), DMABufID: a.order.Uint32(data[16:])})
			}
		}
		next := a.cmsgAlign(int(l))
		if next >= len(b) {
			break
		}
		b = b[next:]
	}
	return frags, false
}

// FuzzParseControl checks, for every ABI, that parseControl never panics,
// never fills more than len(frags), and agrees with refParse frag for frag.
// Seeds: the golden blobs in testdata/cmsg.
//
//	go test -fuzz=FuzzParseControl -fuzztime=30s
func FuzzParseControl(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join("testdata", "cmsg", "*.bin"))
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		for j := range goldenABIs {
			f.Add(b, uint8(j), uint8(i%5+1))
		}
	}
	f.Fuzz(func(t *testing.T, blob []byte, abiIndex, capacity uint8) {
		a := goldenABIs[int(abiIndex)%len(goldenABIs)]
		frags := make([]Frag, capacity%32)
		n, err := parseControl(a.layout(), blob, frags)
		if n < 0 || n > len(frags) {
			t.Fatalf("n = %d with len(frags) = %d", n, len(frags))
		}
		want, bad := refParse(a, blob)
		switch {
		case err == nil:
			if bad {
				t.Fatalf("no error, reference found malformed data")
			}
			if diff := cmp.Diff(want, frags[:n], cmpopts.EquateEmpty(), cmp.AllowUnexported(Frag{})); diff != "" {
				t.Fatalf("frags (-want +got):\n%s", diff)
			}
		case errors.Is(err, ErrTooManyFrags):
			if n != len(frags) || len(want) <= n {
				t.Fatalf("ErrTooManyFrags with n = %d, cap %d, reference has %d", n, len(frags), len(want))
			}
			if diff := cmp.Diff(want[:n], frags[:n], cmpopts.EquateEmpty(), cmp.AllowUnexported(Frag{})); diff != "" {
				t.Fatalf("frags (-want +got):\n%s", diff)
			}
		case errors.Is(err, ErrMalformedControl):
			if !bad {
				t.Fatalf("error %v, reference parsed cleanly", err)
			}
			if n > len(want) {
				t.Fatalf("n = %d beyond the reference's %d", n, len(want))
			}
			if diff := cmp.Diff(want[:n], frags[:n], cmpopts.EquateEmpty(), cmp.AllowUnexported(Frag{})); diff != "" {
				t.Fatalf("frags (-want +got):\n%s", diff)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}
