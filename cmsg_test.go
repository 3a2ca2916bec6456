package devmem

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// The golden blobs in testdata/cmsg are written by this file's builder,
// which encodes struct cmsghdr and struct dmabuf_cmsg field by field from
// the C definitions (include/uapi/linux/socket.h, include/uapi/linux/uio.h,
// arch/*/include/uapi/asm/socket.h) and shares no code with the parser.
// Regenerate them with:
//
//	go test -run TestControlGolden -update
var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// abi is one Linux ABI as the C headers define it.
type abi struct {
	name string
	// long is sizeof(long) == sizeof(size_t): width of cmsg_len and the
	// CMSG_ALIGN unit.
	long  int
	order binary.ByteOrder
	// solSocket, scmLinear and scmDMABuf come from the arch's
	// asm/socket.h.
	solSocket, scmLinear, scmDMABuf uint32
}

var (
	abiAMD64   = abi{"amd64", 8, binary.LittleEndian, 1, 78, 79}
	abiS390X   = abi{"s390x", 8, binary.BigEndian, 1, 78, 79}
	abi386     = abi{"386", 4, binary.LittleEndian, 1, 78, 79}
	abiMIPS    = abi{"mips", 4, binary.BigEndian, 0xffff, 78, 79}
	abiMIPS64  = abi{"mips64le", 8, binary.LittleEndian, 0xffff, 78, 79}
	abiSPARC64 = abi{"sparc64", 8, binary.BigEndian, 0xffff, 0x57, 0x58}
	abiPARISC  = abi{"parisc", 4, binary.BigEndian, 0xffff, 0x404e, 0x404f}
)

func (a abi) layout() cmsgLayout {
	return cmsgLayout{
		wordSize:  a.long,
		bigEndian: a.order == binary.BigEndian,
		level:     a.solSocket,
		linear:    a.scmLinear,
		dmabuf:    a.scmDMABuf,
	}
}

// cmsgAlign is CMSG_ALIGN.
func (a abi) cmsgAlign(n int) int { return (n + a.long - 1) / a.long * a.long }

// cmsg encodes one struct cmsghdr {size_t cmsg_len; int cmsg_level; int
// cmsg_type;} followed by data, padded to CMSG_SPACE unless nopad (the
// kernel clamps the last cmsg's padding to the buffer).
func (a abi) cmsg(level, typ uint32, data []byte, nopad bool) []byte {
	hdr := a.cmsgAlign(a.long + 4 + 4)
	b := make([]byte, hdr, hdr+a.cmsgAlign(len(data)))
	if a.long == 8 {
		a.order.PutUint64(b, uint64(hdr+len(data)))
	} else {
		a.order.PutUint32(b, uint32(hdr+len(data)))
	}
	a.order.PutUint32(b[a.long:], level)
	a.order.PutUint32(b[a.long+4:], typ)
	b = append(b, data...)
	if !nopad {
		b = append(b, make([]byte, a.cmsgAlign(len(data))-len(data))...)
	}
	return b
}

// dmabufCmsg encodes struct dmabuf_cmsg {__u64 frag_offset; __u32
// frag_size; __u32 frag_token; __u32 dmabuf_id; __u32 flags;}.
func (a abi) dmabufCmsg(off uint64, size, token, id uint32) []byte {
	b := make([]byte, 24)
	a.order.PutUint64(b[0:], off)
	a.order.PutUint32(b[8:], size)
	a.order.PutUint32(b[12:], token)
	a.order.PutUint32(b[16:], id)
	a.order.PutUint32(b[20:], 0)
	return b
}

func (a abi) dmabuf(off uint64, size, token, id uint32) []byte {
	return a.cmsg(a.solSocket, a.scmDMABuf, a.dmabufCmsg(off, size, token, id), false)
}

func (a abi) linear(size uint32) []byte {
	return a.cmsg(a.solSocket, a.scmLinear, a.dmabufCmsg(0, size, 0, 0), false)
}

// timestamp is an SO_TIMESTAMPNS_OLD cmsg (type 35, struct timespec), a
// foreign cmsg at level SOL_SOCKET.
func (a abi) timestamp() []byte {
	return a.cmsg(a.solSocket, 35, make([]byte, 2*a.long), false)
}

