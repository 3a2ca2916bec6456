//go:build linux

package selftest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/devmem-go/devmem/netns"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// UserNSDir is where NewPod bind-mounts a pod's user namespace, as the
// kernel's UserNetNS does.
const UserNSDir = "/run/userns"

// A Pod is a container network as the kernel's NetDrvContEnv builds it: a
// netns (optionally owned by its own user namespace) holding the peer end
// of a netkit pair, the primary end in the init netns, a physical RX queue
// leased to the peer, and BPF programs on both paths:
//
//	remote --> IfName ingress --bpf_redirect_peer--> nk_guest (pod)
//	pod --> nk_guest --> nk_host ingress --bpf_redirect_neigh--> IfName --> remote
//
// Only one pod exists at a time (the addresses and the BPF match are
// fixed). Close undoes everything.
type Pod struct {
	PodEnv
	// Netns is the pod's netns, for in-process work (netns.Handle.Do).
	NS *netns.Handle
	// PhysIfIndex is the physical device (the topology's IfIndex).
	PhysIfIndex int

	topo      *Topology
	userNS    *os.File // held so the user namespace outlives its mount
	links     []int    // tcx link fds
	mu        sync.Mutex
	netkitUp  bool
	closed    bool
	oldSysctl map[string]string
}

// NewPod builds a pod beside the topology's netdevsim port. The caller
// must hold CAP_NET_ADMIN and CAP_SYS_ADMIN in the init namespaces (the VM
// runs tests as root).
func NewPod(topo *Topology, opts *PodOptions) (_ *Pod, err error) {
	var o PodOptions
	if opts != nil {
		o = *opts
	}
	if o.Name == "" {
		o.Name = "pod"
	}
	if o.RXQueues == 0 {
		o.RXQueues = 2
	}
	p := &Pod{topo: topo, PhysIfIndex: topo.IfIndex, oldSysctl: map[string]string{}}
	p.PodEnv = PodEnv{
		Netns:       netns.NamedDir + "/" + o.Name,
		HostIfName:  "nk_host",
		GuestIfName: "nk_guest",
		Addr6:       PodAddr6,
		PhysQueue:   -1,
		Queue:       -1,
		NetnsID:     -1,
	}
	defer func() {
		if err != nil {
			p.Close()
			err = fmt.Errorf("selftest: pod: %w", err)
		}
	}()

	if o.UserNS {
		if err := p.newUserNetns(o.Name); err != nil {
			return nil, err
		}
	} else if p.NS, err = netns.NewNamed(o.Name); err != nil {
		return nil, err
	}
	// As env.py: the host forwards and still takes router advertisements.
	for k, v := range map[string]string{"net/ipv6/conf/all/forwarding": "1", "net/ipv6/conf/all/accept_ra": "2"} {
		if err := p.setSysctl(k, v); err != nil {
			return nil, err
		}
	}
	if err := p.NS.Do(func() error {
		for _, c := range []string{"default", "all"} {
			if err := writeSysctl("net/ipv6/conf/"+c+"/accept_dad", "0"); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}

	if err := p.newNetkit(o.RXQueues); err != nil {
		return nil, err
	}
	if err := p.addressAndRoute(); err != nil {
		return nil, err
	}
	// A pod's netns knows the host's by an id: the netns-id of the lease.
	host, err := netns.Current()
	if err != nil {
		return nil, err
	}
	defer host.Close()
	if p.NetnsID, err = p.NS.PeerID(host); err != nil {
		return nil, err
	}
	if err := p.attachBPF(); err != nil {
		return nil, err
	}
	if !o.NoLease {
		q := o.PhysQueue
		if q == 0 {
			if q, err = harnessLastRXQueue(topo.IfIndex); err != nil {
				return nil, err
			}
		}
		id, err := p.Lease(q)
		if err != nil {
			return nil, err
		}
		p.PhysQueue, p.Queue = q, id
	}
	return p, nil
}

// newUserNetns makes a user namespace and a netns it owns from a child
// process, pins both with bind mounts and lets the child go.
func (p *Pod) newUserNetns(name string) error {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		return err
	}
	cmd := exec.Command(sleep, "1000000")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:  unix.CLONE_NEWUSER | unix.CLONE_NEWNET,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}},
		Pdeathsig:   unix.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start a process in a new user and net namespace: %w", err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	// Start returns once the child has exec'd, so its namespaces are set.
	pid := strconv.Itoa(cmd.Process.Pid)
	if p.userNS, err = os.Open("/proc/" + pid + "/ns/user"); err != nil {
		return err
	}
	userPath := filepath.Join(UserNSDir, name)
	if err := bindNS("/proc/"+pid+"/ns/user", userPath); err != nil {
		return err
	}
	p.UserNS = userPath
	if err := bindNS("/proc/"+pid+"/ns/net", p.Netns); err != nil {
		return err
	}
	p.NS, err = netns.FromPath(p.Netns)
	return err
}

