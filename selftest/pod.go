package selftest

import (
	"net/netip"
	"strconv"
)

// The pod network, as the kernel's NetDrvContEnv lays it out (env.py): a
// netkit pair, nk_host in the init netns and nk_guest in the pod's netns,
// link-local addresses on both, the pod's address from its own /64, and
// routes that make the host the pod's gateway. The remote end (the peer
// netns here) routes the pod's /64 via the host's Addr6.
var (
	// PodPrefix is the pod's /64; the BPF forward program matches on it.
	PodPrefix = netip.MustParsePrefix("2001:db8:2::/64")
	// PodAddr6 is the pod's address, on nk_guest.
	PodAddr6 = netip.MustParseAddr("2001:db8:2::2")
)

const (
	podHostLinkLocal  = "fe80::1"
	podGuestLinkLocal = "fe80::2"
)

// PodOptions say what NewPod builds. The zero value is a pod netns named
// "pod" owned by the init user namespace, a netkit pair with two RX queues
// and the last queue of the physical device leased to the pod.
type PodOptions struct {
	// Name names the netns (/run/netns/NAME) and, with UserNS, the user
	// namespace (/run/userns/NAME). Default "pod".
	Name string
	// UserNS makes the netns owned by a new user namespace whose root is
	// mapped to the init namespace's root, as "unshare --user --net
	// --map-root-user" (the kernel's UserNetNS) does. Processes started by
	// Pod.Command then hold CAP_NET_ADMIN over the pod's netns only.
	UserNS bool
	// RXQueues is the netkit pair's num-rx-queues (default 2): queue 0 is
	// netkit's own, each lease adds one, up to RXQueues-1 leases.
	RXQueues int
	// NoLease leaves the queues alone; call Pod.Lease later.
	NoLease bool
	// PhysQueue is the physical queue to lease; 0 means the device's last
	// RX queue, as configure_nic in devmem_lib.py picks it. (Lease queue 0
	// with NoLease and Pod.Lease(0).)
	PhysQueue int
}

// PodEnv is the pod that vmexec -pod made, described by its environment
// (DEVMEM_POD_*), for programs that run inside it (cmd/ncdevmem, a shell).
type PodEnv struct {
	Netns        string     // DEVMEM_POD_NETNS: /run/netns/NAME
	UserNS       string     // DEVMEM_POD_USERNS: /run/userns/NAME, "" without
	HostIfName   string     // DEVMEM_POD_HOST_IFNAME: nk_host, init netns
	HostIfIndex  int        // DEVMEM_POD_HOST_IFINDEX
	GuestIfName  string     // DEVMEM_POD_IFNAME: nk_guest, in the pod
	GuestIfIndex int        // DEVMEM_POD_IFINDEX (an index in the pod's netns)
	Addr6        netip.Addr // DEVMEM_POD_ADDR6
	PhysQueue    int        // DEVMEM_POD_PHYS_QUEUE: the leased queue of IfName, -1 if none
	Queue        int        // DEVMEM_POD_QUEUE: its id on nk_guest, -1 if none
	NetnsID      int        // DEVMEM_POD_NETNSID: the init netns's id in the pod
}

// Environ returns the pod as DEVMEM_POD_* variables.
func (e *PodEnv) Environ() []string {
	return []string{
		"DEVMEM_POD_NETNS=" + e.Netns,
		"DEVMEM_POD_USERNS=" + e.UserNS,
		"DEVMEM_POD_HOST_IFNAME=" + e.HostIfName,
		"DEVMEM_POD_HOST_IFINDEX=" + strconv.Itoa(e.HostIfIndex),
		"DEVMEM_POD_IFNAME=" + e.GuestIfName,
		"DEVMEM_POD_IFINDEX=" + strconv.Itoa(e.GuestIfIndex),
		"DEVMEM_POD_ADDR6=" + e.Addr6.String(),
		"DEVMEM_POD_PHYS_QUEUE=" + strconv.Itoa(e.PhysQueue),
		"DEVMEM_POD_QUEUE=" + strconv.Itoa(e.Queue),
		"DEVMEM_POD_NETNSID=" + strconv.Itoa(e.NetnsID),
	}
}

// PodFromEnv returns the pod vmexec -pod made, or ok false when there is
// none.
func PodFromEnv(getenv func(string) string) (e *PodEnv, ok bool) {
	if getenv("DEVMEM_POD_NETNS") == "" {
		return nil, false
	}
	atoi := func(k string) int {
		v, err := strconv.Atoi(getenv(k))
		if err != nil {
			return -1
		}
		return v
	}
	a, _ := netip.ParseAddr(getenv("DEVMEM_POD_ADDR6"))
	return &PodEnv{
		Netns:        getenv("DEVMEM_POD_NETNS"),
		UserNS:       getenv("DEVMEM_POD_USERNS"),
		HostIfName:   getenv("DEVMEM_POD_HOST_IFNAME"),
		HostIfIndex:  atoi("DEVMEM_POD_HOST_IFINDEX"),
		GuestIfName:  getenv("DEVMEM_POD_IFNAME"),
		GuestIfIndex: atoi("DEVMEM_POD_IFINDEX"),
		Addr6:        a,
		PhysQueue:    atoi("DEVMEM_POD_PHYS_QUEUE"),
		Queue:        atoi("DEVMEM_POD_QUEUE"),
		NetnsID:      atoi("DEVMEM_POD_NETNSID"),
	}, true
}
