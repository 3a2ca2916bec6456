// Package nic prepares a network interface for devmem TCP through ethtool:
// TCP header/data split, hds-thresh, RSS, ntuple flow steering, and reads
// its rings and channels.
//
// A [Setup] makes the changes devmem receive needs and undoes exactly its
// own changes afterwards, so several users of one NIC (two servers on
// different queues, say) do not break each other: a flow rule goes by its
// location, and shared settings (header split, RSS, the ntuple flag) go
// back to what the NIC had before the first of them only when the last one
// leaves, and only if still as the users left them. Each Setup keeps an
// undo journal on disk, so that a crashed process's changes are undone by
// the next Setup of that NIC or by [Recover].
//
// Errors are the root package's: every refusal is a *devmem.Error carrying
// the errno and the kernel's extended-ack message; missing features match
// devmem.ErrNotSupported and errors.ErrUnsupported. After Close every
// method returns an error matching net.ErrClosed.
package nic

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/devmem-go/devmem/internal/errs"
)

// TCPDataSplit is a NIC's TCP header/data split setting, the kernel's enum
// ethtool_tcp_data_split. bind-rx requires TCPDataSplitEnabled.
type TCPDataSplit uint8

const (
	// TCPDataSplitUnknown reads as "not reported"; set, it hands the choice
	// back to the driver (ethtool's "auto").
	TCPDataSplitUnknown TCPDataSplit = iota // ETHTOOL_TCP_DATA_SPLIT_UNKNOWN
	// TCPDataSplitDisabled turns header split off.
	TCPDataSplitDisabled // ETHTOOL_TCP_DATA_SPLIT_DISABLED
	// TCPDataSplitEnabled turns header split on.
	TCPDataSplitEnabled // ETHTOOL_TCP_DATA_SPLIT_ENABLED
)

// String returns ethtool's word for s: "unknown", "off" or "on".
func (s TCPDataSplit) String() string {
	switch s {
	case TCPDataSplitUnknown:
		return "unknown"
	case TCPDataSplitDisabled:
		return "off"
	case TCPDataSplitEnabled:
		return "on"
	}
	return "TCPDataSplit(" + strconv.Itoa(int(s)) + ")"
}

// Rings is a NIC's ring configuration (ethtool -g, rings-get).
type Rings struct {
	// RX is the RX ring size in descriptors; RXMax the largest the device
	// allows.
	RX, RXMax uint32
	// TX is the TX ring size in descriptors; TXMax the largest the device
	// allows.
	TX, TXMax uint32
	// TCPDataSplit is the header split state (TCPDataSplitUnknown when the
	// driver does not report it; some drivers report their "auto" as
	// TCPDataSplitEnabled).
	TCPDataSplit TCPDataSplit
	// HDSThresh is the header/data split threshold: packets up to this size
	// are not split. bind-rx requires 0. Valid only if HasHDSThresh.
	HDSThresh uint32
	// HDSThreshMax is the largest threshold the device allows.
	HDSThreshMax uint32
	// HasHDSThresh says the driver reports a threshold (Linux 6.13 and
	// later, and only some drivers).
	HasHDSThresh bool
}

// Channels is a NIC's channel configuration (ethtool -l, channels-get).
type Channels struct {
	// RX, TX, Other and Combined are the numbers of RX-only, TX-only,
	// other (link interrupts and the like) and combined (RX+TX) channels.
	RX, TX, Other, Combined uint32
	// MaxRX, MaxTX, MaxOther and MaxCombined are the most of each the
	// device can run.
	MaxRX, MaxTX, MaxOther, MaxCombined uint32
}

// RXQueues returns the number of RX queues the channels make: RX +
// Combined, as ncdevmem counts them.
func (c *Channels) RXQueues() int { return int(c.RX) + int(c.Combined) }

// ChannelsUpdate changes channel counts (ethtool -L); nil fields stay as
// they are.
type ChannelsUpdate struct {
	// RX, TX, Other and Combined are the new counts (see Channels).
	RX, TX, Other, Combined *uint32
}

// FlowType is the traffic an ntuple rule matches, the kernel's *_FLOW
// values.
type FlowType uint32

const (
	FlowTCP4 FlowType = 0x01 // TCP over IPv4 (TCP_V4_FLOW)
	FlowTCP6 FlowType = 0x05 // TCP over IPv6 (TCP_V6_FLOW)
)

// String returns ethtool's name of the flow type, "tcp4" or "tcp6".
func (f FlowType) String() string {
	switch f {
	case FlowTCP4:
		return "tcp4"
	case FlowTCP6:
		return "tcp6"
	}
	return "FlowType(" + strconv.FormatUint(uint64(f), 10) + ")"
}

// QueueDrop is the FlowRule.Queue of a rule that drops what it matches
// (RX_CLS_FLOW_DISC).
const QueueDrop = -1

