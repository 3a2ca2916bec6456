//go:build !linux

package devmem

import "runtime"

func errNetlinkNotLinux(op string) error {
	return &Error{Op: op, Err: ErrNotSupported, Message: "devmem TCP needs Linux, not " + runtime.GOOS + "/" + runtime.GOARCH}
}

type netdevConn struct{}

func dialNetdev() (*netdevConn, error) { return nil, errNetlinkNotLinux("dial netdev") }

func (*netdevConn) close() error                { return errNetlinkNotLinux("close netdev") }
func (*netdevConn) device(int) (*Device, error) { return nil, errNetlinkNotLinux("dev-get") }
func (*netdevConn) queues(int) ([]Queue, error) { return nil, errNetlinkNotLinux("queue-get") }
func (*netdevConn) queue(int, Direction, int) (*Queue, error) {
	return nil, errNetlinkNotLinux("queue-get")
}
func (*netdevConn) pagePools(int) ([]PagePool, error) {
	return nil, errNetlinkNotLinux("page-pool-get")
}
func (*netdevConn) qstats(int, bool) ([]QStats, error) {
	return nil, errNetlinkNotLinux("qstats-get")
}

func bindRX(int, int, []int, *BindRXOptions) (*Binding, error) {
	return nil, errNetlinkNotLinux("bind-rx")
}

func bindTX(int, int) (*Binding, error) { return nil, errNetlinkNotLinux("bind-tx") }
