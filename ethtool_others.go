//go:build !linux

package devmem

type nicConn struct{}

func openNIC(string, int) (*NIC, error) { return nil, errNetlinkNotLinux("open nic") }

func (*nicConn) close() error                          { return errNetlinkNotLinux("close nic") }
func (*nicConn) rings() (*Rings, error)                { return nil, errNetlinkNotLinux("rings-get") }
func (*nicConn) setRings(*TCPDataSplit, *uint32) error { return errNetlinkNotLinux("rings-set") }
func (*nicConn) channels() (*Channels, error)          { return nil, errNetlinkNotLinux("channels-get") }
func (*nicConn) setChannels(ChannelsUpdate) error      { return errNetlinkNotLinux("channels-set") }
func (*nicConn) flowRules() ([]FlowRule, error) {
	return nil, errNetlinkNotLinux("ethtool GRXCLSRLALL")
}
func (*nicConn) addFlowRule(FlowRule, bool) (uint32, error) {
	return 0, errNetlinkNotLinux("ethtool SRXCLSRLINS")
}
func (*nicConn) deleteFlowRule(uint32) error { return errNetlinkNotLinux("ethtool SRXCLSRLDEL") }
func (*nicConn) rssIndirection() ([]uint32, error) {
	return nil, errNetlinkNotLinux("ethtool GRXFHINDIR")
}
func (*nicConn) setRSSIndirection([]uint32) error { return errNetlinkNotLinux("ethtool SRXFHINDIR") }
func (*nicConn) ntuple() (bool, error)            { return false, errNetlinkNotLinux("ethtool GFLAGS") }
func (*nicConn) setNtuple(bool) error             { return errNetlinkNotLinux("ethtool SFLAGS") }
