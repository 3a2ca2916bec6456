//go:build linux

package devmem

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

func nlS32(v int32) []byte { return nlU32(uint32(v)) }

func dialFakeNetdev(t *testing.T) *Netdev {
	t.Helper()
	n, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

func TestLeaseRXQueueEncoding(t *testing.T) {
	for _, tt := range []struct {
		name    string
		phys    Lease
		netnsID []byte // the netns-id attribute expected, nil for none
	}{
		{"other netns", Lease{Ifindex: 2, Queue: 3, NetnsID: 0}, nlAttr(3, nlS32(0))},
		{"netns id 7", Lease{Ifindex: 2, Queue: 3, NetnsID: 7}, nlAttr(3, nlS32(7))},
		{"same netns", Lease{Ifindex: 2, Queue: 3, NetnsID: SameNetns}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got genetlink.Message
			var flags netlink.HeaderFlags
			fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
				got, flags = greq, nreq.Header.Flags
				return genlReply(_NETDEV_CMD_QUEUE_CREATE, nlAttr(1, nlU32(1))), nil
			})
			n := dialFakeNetdev(t)
			id, err := n.LeaseRXQueue(9, tt.phys)
			if err != nil {
				t.Fatal(err)
			}
			if id != 1 {
				t.Errorf("queue id %d, want 1", id)
			}
			want := nlCat(
				nlAttr(2, nlU32(9)), // QUEUE_IFINDEX: the virtual device
				nlAttr(3, nlU32(0)), // QUEUE_TYPE: rx
				nlAttr(8|unix.NLA_F_NESTED, nlCat( // QUEUE_LEASE
					nlAttr(1, nlU32(2)), // LEASE_IFINDEX
					nlAttr(2|unix.NLA_F_NESTED, nlCat(nlAttr(1, nlU32(3)), nlAttr(3, nlU32(0)))), // LEASE_QUEUE {ID, TYPE}
					tt.netnsID,
				)),
			)
			if got.Header.Command != 16 {
				t.Errorf("command %d, want 16 (queue-create)", got.Header.Command)
			}
			if diff := cmp.Diff(want, got.Data); diff != "" {
				t.Errorf("request attributes (-want +got):\n%s", diff)
			}
			if flags&netlink.Request == 0 || flags&netlink.Dump != 0 {
				t.Errorf("flags %v, want a do request", flags)
			}
		})
	}
}

// TestLeaseRXQueueTXType sends a TX lease as asked: refusing it is the
// kernel's call, and its EINVAL must come back.
func TestLeaseRXQueueTXType(t *testing.T) {
	var got genetlink.Message
	fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		got = greq
		return nil, genltest.Error(int(unix.EINVAL))
	})
	n := dialFakeNetdev(t)
	_, err := n.LeaseRXQueue(9, Lease{Ifindex: 2, Queue: 0, Type: DirectionTX, NetnsID: SameNetns})
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("err %v, want EINVAL", err)
	}
	if !strings.Contains(string(got.Data), string(nlAttr(3, nlU32(1)))) {
		t.Errorf("request does not carry the TX type in the lease queue nest: %x", got.Data)
	}
}

func TestLeaseRXQueueErrors(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		errno   unix.Errno
		message string
		is      []error
	}{
		{
			name:    "queue leased",
			err:     &netlink.OpError{Op: "receive", Err: unix.EBUSY, Message: "Device queue in use due to queue leasing"},
			errno:   unix.EBUSY,
			message: "Device queue in use due to queue leasing",
			is:      []error{unix.EBUSY},
		},
		{
			name:    "queue bound",
			err:     &netlink.OpError{Op: "receive", Err: unix.EBUSY, Message: "Device queue in use by memory provider"},
			errno:   unix.EBUSY,
			message: "Device queue in use by memory provider",
			is:      []error{unix.EBUSY},
		},
		{name: "unknown netns id", err: genltest.Error(int(unix.ENONET)), errno: unix.ENONET, is: []error{unix.ENONET}},
		{name: "unknown device", err: genltest.Error(int(unix.ENODEV)), errno: unix.ENODEV, is: []error{os.ErrNotExist}},
		{name: "queue out of range", err: genltest.Error(int(unix.ERANGE)), errno: unix.ERANGE, is: []error{unix.ERANGE}},
		{name: "not root", err: genltest.Error(int(unix.EPERM)), errno: unix.EPERM, is: []error{os.ErrPermission}},
		{
			name:    "no queue management",
			err:     &netlink.OpError{Op: "receive", Err: unix.EINVAL, Message: "Lease device does not support queue management operations"},
			errno:   unix.EINVAL,
			message: "Lease device does not support queue management operations",
			is:      []error{unix.EINVAL},
		},
		{
			name:    "netkit primary",
			err:     &netlink.OpError{Op: "receive", Err: unix.EOPNOTSUPP, Message: "netkit can only lease against the peer device"},
			errno:   unix.EOPNOTSUPP,
			message: "netkit can only lease against the peer device",
			is:      []error{ErrNotSupported, unix.EOPNOTSUPP},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fakeKernel(t, testNetdevFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
				return nil, tt.err
			})
			n := dialFakeNetdev(t)
			id, err := n.LeaseRXQueue(9, Lease{Ifindex: 2, Queue: 3, NetnsID: 0})
			if id != -1 {
				t.Errorf("queue id %d on error, want -1", id)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v, want *Error", err, err)
			}
			if e.Op != "queue-create" || e.Errno != tt.errno || e.Message != tt.message {
				t.Errorf("got Op %q Errno %v Message %q", e.Op, e.Errno, e.Message)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(%v, %v) = false", err, target)
				}
			}
			if tt.message != "" && !strings.Contains(err.Error(), tt.message) {
				t.Errorf("Error() = %q lacks the kernel message", err)
			}
		})
	}
}