func bindNS(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		os.Remove(dst)
		return fmt.Errorf("bind mount %s on %s: %w", src, dst, err)
	}
	return nil
}

func unbindNS(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Netkit attributes (include/uapi/linux/if_link.h).
const (
	iflaNetkitPeerInfo   = 1
	iflaNetkitPolicy     = 3
	iflaNetkitPeerPolicy = 4
	iflaNetkitMode       = 5
	netkitPass           = 0 // NETKIT_PASS: "forward"
	netkitL2             = 0 // NETKIT_L2 (enum netkit_mode starts with L2)
)

// ifinfomsg is a zeroed struct ifinfomsg for ifindex.
func ifinfomsg(ifindex int) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(b[4:], uint32(ifindex))
	return b
}

func rtnlDo(ns *netns.Handle, typ netlink.HeaderType, flags netlink.HeaderFlags, body []byte) error {
	var c *netlink.Conn
	var err error
	if ns != nil {
		c, err = ns.DialNetlink(unix.NETLINK_ROUTE, &netlink.Config{Strict: true})
	} else {
		c, err = netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Strict: true})
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Acknowledge | flags},
		Data:   body,
	})
	return err
}

// newNetkit makes the pair as env.py does (mode l2, policy and peer policy
// forward, rxqueues RX queues on both ends), moves the peer into the pod
// and brings both up.
func (p *Pod) newNetkit(rxqueues int) error {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, p.HostIfName)
	ae.Uint32(unix.IFLA_NUM_RX_QUEUES, uint32(rxqueues))
	ae.Nested(unix.IFLA_LINKINFO, func(li *netlink.AttributeEncoder) error {
		li.String(unix.IFLA_INFO_KIND, "netkit")
		li.Nested(unix.IFLA_INFO_DATA, func(d *netlink.AttributeEncoder) error {
			peer := netlink.NewAttributeEncoder()
			peer.String(unix.IFLA_IFNAME, p.GuestIfName)
			peer.Uint32(unix.IFLA_NUM_RX_QUEUES, uint32(rxqueues))
			pb, err := peer.Encode()
			if err != nil {
				return err
			}
			d.Bytes(iflaNetkitPeerInfo, append(ifinfomsg(0), pb...))
			d.Uint32(iflaNetkitMode, netkitL2)
			d.Uint32(iflaNetkitPolicy, netkitPass)
			d.Uint32(iflaNetkitPeerPolicy, netkitPass)
			return nil
		})
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	if err := rtnlDo(nil, unix.RTM_NEWLINK, netlink.Create|netlink.Excl, append(ifinfomsg(0), attrs...)); err != nil {
		return fmt.Errorf("create netkit pair: %w", err)
	}
	p.netkitUp = true
	host, err := net.InterfaceByName(p.HostIfName)
	if err != nil {
		return err
	}
	p.HostIfIndex = host.Index
	guest, err := net.InterfaceByName(p.GuestIfName)
	if err != nil {
		return err
	}
	// Move the peer into the pod.
	ae = netlink.NewAttributeEncoder()
	ae.Uint32(unix.IFLA_NET_NS_FD, uint32(p.NS.Fd()))
	attrs, _ = ae.Encode()
	if err := rtnlDo(nil, unix.RTM_NEWLINK, 0, append(ifinfomsg(guest.Index), attrs...)); err != nil {
		return fmt.Errorf("move %s into the pod: %w", p.GuestIfName, err)
	}
	return p.NS.Do(func() error {
		g, err := net.InterfaceByName(p.GuestIfName)
		if err != nil {
			return err
		}
		p.GuestIfIndex = g.Index
		return nil
	})
}

func (p *Pod) addressAndRoute() error {
	ip := ipTool()
	if err := podIP(ip, p.Netns,
		"link set lo up",
		"link set dev "+p.GuestIfName+" up",
		"addr add "+podGuestLinkLocal+"/64 dev "+p.GuestIfName+" nodad",
		"addr add "+p.Addr6.String()+"/64 dev "+p.GuestIfName+" nodad",
		"route add ::/0 via "+podHostLinkLocal+" dev "+p.GuestIfName,
	); err != nil {
		return err
	}
	if err := podIP(ip, "",
		"link set dev "+p.HostIfName+" up",
		"addr add "+podHostLinkLocal+"/64 dev "+p.HostIfName+" nodad",
		"route add "+p.Addr6.String()+"/128 via "+podGuestLinkLocal+" dev "+p.HostIfName,
	); err != nil {
		return err
	}
	// The remote end reaches the pod's /64 through the host.
	return podIP(ip, netns.NamedDir+"/"+p.topo.PeerNetns,
		"route replace "+PodPrefix.String()+" via "+p.topo.Addr6.String())
}

// podIP runs ip commands in one process, in the netns at nsPath ("" for
// the init netns). ip -n takes a name; nsenter-like joining by path keeps
// userns-owned pods working the same way.
func podIP(ip, nsPath string, cmds ...string) error {
	args := []string{"-batch", "-"}
	if nsPath != "" {
		args = append([]string{"-n", filepath.Base(nsPath)}, args...)
	}
	var out bytes.Buffer
	cmd := exec.Command(ip, args...)
	cmd.Stdin = strings.NewReader(strings.Join(cmds, "\n") + "\n")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %v: %w: %s", args, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

func (p *Pod) attachBPF() error {
	fwd, err := attachProg("pod_forward", podForwardProg(PodPrefix, p.HostIfIndex), p.PhysIfIndex)
	if err != nil {
		return err
	}
	p.links = append(p.links, fwd)
	rdr, err := attachProg("pod_redirect", podPrimaryRedirectProg(p.PhysIfIndex), p.HostIfIndex)
	if err != nil {
		return err
	}
	p.links = append(p.links, rdr)
	return nil
}

// Lease leases physical queue physQueue of the topology's IfName to
// nk_guest, from inside the pod's netns as configure_nic does (queue-create
// with netns-id naming the init netns), and returns the new queue's id on
// nk_guest.
func (p *Pod) Lease(physQueue int) (int, error) {
	id := -1
	err := p.NS.Do(func() error {
		var err error
		id, err = harnessQueueCreate(p.GuestIfIndex, p.PhysIfIndex, physQueue, p.NetnsID)
		return err
	})
	return id, err
}

// Command returns a command that runs name inside the pod: in its netns
// and, for a userns pod, as root of its user namespace (nsenter --user
// --net --setuid 0 --setgid 0, as the kernel's tests start pod processes).
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	nsargs := []string{"--net=" + p.Netns}
	if p.UserNS != "" {
		nsargs = append([]string{"--user=" + p.UserNS}, nsargs...)
		nsargs = append(nsargs, "--setuid=0", "--setgid=0")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		nsenter = "/usr/bin/nsenter"
	}
	cmd := exec.CommandContext(ctx, nsenter, append(append(nsargs, "--", name), args...)...)
	cmd.Env = append(os.Environ(), p.Environ()...)
	return cmd
}

// DeleteNetkit deletes the netkit pair (deleting nk_host takes nk_guest
// with it), which ends the lease.
func (p *Pod) DeleteNetkit() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deleteNetkitLocked()
}

