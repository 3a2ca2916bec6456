//go:build linux

package devmem

import (
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
)

// Queue leasing (Linux 7.1): the queue-create command and the lease nest of
// the queue attribute set (include/uapi/linux/netdev.h).
const (
	_NETDEV_CMD_QUEUE_CREATE = 16

	_NETDEV_A_QUEUE_LEASE = 8

	_NETDEV_A_LEASE_IFINDEX  = 1
	_NETDEV_A_LEASE_QUEUE    = 2
	_NETDEV_A_LEASE_NETNS_ID = 3
)

func init() {
	netdevCmds[_NETDEV_CMD_QUEUE_CREATE] = struct{ op, version string }{"queue-create", "7.1"}
}

func (n *netdevConn) leaseRXQueue(ifindex int, phys Lease) (int, error) {
	const op = "queue-create"
	// Values the attribute policy cannot carry are refused here, not
	// wrapped into other numbers.
	switch {
	case ifindex <= 0 || int64(ifindex) > 1<<31-1:
		return -1, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: fmt.Sprintf("bad virtual device ifindex %d", ifindex)}
	case phys.Ifindex <= 0 || int64(phys.Ifindex) > 1<<31-1:
		return -1, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: fmt.Sprintf("bad lease ifindex %d", phys.Ifindex)}
	case phys.Queue < 0 || int64(phys.Queue) > 1<<32-1:
		return -1, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: fmt.Sprintf("bad lease queue %d", phys.Queue)}
	case phys.NetnsID < SameNetns || int64(phys.NetnsID) > 1<<31-1:
		return -1, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: fmt.Sprintf("bad netns id %d", phys.NetnsID)}
	}
	msgs, err := n.execute(_NETDEV_CMD_QUEUE_CREATE, 0, func(ae *netlink.AttributeEncoder) {
		encodeLeaseRequest(ae, ifindex, phys)
	})
	if err != nil {
		return -1, err
	}
	if len(msgs) != 1 {
		return -1, &Error{Op: op, Err: fmt.Errorf("%d replies, want 1", len(msgs))}
	}
	id := -1
	err = decode(msgs[0].Data, func(ad *netlink.AttributeDecoder) {
		if ad.Type() == _NETDEV_A_QUEUE_ID {
			id = int(ad.Uint32())
		}
	})
	if err != nil {
		return -1, &Error{Op: op, Err: err}
	}
	if id < 0 {
		return -1, &Error{Op: op, Err: errors.New("kernel reply carries no queue id")}
	}
	return id, nil
}

// encodeLeaseRequest writes the attributes of queue-create: the new queue
// (ifindex, type rx) and the lease nest naming the physical queue.
func encodeLeaseRequest(ae *netlink.AttributeEncoder, ifindex int, phys Lease) {
	ae.Uint32(_NETDEV_A_QUEUE_IFINDEX, uint32(ifindex))
	ae.Uint32(_NETDEV_A_QUEUE_TYPE, _NETDEV_QUEUE_TYPE_RX)
	ae.Nested(_NETDEV_A_QUEUE_LEASE, func(lae *netlink.AttributeEncoder) error {
		lae.Uint32(_NETDEV_A_LEASE_IFINDEX, uint32(phys.Ifindex))
		lae.Nested(_NETDEV_A_LEASE_QUEUE, func(qae *netlink.AttributeEncoder) error {
			qae.Uint32(_NETDEV_A_QUEUE_ID, uint32(phys.Queue))
			qae.Uint32(_NETDEV_A_QUEUE_TYPE, uint32(phys.Type))
			return nil
		})
		if phys.NetnsID != SameNetns {
			lae.Int32(_NETDEV_A_LEASE_NETNS_ID, int32(phys.NetnsID))
		}
		return nil
	})
}

// decodeLease reads the lease nest of a queue-get answer. Errors reach the
// caller through ad.Err.
func decodeLease(ad *netlink.AttributeDecoder) *Lease {
	l := &Lease{NetnsID: SameNetns}
	ad.Nested(func(nad *netlink.AttributeDecoder) error {
		for nad.Next() {
			switch nad.Type() {
			case _NETDEV_A_LEASE_IFINDEX:
				l.Ifindex = int(nad.Uint32())
			case _NETDEV_A_LEASE_QUEUE:
				nad.Nested(func(qad *netlink.AttributeDecoder) error {
					for qad.Next() {
						switch qad.Type() {
						case _NETDEV_A_QUEUE_ID:
							l.Queue = int(qad.Uint32())
						case _NETDEV_A_QUEUE_TYPE:
							l.Type = Direction(qad.Uint32())
						}
					}
					return qad.Err()
				})
			case _NETDEV_A_LEASE_NETNS_ID:
				l.NetnsID = int(nad.Int32())
			}
		}
		return nad.Err()
	})
	return l
}
