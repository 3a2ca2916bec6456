//go:build linux

package nic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"syscall"
	"unsafe"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/devmem-go/devmem/internal/errs"
)

// nicConn talks to one interface over ethtool generic netlink (rings,
// channels) and SIOCETHTOOL (ntuple, RSS, flags), which has no netlink
// equivalent for ntuple rules.
type nicConn struct {
	name    string
	ifindex int

	genl    genlConn // nil when the ethtool family is missing
	fam     genlFamily
	genlErr error

	fd int // socket for SIOCETHTOOL
	// layout is the ethtool_rxnfc layout of this process's ABI.
	layout rxnfcLayout
	// ioctl is the SIOCETHTOOL call, given ifr and the command buffer
	// ifr.data points to; tests replace it.
	ioctl func(fd int, ifr *ifreqData, buf []byte) error
}

// openNIC opens an interface by name or, if name is "", by index; tests
// replace it.
var openNIC = openEthtool

func openEthtool(name string, ifindex int) (*NIC, error) {
	var ifi *net.Interface
	var err error
	if name != "" {
		ifi, err = net.InterfaceByName(name)
	} else {
		ifi, err = net.InterfaceByIndex(ifindex)
	}
	if err != nil {
		return nil, &errs.Error{Op: "open nic", Errno: syscall.ENODEV, Err: err}
	}
	c, err := newNICConn(ifi.Name, ifi.Index)
	if err != nil {
		return nil, err
	}
	return &NIC{name: ifi.Name, ifindex: ifi.Index, c: c}, nil
}

func newNICConn(name string, ifindex int) (*nicConn, error) {
	// Any socket carries SIOCETHTOOL; ethtool(8) uses AF_INET and falls
	// back to generic netlink where IPv4 is compiled out.
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_GENERIC)
		if err != nil {
			return nil, &errs.Error{Op: "open nic", Errno: errnoOf(err), Err: err}
		}
	}
	c := &nicConn{name: name, ifindex: ifindex, fd: fd, layout: nativeRxnfcLayout(), ioctl: ioctlEthtool}
	g, err := dialGenl()
	if err == nil {
		// The ethtool netlink family came with Linux 5.6.
		c.fam, err = resolveFamily(g, unix.ETHTOOL_GENL_NAME, "ethtool", "5.6")
		if err != nil {
			g.Close()
		} else {
			c.genl = g
		}
	}
	if err != nil {
		c.genlErr = nlError("ethtool", err)
	}
	return c, nil
}

func (c *nicConn) close() error {
	var errs []error
	if c.genl != nil {
		errs = append(errs, c.genl.Close())
		c.genl = nil
	}
	if c.fd >= 0 {
		errs = append(errs, unix.Close(c.fd))
		c.fd = -1
	}
	return errors.Join(errs...)
}

func errnoOf(err error) syscall.Errno {
	var errno syscall.Errno
	errors.As(err, &errno)
	return errno
}

// ethtoolDo sends one ethtool netlink request for this interface: the
// request header nest names the device by index, then enc adds the rest.
func (c *nicConn) ethtoolDo(op string, cmd uint8, flags netlink.HeaderFlags, enc func(ae *netlink.AttributeEncoder), dec func(ad *netlink.AttributeDecoder)) error {
	if c.genl == nil {
		return c.genlErr
	}
	ae := netlink.NewAttributeEncoder()
	// Every ethtool message's first attribute is its header nest
	// (ETHTOOL_A_*_HEADER = 1).
	ae.Nested(1, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(unix.ETHTOOL_A_HEADER_DEV_INDEX, uint32(c.ifindex))
		return nil
	})
	if enc != nil {
		enc(ae)
	}
	b, err := ae.Encode()
	if err != nil {
		return &errs.Error{Op: op, Err: err}
	}
	msgs, err := c.genl.Execute(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: c.fam.version},
		Data:   b,
	}, c.fam.id, netlink.Request|flags)
	if err != nil {
		return nlError(op, err)
	}
	if dec != nil {
		for _, m := range msgs {
			if err := decode(m.Data, dec); err != nil {
				return &errs.Error{Op: op, Err: err}
			}
		}
	}
	return nil
}