func (p *Pod) deleteNetkitLocked() error {
	if !p.netkitUp {
		return nil
	}
	for _, fd := range p.links {
		unix.Close(fd)
	}
	p.links = nil
	idx := p.HostIfIndex
	if idx == 0 {
		i, err := net.InterfaceByName(p.HostIfName)
		if err != nil {
			return err
		}
		idx = i.Index
	}
	if err := rtnlDo(nil, unix.RTM_DELLINK, 0, ifinfomsg(idx)); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", p.HostIfName, err)
	}
	p.netkitUp = false
	return nil
}

// DeleteNetns removes the pod's namespace mounts and the handles this
// process holds; the netns goes away once no process or socket is left in
// it, and takes nk_guest (and so the pair and the lease) with it.
func (p *Pod) DeleteNetns() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.deleteNetnsLocked()
}

func (p *Pod) deleteNetnsLocked() error {
	var errs []error
	if p.NS != nil {
		p.NS.Close()
	}
	if p.userNS != nil {
		p.userNS.Close()
		p.userNS = nil
	}
	if p.Netns != "" {
		errs = append(errs, unbindNS(p.Netns))
	}
	if p.UserNS != "" {
		errs = append(errs, unbindNS(p.UserNS))
	}
	return errors.Join(errs...)
}

// Close deletes the netkit pair, the namespaces, the BPF links and the
// remote's route, and restores the sysctls. It is idempotent.
func (p *Pod) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	errs = append(errs, p.deleteNetkitLocked())
	if p.topo != nil {
		podIP(ipTool(), netns.NamedDir+"/"+p.topo.PeerNetns, "route del "+PodPrefix.String())
	}
	errs = append(errs, p.deleteNetnsLocked())
	for k, v := range p.oldSysctl {
		errs = append(errs, writeSysctl(k, v))
	}
	return errors.Join(errs...)
}

func (p *Pod) setSysctl(key, value string) error {
	old, err := os.ReadFile("/proc/sys/" + key)
	if err != nil {
		return err
	}
	if _, ok := p.oldSysctl[key]; !ok {
		p.oldSysctl[key] = strings.TrimSpace(string(old))
	}
	return writeSysctl(key, value)
}

func writeSysctl(key, value string) error {
	return os.WriteFile("/proc/sys/"+key, []byte(value), 0)
}
