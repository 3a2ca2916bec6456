//go:build linux

package nic

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"

	"golang.org/x/sys/unix"
)

// The flags of include/uapi/linux/ethtool.h that x/sys lacks (it has the
// ETHTOOL_* command numbers and the *_FLOW types, used from there).
const (
	_ETH_FLAG_NTUPLE = 1 << 27

	_FLOW_EXT     = 0x80000000
	_FLOW_MAC_EXT = 0x40000000
	_FLOW_RSS     = 0x20000000

	_RX_CLS_FLOW_DISC   = 0xffffffffffffffff
	_RX_CLS_LOC_SPECIAL = 0x80000000
	_RX_CLS_LOC_ANY     = 0xffffffff
)

// rxnfcLayout holds the offsets of struct ethtool_rxnfc that depend on the
// alignment of __u64: 8 on every Linux ABI Go supports except 386, where
// it is 4 and the struct shrinks from 192 to 180 bytes. Go's own struct
// layout cannot be used: Go aligns uint64 to 4 on arm and mips too, where C
// aligns it to 8.
type rxnfcLayout struct {
	size       int // sizeof(struct ethtool_rxnfc)
	ringCookie int // fs.ring_cookie
	location   int // fs.location
	ruleCnt    int // rule_cnt / rss_context
	ruleLocs   int // rule_locs[]
}

// Offsets that are the same everywhere.
const (
	rxnfcCmd      = 0
	rxnfcFlowType = 4
	rxnfcData     = 8  // __u64, 4-aligned anyway
	rxnfcFS       = 16 // struct ethtool_rx_flow_spec
	fsFlowType    = rxnfcFS + 0
	fsHU          = rxnfcFS + 4  // union ethtool_flow_union, 52 bytes
	fsHExt        = rxnfcFS + 56 // struct ethtool_flow_ext, 20 bytes
	fsMU          = rxnfcFS + 76
	fsMExt        = rxnfcFS + 128

	// struct ethtool_tcpip4_spec within the union.
	ip4Src     = 0
	ip4Dst     = 4
	ip4SrcPort = 8
	ip4DstPort = 10
	// struct ethtool_tcpip6_spec within the union.
	ip6Src     = 0
	ip6Dst     = 16
	ip6SrcPort = 32
	ip6DstPort = 34
)

var (
	rxnfcLayout64  = rxnfcLayout{size: 192, ringCookie: 168, location: 176, ruleCnt: 184, ruleLocs: 188}
	rxnfcLayout386 = rxnfcLayout{size: 180, ringCookie: 164, location: 172, ruleCnt: 176, ruleLocs: 180}
)

func nativeRxnfcLayout() rxnfcLayout {
	if runtime.GOARCH == "386" {
		return rxnfcLayout386
	}
	return rxnfcLayout64
}

// newRxnfc returns a zeroed struct ethtool_rxnfc for cmd, with room for
// nlocs rule locations.
func (l rxnfcLayout) newRxnfc(cmd uint32, nlocs int) []byte {
	b := make([]byte, max(l.size, l.ruleLocs+4*nlocs))
	binary.NativeEndian.PutUint32(b[rxnfcCmd:], cmd)
	return b
}

// encodeFlowRule writes r into the flow spec of rxnfc b, at location loc.
// The mask (m_u) has every bit set for each field r constrains.
func (l rxnfcLayout) encodeFlowRule(b []byte, r FlowRule, loc uint32) error {
	ne := binary.NativeEndian
	be := binary.BigEndian
	ne.PutUint32(b[fsFlowType:], uint32(r.Type))
	putAddr := func(off, size int, a netip.Addr) error {
		if !a.IsValid() {
			return nil
		}
		a = a.Unmap()
		if (size == 4) != a.Is4() {
			return fmt.Errorf("address %v does not fit a %v rule", a, r.Type)
		}
		raw := a.AsSlice()
		copy(b[fsHU+off:], raw)
		for i := range size {
			b[fsMU+off+i] = 0xff
		}
		return nil
	}
	putPort := func(off int, p uint16) {
		if p == 0 {
			return
		}
		be.PutUint16(b[fsHU+off:], p)
		be.PutUint16(b[fsMU+off:], 0xffff)
	}
	switch r.Type {
	case FlowTCP4:
		if err := putAddr(ip4Src, 4, r.Src); err != nil {
			return err
		}
		if err := putAddr(ip4Dst, 4, r.Dst); err != nil {
			return err
		}
		putPort(ip4SrcPort, r.SrcPort)
		putPort(ip4DstPort, r.DstPort)
	case FlowTCP6:
		if err := putAddr(ip6Src, 16, r.Src); err != nil {
			return err
		}
		if err := putAddr(ip6Dst, 16, r.Dst); err != nil {
			return err
		}
		putPort(ip6SrcPort, r.SrcPort)
		putPort(ip6DstPort, r.DstPort)
	default:
		return fmt.Errorf("unsupported flow type %v", r.Type)
	}
	cookie := uint64(r.Queue)
	if r.Queue == QueueDrop {
		cookie = _RX_CLS_FLOW_DISC
	} else if r.Queue < 0 {
		return fmt.Errorf("bad queue %d", r.Queue)
	}
	ne.PutUint64(b[l.ringCookie:], cookie)
	ne.PutUint32(b[l.location:], loc)
	return nil
}

// decodeFlowRule reads the flow spec of rxnfc b. ok is false for rules this
// package does not model (other flow types, extensions, RSS contexts); they
// are still listed, with only Location and Queue set.
func (l rxnfcLayout) decodeFlowRule(b []byte) (r FlowRule, ok bool) {
	ne := binary.NativeEndian
	be := binary.BigEndian
	ft := ne.Uint32(b[fsFlowType:])
	r.Location = ne.Uint32(b[l.location:])
	cookie := ne.Uint64(b[l.ringCookie:])
	if cookie == _RX_CLS_FLOW_DISC {
		r.Queue = QueueDrop
	} else {
		// The low 32 bits are the queue; the high byte may name a VF.
		r.Queue = int(uint32(cookie))
	}
	r.Type = FlowType(ft &^ (_FLOW_EXT | _FLOW_MAC_EXT | _FLOW_RSS))
	getAddr := func(off, size int) netip.Addr {
		for i := range size {
			if b[fsMU+off+i] != 0 {
				a, _ := netip.AddrFromSlice(b[fsHU+off : fsHU+off+size])
				return a
			}
		}
		return netip.Addr{}
	}
	getPort := func(off int) uint16 {
		if be.Uint16(b[fsMU+off:]) == 0 {
			return 0
		}
		return be.Uint16(b[fsHU+off:])
	}
	switch r.Type {
	case FlowTCP4:
		r.Src, r.Dst = getAddr(ip4Src, 4), getAddr(ip4Dst, 4)
		r.SrcPort, r.DstPort = getPort(ip4SrcPort), getPort(ip4DstPort)
	case FlowTCP6:
		r.Src, r.Dst = getAddr(ip6Src, 16), getAddr(ip6Dst, 16)
		r.SrcPort, r.DstPort = getPort(ip6SrcPort), getPort(ip6DstPort)
	default:
		return r, false
	}
	return r, ft&(_FLOW_EXT|_FLOW_MAC_EXT|_FLOW_RSS) == 0
}

// The exported flow types are x/sys's numbers (they are spelled out in the
// OS-neutral file, where x/sys/unix is not available).
var _ = [1]struct{}{}[FlowTCP4-unix.TCP_V4_FLOW+FlowTCP6-unix.TCP_V6_FLOW]