func (c *nicConn) rings() (*Rings, error) {
	var r Rings
	err := c.ethtoolDo("rings-get", unix.ETHTOOL_MSG_RINGS_GET, 0, nil, func(ad *netlink.AttributeDecoder) {
		switch ad.Type() {
		case unix.ETHTOOL_A_RINGS_RX:
			r.RX = ad.Uint32()
		case unix.ETHTOOL_A_RINGS_RX_MAX:
			r.RXMax = ad.Uint32()
		case unix.ETHTOOL_A_RINGS_TX:
			r.TX = ad.Uint32()
		case unix.ETHTOOL_A_RINGS_TX_MAX:
			r.TXMax = ad.Uint32()
		case unix.ETHTOOL_A_RINGS_TCP_DATA_SPLIT:
			r.TCPDataSplit = TCPDataSplit(ad.Uint8())
		case unix.ETHTOOL_A_RINGS_HDS_THRESH:
			r.HDSThresh = ad.Uint32()
			r.HasHDSThresh = true
		case unix.ETHTOOL_A_RINGS_HDS_THRESH_MAX:
			r.HDSThreshMax = ad.Uint32()
		}
	})
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (c *nicConn) setRings(split *TCPDataSplit, hdsThresh *uint32) error {
	return c.ethtoolDo("rings-set", unix.ETHTOOL_MSG_RINGS_SET, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		if split != nil {
			ae.Uint8(unix.ETHTOOL_A_RINGS_TCP_DATA_SPLIT, uint8(*split))
		}
		if hdsThresh != nil {
			ae.Uint32(unix.ETHTOOL_A_RINGS_HDS_THRESH, *hdsThresh)
		}
	}, nil)
}

func (c *nicConn) channels() (*Channels, error) {
	var ch Channels
	err := c.ethtoolDo("channels-get", unix.ETHTOOL_MSG_CHANNELS_GET, 0, nil, func(ad *netlink.AttributeDecoder) {
		switch ad.Type() {
		case unix.ETHTOOL_A_CHANNELS_RX_MAX:
			ch.MaxRX = ad.Uint32()
		case unix.ETHTOOL_A_CHANNELS_TX_MAX:
			ch.MaxTX = ad.Uint32()
		case unix.ETHTOOL_A_CHANNELS_OTHER_MAX:
			ch.MaxOther = ad.Uint32()
		case unix.ETHTOOL_A_CHANNELS_COMBINED_MAX:
			ch.MaxCombined = ad.Uint32()
		case unix.ETHTOOL_A_CHANNELS_RX_COUNT:
			ch.RX = ad.Uint32()
		case unix.ETHTOOL_A_CHANNELS_TX_COUNT:
			ch.TX = ad.Uint32()
		case unix.ETHTOOL_A_CHANNELS_OTHER_COUNT:
			ch.Other = ad.Uint32()
		case unix.ETHTOOL_A_CHANNELS_COMBINED_COUNT:
			ch.Combined = ad.Uint32()
		}
	})
	if err != nil {
		return nil, err
	}
	return &ch, nil
}

func (c *nicConn) setChannels(u ChannelsUpdate) error {
	return c.ethtoolDo("channels-set", unix.ETHTOOL_MSG_CHANNELS_SET, netlink.Acknowledge, func(ae *netlink.AttributeEncoder) {
		for _, f := range []struct {
			typ uint16
			v   *uint32
		}{
			{unix.ETHTOOL_A_CHANNELS_RX_COUNT, u.RX},
			{unix.ETHTOOL_A_CHANNELS_TX_COUNT, u.TX},
			{unix.ETHTOOL_A_CHANNELS_OTHER_COUNT, u.Other},
			{unix.ETHTOOL_A_CHANNELS_COMBINED_COUNT, u.Combined},
		} {
			if f.v != nil {
				ae.Uint32(f.typ, *f.v)
			}
		}
	}, nil)
}

