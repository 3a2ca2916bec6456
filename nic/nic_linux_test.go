//go:build linux

package nic

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"testing"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/devmem-go/devmem/internal/errs"
)

func nlU32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }

// nlAttr builds one attribute by hand, so expectations do not lean on the
// encoder under test.
func nlAttr(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nlCat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func genlReply(cmd uint8, attrs ...[]byte) []genetlink.Message {
	return []genetlink.Message{{Header: genetlink.Header{Command: cmd, Version: 1}, Data: nlCat(attrs...)}}
}

const testEthtoolFamilyID = 0x15

var testEthtoolFamily = genetlink.Family{ID: testEthtoolFamilyID, Version: 1, Name: "ethtool"}

// testNIC returns a NIC over a fake ethtool family served by fn and a fake
// SIOCETHTOOL handled by ioctl.
func testNIC(t *testing.T, fn genltest.Func, ioctl func(name string, buf []byte) error) *NIC {
	t.Helper()
	c := &nicConn{
		name: "eth7", ifindex: 7, fd: -1, layout: nativeRxnfcLayout(),
		genl: genltest.Dial(genltest.ServeFamily(testEthtoolFamily, fn)),
		fam:  genlFamily{id: testEthtoolFamilyID, version: 1},
		ioctl: func(_ int, ifr *ifreqData, buf []byte) error {
			name := string(ifr.name[:])
			for i, ch := range name {
				if ch == 0 {
					name = name[:i]
					break
				}
			}
			if ifr.data != unsafe.Pointer(&buf[0]) {
				t.Errorf("ifr.data does not point at the command buffer")
			}
			return ioctl(name, buf)
		},
	}
	return &NIC{name: "eth7", ifindex: 7, c: c}
}

var ethHeader = nlAttr(1|unix.NLA_F_NESTED, nlAttr(unix.ETHTOOL_A_HEADER_DEV_INDEX, nlU32(7)))

func TestRings(t *testing.T) {
	var reqs []genetlink.Message
	nic := testNIC(t, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		reqs = append(reqs, greq)
		if greq.Header.Command == unix.ETHTOOL_MSG_RINGS_GET {
			return genlReply(unix.ETHTOOL_MSG_RINGS_GET_REPLY, ethHeader,
				nlAttr(unix.ETHTOOL_A_RINGS_RX_MAX, nlU32(4096)), nlAttr(unix.ETHTOOL_A_RINGS_RX, nlU32(1024)),
				nlAttr(unix.ETHTOOL_A_RINGS_TCP_DATA_SPLIT, []byte{2}),
				nlAttr(unix.ETHTOOL_A_RINGS_HDS_THRESH, nlU32(0)), nlAttr(unix.ETHTOOL_A_RINGS_HDS_THRESH_MAX, nlU32(1024))), nil
		}
		if nreq.Header.Flags&netlink.Acknowledge == 0 {
			t.Errorf("set without ack: %v", nreq.Header.Flags)
		}
		return nil, genltest.Error(0) // the ack
	}, nil)

	r, err := nic.Rings()
	if err != nil {
		t.Fatal(err)
	}
	want := &Rings{RX: 1024, RXMax: 4096, TCPDataSplit: TCPDataSplitEnabled, HDSThreshMax: 1024, HasHDSThresh: true}
	if diff := cmp.Diff(want, r); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if err := nic.SetTCPDataSplit(TCPDataSplitEnabled); err != nil {
		t.Fatal(err)
	}
	if err := nic.SetHDSThresh(0); err != nil {
		t.Fatal(err)
	}
	wantReqs := []genetlink.Message{
		{Header: genetlink.Header{Command: unix.ETHTOOL_MSG_RINGS_GET, Version: 1}, Data: ethHeader},
		// Split and threshold go in separate requests.
		{Header: genetlink.Header{Command: unix.ETHTOOL_MSG_RINGS_SET, Version: 1},
			Data: nlCat(ethHeader, nlAttr(unix.ETHTOOL_A_RINGS_TCP_DATA_SPLIT, []byte{2}))},
		{Header: genetlink.Header{Command: unix.ETHTOOL_MSG_RINGS_SET, Version: 1},
			Data: nlCat(ethHeader, nlAttr(unix.ETHTOOL_A_RINGS_HDS_THRESH, nlU32(0)))},
	}
	if diff := cmp.Diff(wantReqs, reqs); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestChannels(t *testing.T) {
	var reqs []genetlink.Message
	nic := testNIC(t, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		reqs = append(reqs, greq)
		if greq.Header.Command == unix.ETHTOOL_MSG_CHANNELS_GET {
			return genlReply(unix.ETHTOOL_MSG_CHANNELS_GET_REPLY, ethHeader,
				nlAttr(unix.ETHTOOL_A_CHANNELS_RX_MAX, nlU32(8)), nlAttr(unix.ETHTOOL_A_CHANNELS_COMBINED_MAX, nlU32(16)),
				nlAttr(unix.ETHTOOL_A_CHANNELS_RX_COUNT, nlU32(2)), nlAttr(unix.ETHTOOL_A_CHANNELS_COMBINED_COUNT, nlU32(4))), nil
		}
		return nil, genltest.Error(0)
	}, nil)
	ch, err := nic.Channels()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&Channels{RX: 2, Combined: 4, MaxRX: 8, MaxCombined: 16}, ch); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if ch.RXQueues() != 6 {
		t.Errorf("RXQueues %d, want 6", ch.RXQueues())
	}
	combined := uint32(2)
	if err := nic.SetChannels(ChannelsUpdate{Combined: &combined}); err != nil {
		t.Fatal(err)
	}
	want := nlCat(ethHeader, nlAttr(unix.ETHTOOL_A_CHANNELS_COMBINED_COUNT, nlU32(2)))
	if diff := cmp.Diff(want, reqs[1].Data); diff != "" || reqs[1].Header.Command != unix.ETHTOOL_MSG_CHANNELS_SET {
		t.Errorf("set request %d (-want +got):\n%s", reqs[1].Header.Command, diff)
	}
}