// FlowRule is an ntuple flow-steering rule (ethtool -N): TCP over IPv4 or
// IPv6 to a queue. Zero addresses and ports match anything.
type FlowRule struct {
	// Location is the rule's slot in the NIC's table, as listed.
	// AddFlowRule ignores it and picks a slot.
	Location uint32
	// Type is the traffic matched: FlowTCP4 or FlowTCP6. Rules of other
	// types are listed with only Location and Queue set.
	Type FlowType
	// Src and Dst are the source and destination addresses to match.
	Src, Dst netip.Addr
	// SrcPort and DstPort are the TCP ports to match.
	SrcPort, DstPort uint16
	// Queue is the RX queue that receives matching packets, or QueueDrop.
	Queue int
}

// sameMatch reports whether r and o match the same traffic to the same
// queue, whatever their locations.
func (r FlowRule) sameMatch(o FlowRule) bool {
	r.Location, o.Location = 0, 0
	return r == o
}

// NIC configures one network interface through ethtool. Its methods may be
// called from several goroutines; they are serialized.
type NIC struct {
	name    string
	ifindex int

	mu     sync.Mutex
	c      ops // nil after Close
	closed bool
}

// ops are the device operations, implemented over ethtool netlink and
// SIOCETHTOOL on Linux and by a fake device in tests.
type ops interface {
	close() error
	rings() (*Rings, error)
	setRings(split *TCPDataSplit, hdsThresh *uint32) error
	channels() (*Channels, error)
	setChannels(ChannelsUpdate) error
	flowRules() ([]FlowRule, error)
	// addFlowRule inserts r at r.Location if atLocation, else where the
	// driver or ethtool's allocator puts it, and returns the location.
	addFlowRule(r FlowRule, atLocation bool) (uint32, error)
	deleteFlowRule(loc uint32) error
	rssIndirection() ([]uint32, error)
	setRSSIndirection(table []uint32) error
	ntuple() (bool, error)
	setNtuple(on bool) error
}

// Open opens the interface called name.
func Open(name string) (*NIC, error) { return openNIC(name, 0) }

// OpenIndex opens the interface with index ifindex.
func OpenIndex(ifindex int) (*NIC, error) { return openNIC("", ifindex) }

// Name returns the interface name.
func (n *NIC) Name() string { return n.name }

// Index returns the interface index.
func (n *NIC) Index() int { return n.ifindex }

// Close releases the NIC's sockets. It changes nothing on the device; a
// Setup of the NIC must be undone first.
func (n *NIC) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return &errs.Error{Op: "close nic", Err: net.ErrClosed}
	}
	n.closed = true
	c := n.c
	n.c = nil
	return c.close()
}

// do runs fn with the device operations, or fails with net.ErrClosed.
func (n *NIC) do(op string, fn func(c ops) error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return &errs.Error{Op: op, Err: net.ErrClosed}
	}
	return fn(n.c)
}

// Rings reads the ring configuration (ethtool -g), including header split
// and hds-thresh.
func (n *NIC) Rings() (r *Rings, err error) {
	err = n.do("rings-get", func(c ops) error { r, err = c.rings(); return err })
	return r, err
}

// SetTCPDataSplit sets header split (ethtool -G IF tcp-data-split on|off|auto).
// It is sent alone, as drivers that support split but not hds-thresh refuse
// a request carrying both.
func (n *NIC) SetTCPDataSplit(s TCPDataSplit) error {
	return n.do("rings-set", func(c ops) error { return c.setRings(&s, nil) })
}

// SetHDSThresh sets the header split threshold (ethtool -G IF hds-thresh N).
func (n *NIC) SetHDSThresh(v uint32) error {
	return n.do("rings-set", func(c ops) error { return c.setRings(nil, &v) })
}

// Channels reads the channel counts (ethtool -l).
func (n *NIC) Channels() (ch *Channels, err error) {
	err = n.do("channels-get", func(c ops) error { ch, err = c.channels(); return err })
	return ch, err
}

// SetChannels changes channel counts (ethtool -L). The kernel refuses to
// drop a queue that has a dma-buf bound.
func (n *NIC) SetChannels(u ChannelsUpdate) error {
	return n.do("channels-set", func(c ops) error { return c.setChannels(u) })
}

// FlowRules lists the ntuple rules (ethtool -n).
func (n *NIC) FlowRules() (rules []FlowRule, err error) {
	err = n.do("ethtool GRXCLSRLALL", func(c ops) error { rules, err = c.flowRules(); return err })
	return rules, err
}

// AddFlowRule inserts an ntuple rule (ethtool -N IF flow-type ...) and
// returns its location: the driver's choice where it can choose
// (RX_CLS_LOC_ANY), else the last free slot, as ethtool does. ntuple
// filtering must be on (SetNtuple). Prefer [Setup.AddFlowRule], which
// deletes the rule again.
func (n *NIC) AddFlowRule(r FlowRule) (loc uint32, err error) {
	err = n.do("ethtool SRXCLSRLINS", func(c ops) error { loc, err = c.addFlowRule(r, false); return err })
	return loc, err
}

