//go:build vmtest

package selftest

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
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