func TestEthtoolErrors(t *testing.T) {
	nic := testNIC(t, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, &netlink.OpError{Op: "receive", Err: unix.EINVAL, Message: "can't disable tcp-data-split while device has memory provider enabled"}
	}, func(string, []byte) error { return unix.EOPNOTSUPP })
	err := nic.SetTCPDataSplit(TCPDataSplitDisabled)
	var e *errs.Error
	if !errors.As(err, &e) || e.Op != "rings-set" || e.Errno != unix.EINVAL || e.Message == "" {
		t.Errorf("rings-set error %#v", err)
	}
	if _, err := nic.RSSIndirection(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("RSS on a driver without it: %v", err)
	}
}

func TestEthtoolFamilyMissing(t *testing.T) {
	old := dialGenl
	dialGenl = func() (genlConn, error) {
		return genltest.Dial(func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
			return nil, genltest.Error(int(unix.ENOENT))
		}), nil
	}
	defer func() { dialGenl = old }()
	c, err := newNICConn("lo", 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	if _, err := c.rings(); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("rings without the ethtool family: %v", err)
	}
}

// putRxnfcWant writes expected bytes at an offset.
func le32(b []byte, off int, v uint32) { binary.NativeEndian.PutUint32(b[off:], v) }
func le64(b []byte, off int, v uint64) { binary.NativeEndian.PutUint64(b[off:], v) }