// ifreqData is struct ifreq with ifr_data set. The pointer is an
// unsafe.Pointer so the garbage collector keeps the buffer alive and in
// place while the kernel uses it.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte // rest of the ifreq union
}

func ioctlEthtool(fd int, ifr *ifreqData, _ []byte) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(ifr)))
	if errno != 0 {
		return errno
	}
	return nil
}

// ethtoolIoctl runs SIOCETHTOOL on this interface with buf as the command
// structure; the kernel reads and writes buf in place.
func (c *nicConn) ethtoolIoctl(op string, buf []byte) error {
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], c.name)
	ifr.data = unsafe.Pointer(&buf[0])
	err := c.ioctl(c.fd, &ifr, buf)
	runtime.KeepAlive(buf)
	if err != nil {
		errno := errnoOf(err)
		return &errs.Error{Op: op, Errno: errno, Err: err}
	}
	return nil
}

func (c *nicConn) ruleCount() (count, tableSize uint32, err error) {
	b := c.layout.newRxnfc(unix.ETHTOOL_GRXCLSRLCNT, 0)
	if err := c.ethtoolIoctl("ethtool GRXCLSRLCNT", b); err != nil {
		return 0, 0, err
	}
	return binary.NativeEndian.Uint32(b[c.layout.ruleCnt:]), uint32(binary.NativeEndian.Uint64(b[rxnfcData:])), nil
}

func (c *nicConn) ruleLocations() ([]uint32, uint32, error) {
	n, size, err := c.ruleCount()
	if err != nil {
		return nil, 0, err
	}
	if n == 0 {
		return nil, size, nil
	}
	b := c.layout.newRxnfc(unix.ETHTOOL_GRXCLSRLALL, int(n))
	binary.NativeEndian.PutUint32(b[c.layout.ruleCnt:], n)
	if err := c.ethtoolIoctl("ethtool GRXCLSRLALL", b); err != nil {
		return nil, 0, err
	}
	got := min(binary.NativeEndian.Uint32(b[c.layout.ruleCnt:]), n)
	locs := make([]uint32, got)
	for i := range locs {
		locs[i] = binary.NativeEndian.Uint32(b[c.layout.ruleLocs+4*i:])
	}
	return locs, size, nil
}

func (c *nicConn) flowRules() ([]FlowRule, error) {
	locs, _, err := c.ruleLocations()
	if err != nil {
		return nil, err
	}
	rules := make([]FlowRule, 0, len(locs))
	for _, loc := range locs {
		b := c.layout.newRxnfc(unix.ETHTOOL_GRXCLSRULE, 0)
		binary.NativeEndian.PutUint32(b[c.layout.location:], loc)
		if err := c.ethtoolIoctl("ethtool GRXCLSRULE", b); err != nil {
			return nil, err
		}
		r, _ := c.layout.decodeFlowRule(b)
		rules = append(rules, r)
	}
	return rules, nil
}