// recverr is an IP_RECVERR cmsg (SOL_IP = 0, type 11, struct
// sock_extended_err: 16 bytes): a foreign cmsg at another level.
func (a abi) recverr() []byte { return a.cmsg(0, 11, make([]byte, 16), false) }

// hdrWithLen encodes a bare cmsghdr with any cmsg_len, for malformed
// cases.
func (a abi) hdrWithLen(cmsgLen uint64, level, typ uint32) []byte {
	b := make([]byte, a.long+8)
	if a.long == 8 {
		a.order.PutUint64(b, cmsgLen)
	} else {
		a.order.PutUint32(b, uint32(cmsgLen))
	}
	a.order.PutUint32(b[a.long:], level)
	a.order.PutUint32(b[a.long+4:], typ)
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

type goldenCase struct {
	name    string
	abi     abi
	blob    func(a abi) []byte
	cap     int // len of the []Frag; 0 means 16
	want    []Frag
	wantErr error
}

func dm(off uint64, size, token, id uint32) Frag {
	return Frag{Kind: FragDMABuf, Offset: off, Size: size, Token: token, DMABufID: id}
}

func lin(off uint64, size uint32) Frag { return Frag{Kind: FragLinear, Offset: off, Size: size} }

// Per-ABI cases built from the same recipes.
var recipes = []struct {
	name    string
	blob    func(a abi) []byte
	cap     int
	want    []Frag
	wantErr error
}{
	{
		name: "dmabuf",
		blob: func(a abi) []byte {
			return cat(a.dmabuf(0, 4096, 1, 7), a.dmabuf(4096, 4096, 2, 7), a.dmabuf(1<<33+12, 1448, 3, 7))
		},
		want: []Frag{dm(0, 4096, 1, 7), dm(4096, 4096, 2, 7), dm(1<<33+12, 1448, 3, 7)},
	},
	{
		name: "linear-dmabuf",
		blob: func(a abi) []byte {
			return cat(a.linear(66), a.dmabuf(8192, 1000, 5, 2), a.linear(34), a.dmabuf(12288, 2000, 6, 3))
		},
		want: []Frag{lin(0, 66), dm(8192, 1000, 5, 2), lin(66, 34), dm(12288, 2000, 6, 3)},
	},
	{
		name: "foreign",
		blob: func(a abi) []byte {
			return cat(
				a.timestamp(),
				a.dmabuf(0, 100, 9, 1),
				a.recverr(),
				// Devmem type numbers at another level are foreign.
				a.cmsg(0, a.scmDMABuf, make([]byte, 24), false),
				a.cmsg(a.solSocket, 1234, []byte{1, 2, 3, 4, 5}, false),
				a.dmabuf(4096, 200, 10, 1),
				// The last cmsg's padding is clamped away.
				a.cmsg(a.solSocket, 1234, []byte{1, 2, 3}, true),
			)
		},
		want: []Frag{dm(0, 100, 9, 1), dm(4096, 200, 10, 1)},
	},
	{
		name:    "too-many",
		blob:    func(a abi) []byte { return cat(a.dmabuf(0, 1, 1, 1), a.dmabuf(1, 1, 2, 1), a.dmabuf(2, 1, 3, 1)) },
		cap:     2,
		want:    []Frag{dm(0, 1, 1, 1), dm(1, 1, 2, 1)},
		wantErr: ErrTooManyFrags,
	},
	{
		name:    "short-len",
		blob:    func(a abi) []byte { return cat(a.dmabuf(0, 1, 1, 1), a.hdrWithLen(uint64(a.long), 1, 1)) },
		want:    []Frag{dm(0, 1, 1, 1)},
		wantErr: ErrMalformedControl,
	},
	{
		name:    "long-len",
		blob:    func(a abi) []byte { return cat(a.dmabuf(0, 1, 1, 1), a.hdrWithLen(1000, a.solSocket, a.scmDMABuf)) },
		want:    []Frag{dm(0, 1, 1, 1)},
		wantErr: ErrMalformedControl,
	},
	{
		name:    "huge-len",
		blob:    func(a abi) []byte { return a.hdrWithLen(1<<32|40, a.solSocket, a.scmDMABuf) },
		wantErr: ErrMalformedControl,
	},
	{
		name: "short-payload",
		blob: func(a abi) []byte {
			return cat(a.dmabuf(0, 1, 1, 1), a.cmsg(a.solSocket, a.scmDMABuf, make([]byte, 20), false))
		},
		want:    []Frag{dm(0, 1, 1, 1)},
		wantErr: ErrMalformedControl,
	},
	{
		name:    "long-linear-payload",
		blob:    func(a abi) []byte { return a.cmsg(a.solSocket, a.scmLinear, make([]byte, 32), false) },
		wantErr: ErrMalformedControl,
	},
	{
		name:    "truncated-header",
		blob:    func(a abi) []byte { return cat(a.dmabuf(0, 1, 1, 1), make([]byte, a.long+7)) },
		want:    []Frag{dm(0, 1, 1, 1)},
		wantErr: ErrMalformedControl,
	},
	{
		name:    "truncated-payload",
		blob:    func(a abi) []byte { b := a.dmabuf(0, 1, 1, 1); return b[:len(b)-4] },
		wantErr: ErrMalformedControl,
	},
	{
		name: "empty",
		blob: func(a abi) []byte { return nil },
	},
}

var goldenABIs = []abi{abiAMD64, abiS390X, abi386, abiMIPS, abiMIPS64, abiSPARC64, abiPARISC}

func goldenCases() []goldenCase {
	var cs []goldenCase
	for _, a := range goldenABIs {
		for _, r := range recipes {
			cs = append(cs, goldenCase{name: a.name + "-" + r.name, abi: a, blob: r.blob, cap: r.cap, want: r.want, wantErr: r.wantErr})
		}
	}
	return cs
}

func goldenPath(name string) string { return filepath.Join("testdata", "cmsg", name+".bin") }

func TestControlGolden(t *testing.T) {
	for _, c := range goldenCases() {
		t.Run(c.name, func(t *testing.T) {
			built := c.blob(c.abi)
			path := goldenPath(c.name)
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, built, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			blob, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestControlGolden -update)", err)
			}
			if !bytes.Equal(blob, built) {
				t.Fatalf("%s differs from the builder's output (run go test -run TestControlGolden -update)", path)
			}
			capacity := c.cap
			if capacity == 0 {
				capacity = 16
			}
			frags := make([]Frag, capacity)
			n, err := parseControl(c.abi.layout(), blob, frags)
			if !errors.Is(err, c.wantErr) || (err == nil) != (c.wantErr == nil) {
				t.Fatalf("err = %v, want %v", err, c.wantErr)
			}
			if diff := cmp.Diff(c.want, frags[:n], cmpopts.EquateEmpty(), cmp.AllowUnexported(Frag{})); diff != "" {
				t.Fatalf("frags (-want +got):\n%s", diff)
			}
			// Another ABI's level or type numbers never match by accident
			// where they differ: parsing with the wrong layout must not
			// panic.
			for _, other := range goldenABIs {
				parseControl(other.layout(), blob, frags)
			}
		})
	}
}