func TestRxnfcLayouts(t *testing.T) {
	// Offsets from include/uapi/linux/ethtool.h, checked with offsetof() on
	// x86-64 gcc: fs at 16, h_u 20, h_ext 72, m_u 92, m_ext 144,
	// ring_cookie 168, location 176, rule_cnt 184, rule_locs 188, size 192.
	// On i386 __u64 is 4-aligned: ring_cookie 164, location 172, rule_cnt
	// 176, rule_locs 180, size 180.
	if fsHU != 20 || fsHExt != 72 || fsMU != 92 || fsMExt != 144 {
		t.Fatalf("fixed offsets %d %d %d %d", fsHU, fsHExt, fsMU, fsMExt)
	}
	for _, tt := range []struct {
		name string
		l    rxnfcLayout
	}{{"64", rxnfcLayout64}, {"386", rxnfcLayout386}} {
		t.Run(tt.name, func(t *testing.T) {
			r := FlowRule{
				Type: FlowTCP4, Src: netip.MustParseAddr("192.0.2.1"), Dst: netip.MustParseAddr("192.0.2.2"),
				SrcPort: 0x1234, DstPort: 5201, Queue: 15,
			}
			b := tt.l.newRxnfc(unix.ETHTOOL_SRXCLSRLINS, 0)
			if len(b) != tt.l.size {
				t.Fatalf("size %d", len(b))
			}
			if err := tt.l.encodeFlowRule(b, r, _RX_CLS_LOC_ANY); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, tt.l.size)
			le32(want, 0, unix.ETHTOOL_SRXCLSRLINS)
			le32(want, 16, uint32(unix.TCP_V4_FLOW))
			copy(want[20:], []byte{192, 0, 2, 1, 192, 0, 2, 2, 0x12, 0x34, 0x14, 0x51})
			copy(want[92:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
			le64(want, tt.l.ringCookie, 15)
			le32(want, tt.l.location, 0xffffffff)
			if diff := cmp.Diff(want, b); diff != "" {
				t.Errorf("SRXCLSRLINS (-want +got):\n%s", diff)
			}
			le32(b, tt.l.location, 3)
			got, ok := tt.l.decodeFlowRule(b)
			r.Location = 3
			if !ok || got != r {
				t.Errorf("round trip: %+v %v, want %+v", got, ok, r)
			}

			r6 := FlowRule{Type: FlowTCP6, Dst: netip.MustParseAddr("2001:db8::1"), DstPort: 80, Queue: QueueDrop}
			b = tt.l.newRxnfc(unix.ETHTOOL_SRXCLSRLINS, 0)
			if err := tt.l.encodeFlowRule(b, r6, 9); err != nil {
				t.Fatal(err)
			}
			want = make([]byte, tt.l.size)
			le32(want, 0, unix.ETHTOOL_SRXCLSRLINS)
			le32(want, 16, uint32(unix.TCP_V6_FLOW))
			copy(want[20+16:], netip.MustParseAddr("2001:db8::1").AsSlice())
			copy(want[20+34:], []byte{0, 80})
			for i := range 16 {
				want[92+16+i] = 0xff
			}
			copy(want[92+34:], []byte{0xff, 0xff})
			le64(want, tt.l.ringCookie, ^uint64(0))
			le32(want, tt.l.location, 9)
			if diff := cmp.Diff(want, b); diff != "" {
				t.Errorf("tcp6 (-want +got):\n%s", diff)
			}
			got, ok = tt.l.decodeFlowRule(b)
			r6.Location = 9
			if !ok || got != r6 {
				t.Errorf("round trip: %+v %v, want %+v", got, ok, r6)
			}

			if err := tt.l.encodeFlowRule(tt.l.newRxnfc(0, 0), FlowRule{Type: FlowTCP4, Dst: netip.MustParseAddr("::1")}, 0); err == nil {
				t.Error("IPv6 address accepted in a tcp4 rule")
			}
			if n := len(tt.l.newRxnfc(unix.ETHTOOL_GRXCLSRLALL, 5)); n != max(tt.l.size, tt.l.ruleLocs+20) {
				t.Errorf("GRXCLSRLALL buffer %d", n)
			}
		})
	}
	if unsafe.Sizeof(uintptr(0)) == 8 && nativeRxnfcLayout() != rxnfcLayout64 {
		t.Error("64-bit native layout")
	}
}

// fakeRules is a driver rule table behind a fake SIOCETHTOOL.
type fakeRules struct {
	l       rxnfcLayout
	size    uint32 // table size; RX_CLS_LOC_SPECIAL allowed
	rules   map[uint32][]byte
	indir   []uint32
	flags   uint32
	t       *testing.T
	nextAny uint32
}

func (f *fakeRules) ioctl(name string, buf []byte) error {
	if name != "eth7" {
		f.t.Errorf("ioctl on %q", name)
	}
	ne := binary.NativeEndian
	switch cmd := ne.Uint32(buf); cmd {
	case unix.ETHTOOL_GRXCLSRLCNT:
		ne.PutUint32(buf[f.l.ruleCnt:], uint32(len(f.rules)))
		ne.PutUint64(buf[rxnfcData:], uint64(f.size))
	case unix.ETHTOOL_GRXCLSRLALL:
		n := 0
		for loc := range uint32(64) {
			if _, ok := f.rules[loc]; ok {
				ne.PutUint32(buf[f.l.ruleLocs+4*n:], loc)
				n++
			}
		}
		ne.PutUint32(buf[f.l.ruleCnt:], uint32(n))
	case unix.ETHTOOL_GRXCLSRULE:
		r, ok := f.rules[ne.Uint32(buf[f.l.location:])]
		if !ok {
			return unix.ENOENT
		}
		copy(buf, r)
	case unix.ETHTOOL_SRXCLSRLINS:
		loc := ne.Uint32(buf[f.l.location:])
		if loc == _RX_CLS_LOC_ANY {
			loc = f.nextAny
			ne.PutUint32(buf[f.l.location:], loc)
		}
		f.rules[loc] = append([]byte(nil), buf[:f.l.size]...)
	case unix.ETHTOOL_SRXCLSRLDEL:
		delete(f.rules, ne.Uint32(buf[f.l.location:]))
	case unix.ETHTOOL_GRXFHINDIR:
		size := ne.Uint32(buf[4:])
		if size == 0 {
			ne.PutUint32(buf[4:], uint32(len(f.indir)))
			return nil
		}
		for i, q := range f.indir {
			ne.PutUint32(buf[8+4*i:], q)
		}
	case unix.ETHTOOL_SRXFHINDIR:
		size := ne.Uint32(buf[4:])
		if size == 0 {
			for i := range f.indir {
				f.indir[i] = uint32(i % 4)
			}
			return nil
		}
		for i := range f.indir {
			f.indir[i] = ne.Uint32(buf[8+4*i:])
		}
	case unix.ETHTOOL_GFLAGS:
		ne.PutUint32(buf[4:], f.flags)
	case unix.ETHTOOL_SFLAGS:
		f.flags = ne.Uint32(buf[4:])
	default:
		f.t.Errorf("unexpected ethtool cmd %#x", cmd)
		return unix.EOPNOTSUPP
	}
	return nil
}

// fakeRings serves rings and channels with mutable state.
type fakeRings struct {
	split     uint8
	hds       uint32
	combined  uint32
	splitSets []uint8
}

func (f *fakeRings) serve(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
	switch greq.Header.Command {
	case unix.ETHTOOL_MSG_RINGS_GET:
		return genlReply(unix.ETHTOOL_MSG_RINGS_GET_REPLY, ethHeader,
			nlAttr(unix.ETHTOOL_A_RINGS_TCP_DATA_SPLIT, []byte{f.split}), nlAttr(unix.ETHTOOL_A_RINGS_HDS_THRESH, nlU32(f.hds))), nil
	case unix.ETHTOOL_MSG_CHANNELS_GET:
		return genlReply(unix.ETHTOOL_MSG_CHANNELS_GET_REPLY, ethHeader,
			nlAttr(unix.ETHTOOL_A_CHANNELS_COMBINED_COUNT, nlU32(f.combined)), nlAttr(unix.ETHTOOL_A_CHANNELS_COMBINED_MAX, nlU32(8))), nil
	case unix.ETHTOOL_MSG_RINGS_SET, unix.ETHTOOL_MSG_CHANNELS_SET:
		err := decode(greq.Data, func(ad *netlink.AttributeDecoder) {
			switch {
			case greq.Header.Command == unix.ETHTOOL_MSG_CHANNELS_SET && ad.Type() == unix.ETHTOOL_A_CHANNELS_COMBINED_COUNT:
				f.combined = ad.Uint32()
			case greq.Header.Command == unix.ETHTOOL_MSG_RINGS_SET && ad.Type() == unix.ETHTOOL_A_RINGS_TCP_DATA_SPLIT:
				v := ad.Uint8()
				f.splitSets = append(f.splitSets, v)
				// This driver's "auto" is off.
				if v == 0 {
					v = 1
				}
				f.split = v
			case greq.Header.Command == unix.ETHTOOL_MSG_RINGS_SET && ad.Type() == unix.ETHTOOL_A_RINGS_HDS_THRESH:
				f.hds = ad.Uint32()
			}
		})
		if err != nil {
			return nil, err
		}
		return nil, genltest.Error(0) // the ack
	}
	return nil, genltest.Error(int(unix.EOPNOTSUPP))
}

func TestOpenMissing(t *testing.T) {
	_, err := Open("devmem-no-such-if0")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("OpenNIC of a missing interface: %v", err)
	}
}

