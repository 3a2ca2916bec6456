//go:build vmtest

package selftest

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests check the VM topology vmexec builds; they run only inside the
// VM (go test -tags vmtest -exec vmexec).

func TestTopologyTCPFromPeer(t *testing.T) {
	topo := Require(t)
	for _, addr := range []netip.Addr{topo.Addr4, topo.Addr6} {
		t.Run(addr.String(), func(t *testing.T) {
			ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := DialPeer(ctx, "tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			// The connection came in over the netdevsim link, from the peer.
			remote := s.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			if want := map[bool]netip.Addr{true: topo.PeerAddr4, false: topo.PeerAddr6}[addr.Is4()]; remote != want {
				t.Errorf("connection from %v, want %v", remote, want)
			}
			// Used from another goroutine than the one that dialed it.
			go func() { io.WriteString(c, "ping"); c.Close() }()
			b, err := io.ReadAll(s)
			if err != nil || string(b) != "ping" {
				t.Errorf("read %q, %v; want \"ping\"", b, err)
			}
		})
	}
}

func TestTopologyTCPToPeer(t *testing.T) {
	topo := Require(t)
	for _, addr := range []netip.Addr{topo.PeerAddr4, topo.PeerAddr6} {
		t.Run(addr.String(), func(t *testing.T) {
			ln, err := ListenPeer("tcp", net.JoinHostPort(addr.String(), "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			s, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			s.Close()
		})
	}
}

// TestTopologyQuiet checks that neither end of the link sends packets of
// its own: no router or neighbour solicitation, no ARP, so a test counting
// what an rx queue received (TestQStatsPerQueue) counts only its flows. A
// router solicitation from the peer once landed on a queue it watched.
// The MLD reports that follow link-up (two per group, up to a second
// apart) are the one exception, and are counted.
func TestTopologyQuiet(t *testing.T) {
	topo := Require(t)
	ends := []struct {
		name   string
		peer   bool
		ifname string
	}{{"host", false, topo.IfName}, {"peer", true, topo.PeerIfName}}
	type count struct{ rx, mld uint64 }
	counts := func() []count {
		c := make([]count, len(ends))
		for i, e := range ends {
			c[i].rx = rxPackets(t, e.peer, e.ifname)
			mld, err := strconv.ParseUint(snmpField(readInNetns(t, e.peer, "/proc/thread-self/net/snmp6"), "Icmp6OutMLDv2Reports"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			c[i].mld = mld
		}
		return c
	}
	// Connections of earlier tests may still be closing: wait for the
	// counters to stand still for 300 ms first.
	var before []count
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(300 * time.Millisecond) {
		c := counts()
		if slices.Equal(c, before) {
			break
		}
		before = c
		if time.Now().After(deadline) {
			t.Fatalf("rx counters still moving after 10 s: %v", before)
		}
	}
	// An idle link that solicits does so within this: the first router
	// solicitation goes out as the link comes up, the next after 4 s.
	time.Sleep(1500 * time.Millisecond)
	after := counts()
	for i, e := range ends {
		snmp := readInNetns(t, e.peer, "/proc/thread-self/net/snmp6")
		for _, k := range []string{"Icmp6OutRouterSolicits", "Icmp6OutNeighborSolicits"} {
			if v := snmpField(snmp, k); v != "0" {
				t.Errorf("%s sent %s %s", e.name, k, v)
			}
		}
		arp := strings.Split(strings.TrimSpace(string(readInNetns(t, e.peer, "/proc/thread-self/net/arp"))), "\n")
		for _, l := range arp[1:] {
			// Flags 0x6 is ATF_COM|ATF_PERM; ARP resolved entries are 0x2.
			if f := strings.Fields(l); len(f) < 6 || f[5] == e.ifname && f[2] != "0x6" {
				t.Errorf("%s: ARP entry not permanent: %q", e.name, l)
			}
		}
		other := 1 - i
		rx, mld := after[i].rx-before[i].rx, after[other].mld-before[other].mld
		if rx != mld {
			t.Errorf("%s: %s received %d packets on an idle link, %d of them MLD reports", e.name, e.ifname, rx, mld)
		}
		if mld != 0 {
			t.Logf("%s: %d MLD reports from the other end", e.name, mld)
		}
	}
}

// readInNetns reads a file in the init netns or, with peer, from a thread in
// the peer netns (for /proc/thread-self/net/...).
func readInNetns(t *testing.T, peer bool, path string) []byte {
	t.Helper()
	var b []byte
	read := func() (err error) {
		b, err = os.ReadFile(path)
		return err
	}
	var err error
	if peer {
		err = InPeer(read)
	} else {
		err = read()
	}
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// snmpField returns the value of key in /proc/net/snmp6's "key value" lines.
func snmpField(snmp []byte, key string) string {
	for _, l := range strings.Split(string(snmp), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == key {
			return f[1]
		}
	}
	return "missing"
}

// rxPackets is ifname's received packets from /proc/net/dev of its netns.
func rxPackets(t *testing.T, peer bool, ifname string) uint64 {
	t.Helper()
	for _, l := range strings.Split(string(readInNetns(t, peer, "/proc/thread-self/net/dev")), "\n") {
		name, counters, ok := strings.Cut(l, ":")
		if !ok || strings.TrimSpace(name) != ifname {
			continue
		}
		// bytes packets errs ...
		if f := strings.Fields(counters); len(f) > 1 {
			n, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("%s not in /proc/net/dev", ifname)
	return 0
}

func TestInPeerRestoresNetns(t *testing.T) {
	topo := Require(t)
	before, err := OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	var peerIfs []net.Interface
	if err := InPeer(func() error {
		var err error
		peerIfs, err = net.Interfaces()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !hasInterface(peerIfs, topo.PeerIfName, topo.PeerIfIndex) {
		t.Errorf("peer netns interfaces %v lack %s (%d)", peerIfs, topo.PeerIfName, topo.PeerIfIndex)
	}
	// The thread went back; this goroutine never left the init netns.
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	if !hasInterface(ifs, topo.IfName, topo.IfIndex) {
		t.Errorf("init netns interfaces %v lack %s (%d)", ifs, topo.IfName, topo.IfIndex)
	}
	if after, _ := OpenFDs(); after != before {
		t.Errorf("InPeer leaked descriptors: %d before, %d after", before, after)
	}
}

func hasInterface(ifs []net.Interface, name string, index int) bool {
	for _, i := range ifs {
		if i.Name == name && i.Index == index && i.Flags&net.FlagUp != 0 {
			return true
		}
	}
	return false
}

func TestPeerCommand(t *testing.T) {
	topo := Require(t)
	out, err := PeerCommand(context.Background(), "ip", "-brief", "addr", "show", "dev", topo.PeerIfName).CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if !strings.Contains(string(out), topo.PeerAddr4.String()) {
		t.Errorf("peer %s has no %v: %s", topo.PeerIfName, topo.PeerAddr4, out)
	}
}

func TestNetdevsimDebugfs(t *testing.T) {
	topo := Require(t)
	for _, dir := range []string{topo.NsimDebugfs, topo.PeerNsimDebugfs} {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			t.Errorf("netdevsim port debugfs %s: %v", dir, err)
		}
	}
	// The devmem counters exist only on the patched netdevsim.
	if n, err := NsimCounter("devmem_rx_pkts"); err == nil {
		t.Logf("devmem_rx_pkts = %d (patched netdevsim)", n)
	} else {
		t.Logf("no devmem counters (%v): stock netdevsim?", err)
	}
	if _, err := NsimKnob("../x"); err == nil {
		t.Error("NsimKnob accepted a path outside the port directory")
	}
}

func TestUDMABufDevice(t *testing.T) {
	Require(t)
	if _, err := os.Stat("/dev/udmabuf"); err != nil {
		t.Errorf("the test kernel has no udmabuf: %v", err)
	}
}
