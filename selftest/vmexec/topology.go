//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/devmem-go/devmem/selftest"
	"golang.org/x/sys/unix"
)

// The fixed test network: documentation prefixes, so nothing can leak.
const (
	peerNetns = "peer"
	hostAddr4 = "192.0.2.1"
	peerAddr4 = "192.0.2.2"
	hostAddr6 = "2001:db8::1"
	peerAddr6 = "2001:db8::2"
	// netdevsim device ids; device N's ports show up in debugfs under
	// netdevsim/netdevsimN/ports/.
	hostNsimID = 1
	peerNsimID = 2
	// "id ports queues" for /sys/bus/netdevsim/new_device.
	nsimPorts  = 1
	nsimQueues = 4
)

type topology struct {
	ifname      string
	ifindex     int
	peerIfname  string
	peerIfindex int
	// pod is the container network of -pod, nil without.
	pod *selftest.Pod
}

func nsimDebugfs(id int) string {
	return fmt.Sprintf("/sys/kernel/debug/netdevsim/netdevsim%d/ports/0", id)
}

func (t *topology) environ() []string {
	env := []string{
		"DEVMEM_IFNAME=" + t.ifname,
		"DEVMEM_IFINDEX=" + strconv.Itoa(t.ifindex),
		"DEVMEM_ADDR4=" + hostAddr4,
		"DEVMEM_ADDR6=" + hostAddr6,
		"DEVMEM_PEER_NETNS=" + peerNetns,
		"DEVMEM_PEER_IFNAME=" + t.peerIfname,
		"DEVMEM_PEER_IFINDEX=" + strconv.Itoa(t.peerIfindex),
		"DEVMEM_PEER_ADDR4=" + peerAddr4,
		"DEVMEM_PEER_ADDR6=" + peerAddr6,
		"DEVMEM_NSIM_DEBUGFS=" + nsimDebugfs(hostNsimID),
		"DEVMEM_PEER_NSIM_DEBUGFS=" + nsimDebugfs(peerNsimID),
	}
	if t.pod != nil {
		env = append(env, t.pod.Environ()...)
	}
	return env
}

