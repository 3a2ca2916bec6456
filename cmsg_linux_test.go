package devmem

import (
	"encoding/binary"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestNativeCmsgLayout(t *testing.T) {
	l := nativeCmsgLayout
	if got, want := l.hdrLen(), unix.SizeofCmsghdr; got != want {
		t.Errorf("header length %d, unix.SizeofCmsghdr %d", got, want)
	}
	if got, want := devmemCmsgSpace, unix.CmsgSpace(24); got != want {
		t.Errorf("devmemCmsgSpace %d, unix.CmsgSpace(24) %d", got, want)
	}
	if got, want := l.space(24), unix.CmsgLen(24); got != want {
		// CMSG_LEN(24) == CMSG_SPACE(24): 24 is a multiple of 4 and 8.
		t.Errorf("CMSG_SPACE(24) %d, unix.CmsgLen(24) %d", got, want)
	}
	var x uint16 = 1
	b := binary.NativeEndian.AppendUint16(nil, x)
	if l.bigEndian != (b[0] == 0) {
		t.Errorf("bigEndian = %v on a host that writes 1 as %v", l.bigEndian, b)
	}
}

// TestParseControlNative cross-checks ParseControl against x/sys's own
// cmsg walker on a blob built with x/sys helpers.
func TestParseControlNative(t *testing.T) {
	a := abi{"native", unix.SizeofPtr, binary.NativeEndian, unix.SOL_SOCKET, unix.SCM_DEVMEM_LINEAR, unix.SCM_DEVMEM_DMABUF}
	if nativeCmsgLayout.bigEndian {
		a.order = binary.BigEndian
	} else {
		a.order = binary.LittleEndian
	}
	blob := cat(a.linear(10), a.timestamp(), a.dmabuf(4096, 100, 1, 2), a.dmabuf(8192, 200, 2, 2))
	msgs, err := unix.ParseSocketControlMessage(blob)
	if err != nil {
		t.Fatal(err)
	}
	var want []Frag
	var linear uint64
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET {
			continue
		}
		switch m.Header.Type {
		case unix.SCM_DEVMEM_LINEAR:
			size := binary.NativeEndian.Uint32(m.Data[8:])
			want = append(want, Frag{Kind: FragLinear, Offset: linear, Size: size})
			linear += uint64(size)
		case unix.SCM_DEVMEM_DMABUF:
			want = append(want, Frag{Kind: FragDMABuf, Offset: binary.NativeEndian.Uint64(m.Data),
				Size: binary.NativeEndian.Uint32(m.Data[8:]), Token: binary.NativeEndian.Uint32(m.Data[12:]),
				DMABufID: binary.NativeEndian.Uint32(m.Data[16:])})
		}
	}
	frags := make([]Frag, len(blob)/devmemCmsgSpace)
	n, err := ParseControl(blob, frags)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, frags[:n], cmp.AllowUnexported(Frag{})); diff != "" {
		t.Fatalf("frags (-x/sys +ParseControl):\n%s", diff)
	}
}
