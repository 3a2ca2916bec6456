package devmem

// Transitional shims for the NIC API that moved to package nic, kept only
// so that the files of other engineers (example_bind_test.go, rx_vm_test.go)
// build until they switch to nic.Setup. The lead deletes this file at the
// merge; none of it is part of the 1.0 API.

import "github.com/devmem-go/devmem/nic"

type (
	// Deprecated: use nic.TCPDataSplit.
	TCPDataSplit = nic.TCPDataSplit
	// Deprecated: use nic.FlowRule.
	FlowRule = nic.FlowRule
	// Deprecated: use nic.Channels.
	Channels = nic.Channels
)

// Deprecated: use the nic package's constants.
const (
	TCPDataSplitUnknown  = nic.TCPDataSplitUnknown
	TCPDataSplitDisabled = nic.TCPDataSplitDisabled
	TCPDataSplitEnabled  = nic.TCPDataSplitEnabled
	FlowTCP4             = nic.FlowTCP4
	FlowTCP6             = nic.FlowTCP6
)

// Deprecated: use nic.Open and nic.NewSetup.
type NIC struct {
	*nic.NIC
	setup *nic.Setup
}

// Deprecated: undo a nic.Setup instead.
type NICState struct{}

// Deprecated: use nic.Open.
func OpenNIC(name string) (*NIC, error) {
	n, err := nic.Open(name)
	if err != nil {
		return nil, err
	}
	return &NIC{NIC: n}, nil
}

// Deprecated: use nic.NewSetup.
func (n *NIC) Snapshot() (*NICState, error) {
	s, err := nic.NewSetup(n.NIC, nil)
	if err != nil {
		return nil, err
	}
	n.setup = s
	return &NICState{}, nil
}

// Deprecated: use Setup.Undo.
func (n *NIC) Restore(*NICState) error {
	if n.setup == nil {
		return nil
	}
	return n.setup.Undo()
}

// Deprecated: use Setup.EnableHeaderSplit.
func (n *NIC) SetTCPDataSplit(s TCPDataSplit) error {
	if s == TCPDataSplitEnabled && n.setup != nil {
		return n.setup.EnableHeaderSplit()
	}
	return n.NIC.SetTCPDataSplit(s)
}

// Deprecated: use Setup.EnableHeaderSplit.
func (n *NIC) SetHDSThresh(v uint32) error {
	if v == 0 && n.setup != nil {
		return n.setup.EnableHeaderSplit()
	}
	return n.NIC.SetHDSThresh(v)
}

// Deprecated: use Setup.SteerRSSAway.
func (n *NIC) SetRSSEqual(queues int) error {
	if n.setup == nil {
		return errorString("SetRSSEqual without Snapshot")
	}
	return n.setup.SteerRSSAway(queues)
}

// Deprecated: use Setup.AddFlowRule.
func (n *NIC) AddFlowRule(r FlowRule) (uint32, error) {
	if n.setup == nil {
		return n.NIC.AddFlowRule(r)
	}
	return n.setup.AddFlowRule(r)
}