// TestMaxFrags checks the sizing against the kernel's rule
// (put_cmsg_notrunc, then put_cmsg or put_cmsg_compat): a devmem message is
// written while msg_controllen is at least the kernel's CMSG_LEN(24), and
// takes CMSG_SPACE(24) of the program's ABI.
func TestMaxFrags(t *testing.T) {
	for _, tc := range []struct {
		name        string
		need, space int
	}{
		{"64-bit", 40, 40},
		{"32-bit", 36, 36},
		{"32-bit on a 64-bit kernel", 40, 36},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.space != devmemCmsgSpace {
				t.Skipf("this program's cmsg space is %d", devmemCmsgSpace)
			}
			defer func(old int) { devmemCmsgNeed = old }(devmemCmsgNeed)
			devmemCmsgNeed = tc.need
			kernelFills := func(controllen int) int {
				n := 0
				for controllen >= tc.need {
					controllen -= tc.space
					n++
				}
				return n
			}
			for c := -1; c < 3000; c++ {
				if got, want := MaxFrags(c), kernelFills(c); got != want {
					t.Fatalf("MaxFrags(%d) = %d, the kernel fills %d", c, got, want)
				}
			}
			for k := 1; k < 100; k++ {
				if got := kernelFills(controlLen(k)); got != k {
					t.Fatalf("controlLen(%d) = %d holds %d messages", k, controlLen(k), got)
				}
			}
		})
	}
}