// setupTopology makes two netdevsim ports, eth0 in the init netns and eth0
// in netns "peer", links them back to back, addresses them and proves TCP
// works both ways over IPv4 and IPv6.
func setupTopology(logf func(string, ...any)) (*topology, error) {
	ip, err := findTool("ip")
	if err != nil {
		return nil, err
	}
	if err := quietIPv6(); err != nil {
		return nil, err
	}
	// Taken before any thread changes netns: every thread is in the init
	// netns now. (Later, /proc/self may name a thread parked elsewhere.)
	initNS, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, err
	}
	defer initNS.Close()
	if err := newNsimDevice(hostNsimID); err != nil {
		return nil, err
	}
	t := &topology{}
	var hostMAC, peerMAC net.HardwareAddr
	if t.ifname, t.ifindex, hostMAC, err = onlyNetdev(); err != nil {
		return nil, err
	}
	if err := addNetns(peerNetns); err != nil {
		return nil, err
	}
	peerNS, err := os.Open("/run/netns/" + peerNetns)
	if err != nil {
		return nil, err
	}
	defer peerNS.Close()

	// netdevsim creates the device in the writer's netns, so the peer's
	// device is made from a thread that joined the peer netns.
	err = selftest.InNetns(peerNS, func() error {
		if err := quietIPv6(); err != nil {
			return err
		}
		if err := setLinkUp("lo"); err != nil {
			return err
		}
		if err := newNsimDevice(peerNsimID); err != nil {
			return err
		}
		t.peerIfname, t.peerIfindex, peerMAC, err = onlyNetdev()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("peer netns: %w", err)
	}
	// Carrier comes up only if both ends are running when they are linked,
	// so links go up (and get their addresses) first. One ip process per
	// netns: each exec pays for loading ip over 9p.
	// Permanent neighbour entries: no ARP or neighbour solicitation (a NUD
	// probe after a receive-only flow, say) lands on some rx queue while a
	// test counts what a queue received.
	if err := ipBatch(ip, "",
		"link set "+t.ifname+" up",
		"addr add "+hostAddr4+"/24 dev "+t.ifname,
		"addr add "+hostAddr6+"/64 dev "+t.ifname+" nodad",
		"neigh replace "+peerAddr4+" lladdr "+peerMAC.String()+" dev "+t.ifname+" nud permanent",
		"neigh replace "+peerAddr6+" lladdr "+peerMAC.String()+" dev "+t.ifname+" nud permanent",
	); err != nil {
		return nil, err
	}
	if err := ipBatch(ip, peerNetns,
		"link set "+t.peerIfname+" up",
		"addr add "+peerAddr4+"/24 dev "+t.peerIfname,
		"addr add "+peerAddr6+"/64 dev "+t.peerIfname+" nodad",
		"neigh replace "+hostAddr4+" lladdr "+hostMAC.String()+" dev "+t.peerIfname+" nud permanent",
		"neigh replace "+hostAddr6+" lladdr "+hostMAC.String()+" dev "+t.peerIfname+" nud permanent",
	); err != nil {
		return nil, err
	}
	link := fmt.Sprintf("%d:%d %d:%d", initNS.Fd(), t.ifindex, peerNS.Fd(), t.peerIfindex)
	if err := writeFile("/sys/bus/netdevsim/link_device", link); err != nil {
		return nil, err
	}
	logf("netdevsim %s (ifindex %d) <-> peer %s (ifindex %d)", t.ifname, t.ifindex, t.peerIfname, t.peerIfindex)
	if err := checkTCP(peerNS); err != nil {
		return nil, err
	}
	if !fileExists(nsimDebugfs(hostNsimID)) {
		logf("warning: %s does not exist", nsimDebugfs(hostNsimID))
	}
	if mode := os.Getenv(podModeEnv); mode != "" {
		if t.pod, err = setupPod(t, mode); err != nil {
			return nil, err
		}
		logf("pod %s: %s (ifindex %d) <-> %s (ifindex %d in the pod), %s queue %d leased as %s queue %d, userns %q",
			t.pod.Netns, t.pod.HostIfName, t.pod.HostIfIndex, t.pod.GuestIfName, t.pod.GuestIfIndex,
			t.ifname, t.pod.PhysQueue, t.pod.GuestIfName, t.pod.Queue, t.pod.UserNS)
	}
	return t, nil
}

// podModeEnv carries vmexec's -pod flag from the host to the guest's
// topology setup.
const podModeEnv = "DEVMEM_VMEXEC_POD"

// setupPod adds the container network of -pod MODE: netns "pod" (MODE
// "netns"), or netns "pod" owned by user namespace "pod" (MODE "userns"),
// with a netkit pair, the last netdevsim queue leased to nk_guest and the
// BPF redirects of the kernel's NetDrvContEnv. It stays for the VM's life.
func setupPod(t *topology, mode string) (*selftest.Pod, error) {
	var opts selftest.PodOptions
	switch mode {
	case "netns":
	case "userns":
		opts.UserNS = true
	default:
		return nil, fmt.Errorf("-pod %q: want netns or userns", mode)
	}
	topo := &selftest.Topology{
		IfName:    t.ifname,
		IfIndex:   t.ifindex,
		Addr6:     netip.MustParseAddr(hostAddr6),
		PeerNetns: peerNetns,
	}
	return selftest.NewPod(topo, &opts)
}

func newNsimDevice(id int) error {
	return writeFile("/sys/bus/netdevsim/new_device", fmt.Sprintf("%d %d %d", id, nsimPorts, nsimQueues))
}

