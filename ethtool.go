package devmem

import (
	"errors"
	"net/netip"
	"slices"
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

func (s TCPDataSplit) String() string {
	switch s {
	case TCPDataSplitUnknown:
		return "unknown"
	case TCPDataSplitDisabled:
		return "off"
	case TCPDataSplitEnabled:
		return "on"
	}
	return "TCPDataSplit(" + itoa(uint64(s)) + ")"
}

// Rings is a NIC's ring configuration (ethtool rings-get).
type Rings struct {
	RX, RXMax uint32
	TX, TXMax uint32
	// TCPDataSplit is the header split state (TCPDataSplitUnknown when the
	// driver does not report it).
	TCPDataSplit TCPDataSplit
	// HDSThresh is the header/data split threshold: packets up to this size
	// are not split. bind-rx requires 0. Valid only if HasHDSThresh.
	HDSThresh    uint32
	HDSThreshMax uint32
	HasHDSThresh bool
}

// Channels is a NIC's channel configuration (ethtool channels-get).
type Channels struct {
	RX, TX, Other, Combined             uint32
	MaxRX, MaxTX, MaxOther, MaxCombined uint32
}

// RXQueues returns the number of RX queues the channels make: RX +
// Combined, as ncdevmem counts them.
func (c *Channels) RXQueues() int { return int(c.RX) + int(c.Combined) }

// ChannelsUpdate changes channel counts; nil fields stay as they are.
type ChannelsUpdate struct {
	RX, TX, Other, Combined *uint32
}

// FlowType is the traffic an ntuple rule matches, the kernel's *_FLOW
// values.
type FlowType uint32

const (
	FlowTCP4 FlowType = 0x01 // TCP_V4_FLOW
	FlowTCP6 FlowType = 0x05 // TCP_V6_FLOW
)

func (f FlowType) String() string {
	switch f {
	case FlowTCP4:
		return "tcp4"
	case FlowTCP6:
		return "tcp6"
	}
	return "FlowType(" + itoa(uint64(f)) + ")"
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
	Type     FlowType
	Src, Dst netip.Addr
	SrcPort  uint16
	DstPort  uint16
	// Queue is the RX queue that receives matching packets, or QueueDrop.
	Queue int
}

// NIC configures a network interface for devmem TCP through ethtool: header
// split, channels, ntuple rules and RSS. Snapshot and Restore put back what
// was changed. A NIC is not safe for concurrent use.
type NIC struct {
	name    string
	ifindex int
	c       *nicConn
}

// OpenNIC opens the interface called name.
func OpenNIC(name string) (*NIC, error) { return openNIC(name, 0) }

// OpenNICIndex opens the interface with index ifindex.
func OpenNICIndex(ifindex int) (*NIC, error) { return openNIC("", ifindex) }

// Name returns the interface name.
func (n *NIC) Name() string { return n.name }

// Index returns the interface index.
func (n *NIC) Index() int { return n.ifindex }

// Close releases the NIC's sockets. It changes nothing on the device.
func (n *NIC) Close() error { return n.c.close() }

// Rings reads the ring configuration (ethtool -g), including header split
// and hds-thresh.
func (n *NIC) Rings() (*Rings, error) { return n.c.rings() }

// SetTCPDataSplit sets header split (ethtool -G IF tcp-data-split on|off|auto).
// It is sent alone, as drivers that support split but not hds-thresh refuse
// a request carrying both.
func (n *NIC) SetTCPDataSplit(s TCPDataSplit) error { return n.c.setRings(&s, nil) }

// SetHDSThresh sets the header split threshold (ethtool -G IF hds-thresh N).
func (n *NIC) SetHDSThresh(v uint32) error { return n.c.setRings(nil, &v) }

// Channels reads the channel counts (ethtool -l).
func (n *NIC) Channels() (*Channels, error) { return n.c.channels() }

// SetChannels changes channel counts (ethtool -L). The kernel refuses to
// drop a queue that has a dma-buf bound.
func (n *NIC) SetChannels(u ChannelsUpdate) error { return n.c.setChannels(u) }

// FlowRules lists the ntuple rules (ethtool -n).
func (n *NIC) FlowRules() ([]FlowRule, error) { return n.c.flowRules() }

// AddFlowRule inserts an ntuple rule (ethtool -N IF flow-type ...) and
// returns its location: the driver's choice where it can choose
// (RX_CLS_LOC_ANY), else the last free slot, as ethtool does. ntuple
// filtering must be on (SetNtuple).
func (n *NIC) AddFlowRule(r FlowRule) (uint32, error) { return n.c.addFlowRule(r, false) }

// DeleteFlowRule deletes the ntuple rule at loc (ethtool -N IF delete loc).
func (n *NIC) DeleteFlowRule(loc uint32) error { return n.c.deleteFlowRule(loc) }

// RSSIndirection returns the RSS indirection table (ethtool -x): entry i is
// the RX queue that hash bucket i goes to.
func (n *NIC) RSSIndirection() ([]uint32, error) { return n.c.rssIndirection() }

// SetRSSIndirection sets the RSS indirection table (ethtool -X); table must
// have the device's size. An empty table restores the driver default
// (ethtool -X IF default).
func (n *NIC) SetRSSIndirection(table []uint32) error { return n.c.setRSSIndirection(table) }

// SetRSSEqual spreads RSS evenly over queues 0..queues-1 (ethtool -X IF
// equal N), keeping the other queues free for devmem.
func (n *NIC) SetRSSEqual(queues int) error {
	if queues <= 0 {
		return &Error{Op: "set rss", Err: errorString("equal needs at least one queue")}
	}
	table, err := n.RSSIndirection()
	if err != nil {
		return err
	}
	for i := range table {
		table[i] = uint32(i % queues)
	}
	return n.SetRSSIndirection(table)
}

// Ntuple reports whether ntuple filtering is on (ethtool -k: ntuple-filters).
func (n *NIC) Ntuple() (bool, error) { return n.c.ntuple() }

// SetNtuple turns ntuple filtering on or off (ethtool -K IF ntuple on|off).
func (n *NIC) SetNtuple(on bool) error { return n.c.setNtuple(on) }

// NICState is what Snapshot saw. A nil or false-Has part was not readable
// (the driver does not support it) and is left alone by Restore.
type NICState struct {
	Rings    *Rings
	Channels *Channels
	// RSS is the indirection table; RSSDefault says it was the driver
	// default spread over Channels.RXQueues(), which Restore reinstates as
	// "default" rather than as a fixed table.
	RSS        []uint32
	RSSDefault bool
	HasRSS     bool
	Rules      []FlowRule
	HasRules   bool
	Ntuple     bool
	HasNtuple  bool
}

// Snapshot records the device state that devmem setup changes: rings
// (header split, hds-thresh), channels, RSS table, ntuple rules and the
// ntuple flag.
func (n *NIC) Snapshot() (*NICState, error) {
	var s NICState
	var err error
	skip := func(e error) bool { return e != nil && errors.Is(e, ErrNotSupported) }
	if s.Rings, err = n.Rings(); err != nil && !skip(err) {
		return nil, err
	}
	if s.Channels, err = n.Channels(); err != nil && !skip(err) {
		return nil, err
	}
	if s.RSS, err = n.RSSIndirection(); err == nil {
		s.HasRSS = true
		s.RSSDefault = s.Channels != nil && isDefaultRSS(s.RSS, s.Channels.RXQueues())
	} else if !skip(err) {
		return nil, err
	}
	if s.Rules, err = n.FlowRules(); err == nil {
		s.HasRules = true
	} else if !skip(err) {
		return nil, err
	}
	if s.Ntuple, err = n.Ntuple(); err == nil {
		s.HasNtuple = true
	} else if !skip(err) {
		return nil, err
	}
	return &s, nil
}

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

// Restore returns the device to s: it deletes ntuple rules added since (and
// re-adds deleted ones), resets RSS so channels can change, restores
// channels, then the RSS table, then header split and hds-thresh the way
// ncdevmem does (split "unknown" plus the old threshold, then the explicit
// old split if the driver did not fall back to it), then the ntuple flag.
// Close every Binding first: the kernel refuses to turn header split off
// under a bound queue. Restore carries on past failures and returns them
// joined.
func (n *NIC) Restore(s *NICState) error {
	var errs []error
	if s.HasRules {
		errs = append(errs, n.restoreRules(s.Rules))
	}
	if s.HasRSS || s.Channels != nil {
		errs = append(errs, n.restoreChannelsRSS(s))
	}
	if s.Rings != nil {
		errs = append(errs, n.restoreRings(s.Rings))
	}
	if s.HasNtuple {
		if on, err := n.Ntuple(); err != nil {
			errs = append(errs, err)
		} else if on != s.Ntuple {
			errs = append(errs, n.SetNtuple(s.Ntuple))
		}
	}
	return errors.Join(errs...)
}

func (n *NIC) restoreRules(want []FlowRule) error {
	have, err := n.FlowRules()
	if err != nil {
		return err
	}
	var errs []error
	for _, r := range have {
		if !slices.Contains(want, r) {
			errs = append(errs, n.DeleteFlowRule(r.Location))
		}
	}
	for _, r := range want {
		if !slices.Contains(have, r) {
			if _, err := n.c.addFlowRule(r, true); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (n *NIC) restoreChannelsRSS(s *NICState) error {
	var cur []uint32
	if s.HasRSS {
		var err error
		if cur, err = n.RSSIndirection(); err != nil {
			return err
		}
	}
	rssChanged := s.HasRSS && !slices.Equal(cur, s.RSS)
	if s.Channels != nil {
		ch, err := n.Channels()
		if err != nil {
			return err
		}
		if ch.RX != s.Channels.RX || ch.TX != s.Channels.TX || ch.Other != s.Channels.Other || ch.Combined != s.Channels.Combined {
			// A configured RSS table pins the queues it names; the
			// default one follows the channel count.
			if s.HasRSS {
				if err := n.SetRSSIndirection(nil); err != nil {
					return err
				}
				rssChanged = true
			}
			c := *s.Channels
			if err := n.SetChannels(ChannelsUpdate{RX: &c.RX, TX: &c.TX, Other: &c.Other, Combined: &c.Combined}); err != nil {
				return err
			}
		}
	}
	if !rssChanged {
		return nil
	}
	if s.RSSDefault {
		return n.SetRSSIndirection(nil)
	}
	return n.SetRSSIndirection(s.RSS)
}

func (n *NIC) restoreRings(old *Rings) error {
	cur, err := n.Rings()
	if err != nil {
		return err
	}
	if cur.TCPDataSplit == old.TCPDataSplit && (!old.HasHDSThresh || cur.HDSThresh == old.HDSThresh) {
		return nil
	}
	// Hand header split back to the driver's choice first, so an
	// "auto" device stays auto; then the old threshold; then, if the driver's
	// choice differs from what was there, the explicit old value.
	if err := n.SetTCPDataSplit(TCPDataSplitUnknown); err != nil {
		return err
	}
	if old.HasHDSThresh && cur.HDSThresh != old.HDSThresh {
		if err := n.SetHDSThresh(old.HDSThresh); err != nil {
			return err
		}
	}
	now, err := n.Rings()
	if err != nil {
		return err
	}
	if now.TCPDataSplit != old.TCPDataSplit && old.TCPDataSplit != TCPDataSplitUnknown {
		return n.SetTCPDataSplit(old.TCPDataSplit)
	}
	return nil
}