func (c *nicConn) addFlowRule(r FlowRule, atLocation bool) (uint32, error) {
	const op = "ethtool SRXCLSRLINS"
	loc := r.Location
	if !atLocation {
		locs, size, err := c.ruleLocations()
		if err != nil {
			return 0, err
		}
		if size&_RX_CLS_LOC_SPECIAL != 0 {
			loc = _RX_CLS_LOC_ANY
		} else {
			// Like ethtool's rmgr: the last free slot, lowest priority.
			size &^= _RX_CLS_LOC_SPECIAL
			found := false
			for l := int64(size) - 1; l >= 0; l-- {
				if !slices.Contains(locs, uint32(l)) {
					loc, found = uint32(l), true
					break
				}
			}
			if !found {
				return 0, &errs.Error{Op: op, Errno: syscall.ENOSPC, Err: syscall.ENOSPC, Message: fmt.Sprintf("all %d rule locations in use", size)}
			}
		}
	}
	b := c.layout.newRxnfc(unix.ETHTOOL_SRXCLSRLINS, 0)
	if err := c.layout.encodeFlowRule(b, r, loc); err != nil {
		return 0, &errs.Error{Op: op, Errno: syscall.EINVAL, Err: err}
	}
	if err := c.ethtoolIoctl(op, b); err != nil {
		return 0, err
	}
	// The kernel writes the chosen location back.
	return binary.NativeEndian.Uint32(b[c.layout.location:]), nil
}

func (c *nicConn) deleteFlowRule(loc uint32) error {
	b := c.layout.newRxnfc(unix.ETHTOOL_SRXCLSRLDEL, 0)
	binary.NativeEndian.PutUint32(b[c.layout.location:], loc)
	return c.ethtoolIoctl("ethtool SRXCLSRLDEL", b)
}

// struct ethtool_rxfh_indir: cmd, size, ring_index[size].
func (c *nicConn) rssIndirection() ([]uint32, error) {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint32(b, unix.ETHTOOL_GRXFHINDIR)
	if err := c.ethtoolIoctl("ethtool GRXFHINDIR", b); err != nil {
		return nil, err
	}
	size := binary.NativeEndian.Uint32(b[4:])
	b = make([]byte, 8+4*int(size))
	binary.NativeEndian.PutUint32(b, unix.ETHTOOL_GRXFHINDIR)
	binary.NativeEndian.PutUint32(b[4:], size)
	if err := c.ethtoolIoctl("ethtool GRXFHINDIR", b); err != nil {
		return nil, err
	}
	table := make([]uint32, size)
	for i := range table {
		table[i] = binary.NativeEndian.Uint32(b[8+4*i:])
	}
	return table, nil
}

func (c *nicConn) setRSSIndirection(table []uint32) error {
	b := encodeRxfhIndir(unix.ETHTOOL_SRXFHINDIR, table)
	return c.ethtoolIoctl("ethtool SRXFHINDIR", b)
}

func encodeRxfhIndir(cmd uint32, table []uint32) []byte {
	b := make([]byte, 8+4*len(table))
	binary.NativeEndian.PutUint32(b, cmd)
	binary.NativeEndian.PutUint32(b[4:], uint32(len(table)))
	for i, q := range table {
		binary.NativeEndian.PutUint32(b[8+4*i:], q)
	}
	return b
}

// struct ethtool_value: cmd, data. The legacy flags word still carries
// NETIF_F_NTUPLE as ETH_FLAG_NTUPLE, which saves a feature-string lookup.
func (c *nicConn) flags() (uint32, error) {
	b := make([]byte, 8)
	binary.NativeEndian.PutUint32(b, unix.ETHTOOL_GFLAGS)
	if err := c.ethtoolIoctl("ethtool GFLAGS", b); err != nil {
		return 0, err
	}
	return binary.NativeEndian.Uint32(b[4:]), nil
}

func (c *nicConn) ntuple() (bool, error) {
	f, err := c.flags()
	return f&_ETH_FLAG_NTUPLE != 0, err
}

func (c *nicConn) setNtuple(on bool) error {
	f, err := c.flags()
	if err != nil {
		return err
	}
	if on {
		f |= _ETH_FLAG_NTUPLE
	} else {
		f &^= _ETH_FLAG_NTUPLE
	}
	b := make([]byte, 8)
	binary.NativeEndian.PutUint32(b, unix.ETHTOOL_SFLAGS)
	binary.NativeEndian.PutUint32(b[4:], f)
	return c.ethtoolIoctl("ethtool SFLAGS", b)
}