// onlyNetdev returns the one Ethernet interface of the calling thread's
// netns: the netdevsim port just created there (the others are loopback and
// the IPv6 tunnels' fallback devices, sit0 and friends).
func onlyNetdev() (string, int, net.HardwareAddr, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", 0, nil, err
	}
	var found []net.Interface
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 && len(i.HardwareAddr) == 6 {
			found = append(found, i)
		}
	}
	if len(found) != 1 {
		return "", 0, nil, fmt.Errorf("expected one netdevsim interface, found %v", found)
	}
	return found[0].Name, found[0].Index, found[0].HardwareAddr, nil
}

// quietIPv6 sets the calling thread's netns up so that an idle link sends
// nothing of its own: DAD would hold the IPv6 addresses tentative for a
// second or more, and router solicitations (unlimited since Linux 4.9,
// backing off from 4 s) would land on the other end's rx queues in the
// middle of tests that count what each queue received. Devices made after
// this inherit "default".
func quietIPv6() error {
	for _, c := range []string{"default", "all"} {
		for _, k := range []string{"accept_dad", "router_solicitations"} {
			if err := writeFile("/proc/sys/net/ipv6/conf/"+c+"/"+k, "0"); err != nil {
				return err
			}
		}
	}
	return nil
}

// checkTCP connects from the peer to the host side and back, over both
// address families, so a broken link fails here and not in some test.
func checkTCP(peerNS *os.File) error {
	// A healthy check takes milliseconds; the deadline only matters on an
	// overloaded host, where a guest that needed minutes to boot also needs
	// several SYN retransmits (1 s, 2 s, 4 s, ...) here. 10 s was too short.
	ctx, cancel := context.WithTimeout(context.Background(), topologyCheckTimeout)
	defer cancel()
	var d net.Dialer
	for _, pair := range [][2]string{{hostAddr4, peerAddr4}, {hostAddr6, peerAddr6}} {
		host, peer := pair[0], pair[1]
		// peer -> host
		ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return err
		}
		err = selftest.InNetns(peerNS, func() error {
			c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
			if err == nil {
				c.Close()
			}
			return err
		})
		ln.Close()
		if err != nil {
			return fmt.Errorf("TCP from peer to %s: %w", host, err)
		}
		// host -> peer
		err = selftest.InNetns(peerNS, func() error {
			ln, err = net.Listen("tcp", net.JoinHostPort(peer, "0"))
			return err
		})
		if err != nil {
			return err
		}
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		ln.Close()
		if err != nil {
			return fmt.Errorf("TCP from host to %s: %w", peer, err)
		}
		c.Close()
	}
	return nil
}

// topologyCheckTimeout bounds all four TCP checks together.
const topologyCheckTimeout = 60 * time.Second

func setLinkUp(name string) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: get flags: %w", name, err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("%s: set up: %w", name, err)
	}
	return nil
}

func findTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		if p := filepath.Join(dir, name); fileExists(p) {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (install iproute2)", name)
}

// addNetns does what "ip netns add" does, minus making /run/netns a shared
// mount: a new netns kept alive by a bind mount on /run/netns/NAME, which
// "ip netns exec NAME" and setns(open(/run/netns/NAME)) then find.
func addNetns(name string) error {
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		return err
	}
	path := "/run/netns/" + name
	if err := os.WriteFile(path, nil, 0o444); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("unshare netns: %w", err)
			return
		}
		err = unix.Mount("/proc/thread-self/ns/net", path, "", unix.MS_BIND, "")
		if err != nil {
			err = fmt.Errorf("bind netns to %s: %w", path, err)
		}
		// Back to the init netns, or the thread dies with this goroutine
		// (still locked) rather than run others in the wrong netns.
		if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
			errc <- errors.Join(err, fmt.Errorf("restore netns: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
}

// ipBatch runs ip commands in one process, in netns (or the init netns).
func ipBatch(ip, netns string, cmds ...string) error {
	args := []string{"-batch", "-"}
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	return runInput(strings.Join(cmds, "\n")+"\n", ip, args...)
}

func runInput(stdin, name string, args ...string) error {
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %v: %w: %s", filepath.Base(name), args, err, bytes.TrimSpace(out.Bytes()))
	}
	return nil
}

func writeFile(path, value string) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, path, err)
	}
	return nil
}
