package devmem

// SameNetns is the Lease.NetnsID of a device in the netns of the netlink
// socket that asks: no netns-id attribute is sent, none was reported.
const SameNetns = -1

// A Lease ties an RX queue of a virtual netdev (a netkit device in a
// container's netns) to an RX queue of a physical one (Linux 7.1). Memory
// providers bound through the virtual queue — a devmem dma-buf by BindRX on
// the netkit device, an io_uring zero-copy area — are installed on the
// physical queue, so the NIC writes payload into memory the container owns
// while the NIC itself stays with the host.
//
// As a request ([Netdev.LeaseRXQueue]) it names the physical queue; in a
// queue-get answer ([Queue.Lease], reported on the physical device's queue)
// it names the virtual queue holding the lease.
type Lease struct {
	// Ifindex is the other device's interface index, in that device's own
	// netns.
	Ifindex int
	// Queue is the queue id on the other device.
	Queue int
	// Type is the other queue's type. Only RX queues can be leased; a
	// request for a TX queue is sent as is and the kernel refuses it
	// (EINVAL).
	Type Direction
	// NetnsID is the id (netnsid) by which the netns of the asking socket
	// knows the other device's netns, or SameNetns. See netns.Handle.PeerID
	// for getting one. In a request, an id needs CAP_NET_ADMIN in the
	// initial user namespace.
	NetnsID int
}

// LeaseRXQueue creates a new RX queue on the virtual netdev ifindex and
// leases to it the physical queue named by phys (queue-create, Linux 7.1).
// It returns the new queue's id on the virtual device: the queue to name
// in BindRX(ifindex, buf, []int{id}, ...) from the virtual device's netns.
//
// ifindex is looked up in the netns of n's socket: dial n inside the
// container's netns (netns.Handle.Do) and give phys.NetnsID as that netns
// knows the host's. The operation needs CAP_NET_ADMIN in the initial user
// namespace; a container with only a user namespace of its own gets EPERM.
//
// The lease has no explicit teardown: it ends with the virtual device
// (deleting either end of a netkit pair, or its netns going away), and
// the kernel deletes the virtual device if the physical one goes.
//
// Refusals are *Error values with the kernel's errno and message:
// EBUSY for a physical queue already leased or bound ("Device queue in use
// due to queue leasing", "... by memory provider"), ENONET for an unknown
// netns id, ENODEV for an unknown ifindex, ERANGE for a queue past the
// device's, EINVAL for a TX queue, a virtual device that cannot create
// queues or a lease device without queue management ("Device does not
// support queue creation", "Lease device is a virtual device", "Lease
// device does not support queue management operations"), EOPNOTSUPP from
// netkit for its primary device or leases from two physical devices,
// and ErrNotSupported on kernels without queue-create.
func (n *Netdev) LeaseRXQueue(ifindex int, phys Lease) (int, error) {
	return n.c.leaseRXQueue(ifindex, phys)
}
