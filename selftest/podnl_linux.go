//go:build linux

package selftest

import (
	"errors"
	"fmt"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// The harness's own netdev netlink client: the library's tests import this
// package, so it cannot use the library (an import cycle), and a pod made
// by independent code also keeps the library's queue-create under test
// rather than under the harness.
const (
	nlNetdevCmdQueueGet    = 10
	nlNetdevCmdQueueCreate = 16
	nlQueueID              = 1
	nlQueueIfindex         = 2
	nlQueueType            = 3
	nlQueueLease           = 8
	nlLeaseIfindex         = 1
	nlLeaseQueue           = 2
	nlLeaseNetnsID         = 3
)

func dialNetdevFamily() (*genetlink.Conn, genetlink.Family, error) {
	c, err := genetlink.Dial(&netlink.Config{Strict: true})
	if err != nil {
		return nil, genetlink.Family{}, err
	}
	f, err := c.GetFamily("netdev")
	if err != nil {
		c.Close()
		return nil, genetlink.Family{}, fmt.Errorf("netdev netlink family: %w", err)
	}
	return c, f, nil
}

// harnessQueueCreate sends queue-create from the calling thread's netns.
func harnessQueueCreate(ifindex, physIfindex, physQueue, netnsID int) (int, error) {
	c, f, err := dialNetdevFamily()
	if err != nil {
		return -1, err
	}
	defer c.Close()
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(nlQueueIfindex, uint32(ifindex))
	ae.Uint32(nlQueueType, 0)
	ae.Nested(nlQueueLease, func(l *netlink.AttributeEncoder) error {
		l.Uint32(nlLeaseIfindex, uint32(physIfindex))
		l.Nested(nlLeaseQueue, func(q *netlink.AttributeEncoder) error {
			q.Uint32(nlQueueID, uint32(physQueue))
			q.Uint32(nlQueueType, 0)
			return nil
		})
		if netnsID >= 0 {
			l.Int32(nlLeaseNetnsID, int32(netnsID))
		}
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		return -1, err
	}
	msgs, err := c.Execute(genetlink.Message{Header: genetlink.Header{Command: nlNetdevCmdQueueCreate, Version: f.Version}, Data: b}, f.ID, netlink.Request)
	if err != nil {
		return -1, fmt.Errorf("queue-create (lease queue %d of ifindex %d to ifindex %d): %w", physQueue, physIfindex, ifindex, err)
	}
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data)
		if err != nil {
			return -1, err
		}
		for ad.Next() {
			if ad.Type() == nlQueueID {
				return int(ad.Uint32()), nil
			}
		}
	}
	return -1, errors.New("queue-create: no queue id in the reply")
}

// harnessLastRXQueue returns the highest RX queue id of ifindex.
func harnessLastRXQueue(ifindex int) (int, error) {
	c, f, err := dialNetdevFamily()
	if err != nil {
		return -1, err
	}
	defer c.Close()
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(nlQueueIfindex, uint32(ifindex))
	b, _ := ae.Encode()
	msgs, err := c.Execute(genetlink.Message{Header: genetlink.Header{Command: nlNetdevCmdQueueGet, Version: f.Version}, Data: b}, f.ID, netlink.Request|netlink.Dump)
	if err != nil {
		return -1, fmt.Errorf("queue-get: %w", err)
	}
	last := -1
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data)
		if err != nil {
			return -1, err
		}
		id, typ := -1, uint32(99)
		for ad.Next() {
			switch ad.Type() {
			case nlQueueID:
				id = int(ad.Uint32())
			case nlQueueType:
				typ = ad.Uint32()
			}
		}
		if typ == 0 && id > last {
			last = id
		}
	}
	if last < 1 {
		return -1, fmt.Errorf("ifindex %d has %d RX queues; a lease needs at least 2", ifindex, last+1)
	}
	return last, nil
}