// DeleteFlowRule deletes the ntuple rule at loc (ethtool -N IF delete loc).
func (n *NIC) DeleteFlowRule(loc uint32) error {
	return n.do("ethtool SRXCLSRLDEL", func(c ops) error { return c.deleteFlowRule(loc) })
}

// RSSIndirection returns the RSS indirection table (ethtool -x): entry i is
// the RX queue that hash bucket i goes to.
func (n *NIC) RSSIndirection() (table []uint32, err error) {
	err = n.do("ethtool GRXFHINDIR", func(c ops) error { table, err = c.rssIndirection(); return err })
	return table, err
}

// SetRSSIndirection sets the RSS indirection table (ethtool -X); table must
// have the device's size. An empty table restores the driver default
// (ethtool -X IF default).
func (n *NIC) SetRSSIndirection(table []uint32) error {
	return n.do("ethtool SRXFHINDIR", func(c ops) error { return c.setRSSIndirection(table) })
}

// Ntuple reports whether ntuple filtering is on (ethtool -k: ntuple-filters).
func (n *NIC) Ntuple() (on bool, err error) {
	err = n.do("ethtool GFLAGS", func(c ops) error { on, err = c.ntuple(); return err })
	return on, err
}

// SetNtuple turns ntuple filtering on or off (ethtool -K IF ntuple on|off).
func (n *NIC) SetNtuple(on bool) error {
	return n.do("ethtool SFLAGS", func(c ops) error { return c.setNtuple(on) })
}

// State is what a NIC's devmem-relevant configuration is at one moment:
// rings (header split, hds-thresh), channels, the RSS table, the ntuple
// rules and flag. Parts the driver does not report are left out. Tests
// compare two States to check that a NIC ends as it began.
type State struct {
	rings      *Rings
	channels   *Channels
	rss        []uint32 // nil: not readable
	rssDefault bool
	rules      []FlowRule
	hasRules   bool
	ntuple     bool
	hasNtuple  bool
}

// State reads the NIC's current State.
func (n *NIC) State() (*State, error) {
	var s State
	err := n.do("nic state", func(c ops) error {
		var err error
		if s.rings, err = c.rings(); err != nil && !notSupported(err) {
			return err
		}
		if s.channels, err = c.channels(); err != nil && !notSupported(err) {
			return err
		}
		if s.rss, err = c.rssIndirection(); err == nil {
			s.rssDefault = s.channels != nil && isDefaultRSS(s.rss, s.channels.RXQueues())
		} else if !notSupported(err) {
			return err
		}
		if s.rules, err = c.flowRules(); err == nil {
			s.hasRules = true
		} else if !notSupported(err) {
			return err
		}
		if s.ntuple, err = c.ntuple(); err == nil {
			s.hasNtuple = true
		} else if !notSupported(err) {
			return err
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// Equal reports whether s and t are the same configuration.
func (s *State) Equal(t *State) bool { return s.String() == t.String() }

// String describes the state on one line, in ethtool's terms.
func (s *State) String() string {
	var b strings.Builder
	if r := s.rings; r != nil {
		fmt.Fprintf(&b, "rings rx %d tx %d tcp-data-split %v", r.RX, r.TX, r.TCPDataSplit)
		if r.HasHDSThresh {
			fmt.Fprintf(&b, " hds-thresh %d", r.HDSThresh)
		}
		b.WriteString("; ")
	}
	if c := s.channels; c != nil {
		fmt.Fprintf(&b, "channels rx %d tx %d other %d combined %d; ", c.RX, c.TX, c.Other, c.Combined)
	}
	switch {
	case s.rss == nil:
	case s.rssDefault:
		b.WriteString("rss default; ")
	default:
		fmt.Fprintf(&b, "rss %v; ", s.rss)
	}
	if s.hasNtuple {
		fmt.Fprintf(&b, "ntuple %v; ", s.ntuple)
	}
	if s.hasRules {
		fmt.Fprintf(&b, "%d rules", len(s.rules))
		for _, r := range s.rules {
			fmt.Fprintf(&b, " [%d: %v %v:%d > %v:%d queue %d]", r.Location, r.Type, r.Src, r.SrcPort, r.Dst, r.DstPort, r.Queue)
		}
	}
	return strings.TrimSuffix(b.String(), "; ")
}

func notSupported(err error) bool { return err != nil && isUnsupported(err) }

// isDefaultRSS reports whether table is ethtool_rxfh_indir_default over
// queues.
func isDefaultRSS(table []uint32, queues int) bool {
	if queues <= 0 {
		return false
	}
	for i, q := range table {
		if q != uint32(i%queues) {
			return false
		}
	}
	return true
}

// equalRSS returns the table of size entries spread evenly over queues
// 0..queues-1 (ethtool -X IF equal N).
func equalRSS(size, queues int) []uint32 {
	t := make([]uint32, size)
	for i := range t {
		t[i] = uint32(i % queues)
	}
	return t
}
