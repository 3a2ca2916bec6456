//go:build !linux

package devmem

type netdevConn struct{}

func dialNetdev() (*netdevConn, error) { return nil, errNotSupportedOS("dial netdev") }

func (*netdevConn) close() error                { return errNotSupportedOS("close netdev") }
func (*netdevConn) queues(int) ([]Queue, error) { return nil, errNotSupportedOS("queue-get") }
func (*netdevConn) queue(int, Direction, int) (*Queue, error) {
	return nil, errNotSupportedOS("queue-get")
}
func (*netdevConn) pagePools(int) ([]PagePool, error) {
	return nil, errNotSupportedOS("page-pool-get")
}
func (*netdevConn) qstats(int, bool) ([]QStats, error) {
	return nil, errNotSupportedOS("qstats-get")
}

func bindRX(int, int, []int, *BindRXOptions) (*Binding, error) {
	return nil, errNotSupportedOS("bind-rx")
}

func bindTX(int, int) (*Binding, error) { return nil, errNotSupportedOS("bind-tx") }
