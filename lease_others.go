//go:build !linux

package devmem

func (*netdevConn) leaseRXQueue(int, Lease) (int, error) {
	return -1, errNotSupportedOS("queue-create")
}