// TestSetupOverEthtool runs a devmem setup and its undo through the real
// request encoding (ethtool netlink and SIOCETHTOOL) against fake drivers,
// including the split restore sequence ncdevmem uses.
func TestSetupOverEthtool(t *testing.T) {
	l := nativeRxnfcLayout()
	rules := &fakeRules{l: l, size: 64, rules: map[uint32][]byte{}, indir: make([]uint32, 16), t: t}
	for i := range rules.indir {
		rules.indir[i] = uint32(i % 4)
	}
	rings := &fakeRings{split: 2, hds: 256, combined: 4}
	n := testNIC(t, rings.serve, rules.ioctl)

	// A rule that predates us, at location 5.
	if loc, err := n.c.addFlowRule(FlowRule{Location: 5, Type: FlowTCP4, DstPort: 22}, true); err != nil || loc != 5 {
		t.Fatalf("seed rule: %d %v", loc, err)
	}
	before := mustState(t, n)

	s, err := NewSetup(n, &SetupOptions{JournalDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnableHeaderSplit(); err != nil {
		t.Fatal(err)
	}
	if err := s.SteerRSSAway(3); err != nil {
		t.Fatal(err)
	}
	if rules.indir[3] != 0 || rules.indir[4] != 1 {
		t.Errorf("equal 3: %v", rules.indir)
	}
	loc, err := s.AddFlowRule(FlowRule{Type: FlowTCP6, Dst: netip.MustParseAddr("2001:db8::2"), DstPort: 5201, Queue: 3})
	if err != nil {
		t.Fatal(err)
	}
	if loc != 63 {
		t.Errorf("picked location %d, want the last free one (63)", loc)
	}
	got, err := n.FlowRules()
	if err != nil || len(got) != 2 || got[1].Queue != 3 || got[1].DstPort != 5201 {
		t.Fatalf("rules %+v %v", got, err)
	}
	if rules.flags&_ETH_FLAG_NTUPLE == 0 || rings.hds != 0 {
		t.Errorf("flags %#x hds %d", rules.flags, rings.hds)
	}
	rings.splitSets = nil
	if err := s.Undo(); err != nil {
		t.Fatal(err)
	}
	if after := mustState(t, n); !after.Equal(before) {
		t.Errorf("before %v\nafter  %v", before, after)
	}
	if len(rules.rules) != 1 || rules.rules[5] == nil {
		t.Errorf("rules after undo: %v", rules.rules)
	}
	// Unknown first (this driver's auto is off), then the explicit old
	// value.
	if diff := cmp.Diff([]uint8{0, 2}, rings.splitSets); diff != "" {
		t.Errorf("split restore sequence (-want +got):\n%s", diff)
	}

	// The driver picks the location when it can.
	rules.size = 64 | _RX_CLS_LOC_SPECIAL
	rules.nextAny = 17
	rules.flags |= _ETH_FLAG_NTUPLE
	if loc, err := n.AddFlowRule(FlowRule{Type: FlowTCP4, DstPort: 1, Queue: 1}); err != nil || loc != 17 {
		t.Errorf("RX_CLS_LOC_ANY insert: %d %v", loc, err)
	}
}