// TestLeaseRXQueueBadInput refuses values the u32/s32 attributes cannot
// carry without sending anything.
func TestLeaseRXQueueBadInput(t *testing.T) {
	sent := 0
	fakeKernel(t, testNetdevFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		sent++
		return genlReply(_NETDEV_CMD_QUEUE_CREATE, nlAttr(1, nlU32(1))), nil
	})
	n := dialFakeNetdev(t)
	for _, tt := range []struct {
		ifindex int
		phys    Lease
	}{
		{0, Lease{Ifindex: 2, NetnsID: SameNetns}},
		{-1, Lease{Ifindex: 2, NetnsID: SameNetns}},
		{9, Lease{Ifindex: 0, NetnsID: SameNetns}},
		{9, Lease{Ifindex: 2, Queue: -1, NetnsID: SameNetns}},
		{9, Lease{Ifindex: 2, NetnsID: -2}},
	} {
		_, err := n.LeaseRXQueue(tt.ifindex, tt.phys)
		if !errors.Is(err, unix.EINVAL) {
			t.Errorf("LeaseRXQueue(%d, %+v): %v, want EINVAL", tt.ifindex, tt.phys, err)
		}
	}
	if sent != 0 {
		t.Errorf("%d bad requests reached the kernel", sent)
	}
}

func TestLeaseRXQueueOldKernel(t *testing.T) {
	old := dialGenl
	// A 7.0-like netdev family: bind-tx but no queue-create.
	dialGenl = func() (genlConn, error) { return genltest.Dial(familyWithOps(1, 5, 10, 12, 13, 15)), nil }
	defer func() { dialGenl = old }()
	n := dialFakeNetdev(t)
	_, err := n.LeaseRXQueue(9, Lease{Ifindex: 2, NetnsID: SameNetns})
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "7.1") {
		t.Fatalf("queue-create on a kernel without it: %v, want ErrNotSupported naming 7.1", err)
	}
}

func TestLeaseRXQueueBadReply(t *testing.T) {
	for name, reply := range map[string][]genetlink.Message{
		"no id":     genlReply(_NETDEV_CMD_QUEUE_CREATE),
		"two":       append(genlReply(_NETDEV_CMD_QUEUE_CREATE, nlAttr(1, nlU32(1))), genlReply(_NETDEV_CMD_QUEUE_CREATE, nlAttr(1, nlU32(2)))...),
		"truncated": {{Header: genetlink.Header{Command: _NETDEV_CMD_QUEUE_CREATE, Version: 1}, Data: nlAttr(1, nlU32(1))[:6]}},
	} {
		t.Run(name, func(t *testing.T) {
			fakeKernel(t, testNetdevFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
				return reply, nil
			})
			n := dialFakeNetdev(t)
			id, err := n.LeaseRXQueue(9, Lease{Ifindex: 2, NetnsID: SameNetns})
			var e *Error
			if err == nil || !errors.As(err, &e) || e.Op != "queue-create" {
				t.Errorf("got id %d, err %v; want a queue-create *Error", id, err)
			}
		})
	}
}

func TestQueueLeaseDecoding(t *testing.T) {
	lease := func(attrs ...[]byte) []byte { return nlAttr(8|unix.NLA_F_NESTED, nlCat(attrs...)) }
	leaseQueue := nlAttr(2|unix.NLA_F_NESTED, nlCat(nlAttr(1, nlU32(1)), nlAttr(3, nlU32(0))))
	fakeKernel(t, testNetdevFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		base := func(id uint32) [][]byte {
			return [][]byte{nlAttr(1, nlU32(id)), nlAttr(2, nlU32(3)), nlAttr(3, nlU32(0))}
		}
		var msgs []genetlink.Message
		msgs = append(msgs, genlReply(_NETDEV_CMD_QUEUE_GET, base(0)...)...) // not leased
		// Leased into another netns (id 0), as the physical device reports it.
		msgs = append(msgs, genlReply(_NETDEV_CMD_QUEUE_GET, append(base(1), lease(leaseQueue, nlAttr(1, nlU32(12)), nlAttr(3, nlS32(0))))...)...)
		// Leased within the same netns: no netns-id.
		msgs = append(msgs, genlReply(_NETDEV_CMD_QUEUE_GET, append(base(2), lease(nlAttr(1, nlU32(13)), leaseQueue), nlAttr(5, nlU32(4)))...)...)
		return msgs, nil
	})
	n := dialFakeNetdev(t)
	qs, err := n.Queues(3)
	if err != nil {
		t.Fatal(err)
	}
	want := []Queue{
		{ID: 0, Ifindex: 3},
		{ID: 1, Ifindex: 3, Lease: &Lease{Ifindex: 12, Queue: 1, Type: DirectionRX, NetnsID: 0}},
		{ID: 2, Ifindex: 3, DMABuf: 4, Lease: &Lease{Ifindex: 13, Queue: 1, Type: DirectionRX, NetnsID: SameNetns}},
	}
	if diff := cmp.Diff(want, qs); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestQueueLeaseMalformed(t *testing.T) {
	// A lease nest whose inner attribute claims more bytes than it has.
	bad := nlAttr(8|unix.NLA_F_NESTED, []byte{12, 0, 1, 0, 1, 0, 0, 0})
	fakeKernel(t, testNetdevFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return genlReply(_NETDEV_CMD_QUEUE_GET, nlAttr(1, nlU32(0)), nlAttr(2, nlU32(3)), nlAttr(3, nlU32(0)), bad), nil
	})
	n := dialFakeNetdev(t)
	if q, err := n.Queue(3, DirectionRX, 0); err == nil {
		t.Errorf("malformed lease decoded as %+v", q.Lease)
	}
}
