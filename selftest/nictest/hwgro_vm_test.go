//go:build vmtest

package nictest

import (
	"io"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/selftest"
)

// setFeature sets an ethtool feature (ethtool -K) and restores it at
// cleanup.
func setFeature(t *testing.T, ifname, feature string, on bool) {
	t.Helper()
	old, err := selftest.EthtoolFeature(ifname, feature)
	if err != nil {
		t.Fatal(err)
	}
	want := map[bool]string{true: "on", false: "off"}[on]
	t.Cleanup(func() {
		if err := selftest.SetEthtoolFeature(ifname, feature, old); err != nil {
			t.Error(err)
		}
	})
	if err := selftest.SetEthtoolFeature(ifname, feature, want); err != nil {
		t.Fatal(err)
	}
	if got, err := selftest.EthtoolFeature(ifname, feature); got != want {
		t.Fatalf("%s: %s after ethtool -K %s %s (%v)", ifname, got, feature, want, err)
	}
}

// peerSysctl sets a sysctl of the peer netns (KEY as under /proc/sys) and
// restores it at cleanup.
func peerSysctl(t *testing.T, key, value string) {
	t.Helper()
	path := "/proc/sys/" + key
	var old []byte
	err := selftest.InPeer(func() (err error) {
		if old, err = os.ReadFile(path); err != nil {
			return err
		}
		return os.WriteFile(path, []byte(value), 0)
	})
	if err != nil {
		t.Fatalf("peer sysctl %s=%s: %v", key, value, err)
	}
	t.Cleanup(func() {
		if err := selftest.InPeer(func() error { return os.WriteFile(path, old, 0) }); err != nil {
			t.Errorf("restore peer sysctl %s: %v", key, err)
		}
	})
}

// TestRXHWGRO: with rx-gro-hw on, the simulated NIC aggregates a flow's
// in-order segments as bnxt's TPA does (selftest/kernel/README.md): the
// payload lands in the buffers back to back, so a devmem receiver gets
// buffer-sized frags, never one crossing a buffer, instead of one per
// MSS; every byte is still where the frags say, over IPv4 and IPv6, the
// queue's hw-gro stats count the aggregates, and turning the feature off
// brings MSS-sized frags back.
//
// An aggregate is one of the sender's TSO bursts, which TSO autosizing
// shrinks to two segments when the sender's pacing rate is low (the debug
// kernel): the peer is told to send at least 32 segments per burst.
func TestRXHWGRO(t *testing.T) {
	x := setupRX(t, 8<<20, 2, nil)
	peerSysctl(t, "net/ipv4/tcp_min_tso_segs", "32")
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	ifindex := x.topo.IfIndex
	gro := func() (aggs, wire uint64) {
		return qstat(t, nd, ifindex, devmem.DirectionRX, x.queue, devmem.QStatRXHWGROPackets),
			qstat(t, nd, ifindex, devmem.DirectionRX, x.queue, devmem.QStatRXHWGROWirePackets)
	}
	setFeature(t, x.topo.IfName, "rx-gro-hw", true)
	const total = 4 << 20
	for _, addr := range []netip.Addr{x.topo.Addr4, x.topo.Addr6} {
		aggs0, wire0 := gro()
		frags := joinSplit(x.transfer(t, addr, total), niovSize)
		aggs, wire := gro()
		aggs, wire = aggs-aggs0, wire-wire0
		full := 0
		for _, f := range frags {
			if f.offset%niovSize+uint64(f.size) > niovSize {
				t.Errorf("%v: frag %+v crosses a %d-byte buffer", addr, f, niovSize)
			}
			if f.size == niovSize {
				full++
			}
		}
		avg := total / len(frags)
		t.Logf("%v: %d frags for %d bytes (%d on average, %d whole buffers); %d aggregates of %d wire segments",
			addr, len(frags), total, avg, full, aggs, wire)
		// Per-MSS frags average under 1448 bytes.
		if avg < 2048 || full == 0 {
			t.Errorf("%v: frags of %d bytes on average, %d of them whole buffers: not aggregated", addr, avg, full)
		}
		if aggs == 0 || wire < 2*aggs {
			t.Errorf("%v: rx-hw-gro-packets grew by %d, rx-hw-gro-wire-packets by %d", addr, aggs, wire)
		}
	}

	ethtool(t, "-K", x.topo.IfName, "rx-gro-hw", "off")
	aggs0, _ := gro()
	// The frags as received: joinSplit would also join two packets
	// whose payloads happen to touch (a first one a multiple of 128
	// bytes long), and recvmsg only ever splits a frag smaller.
	var maxSize uint32
	for _, f := range x.transfer(t, x.topo.Addr4, total) {
		maxSize = max(maxSize, f.size)
	}
	if aggs, _ := gro(); aggs != aggs0 || maxSize > 1500 {
		t.Errorf("rx-gro-hw off: %d more aggregates, frags up to %d bytes", aggs-aggs0, maxSize)
	}
}

// TestRXHWGROPlainTCP: HW-GRO on a queue without a memory provider (with
// rx_hw_all_queues, which gives it the hardware-like path into page pool
// pages): a plain TCP flow arrives intact through the aggregates.
func TestRXHWGROPlainTCP(t *testing.T) {
	noDeferredSkbFree(t)
	topo, n := prepareNIC(t)
	r, err := n.Rings()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { restartQueues(t, topo.IfName, r.RX) })
	setKnob(t, "rx_hw_all_queues", "1")
	restartQueues(t, topo.IfName, r.RX)
	setFeature(t, topo.IfName, "rx-gro-hw", true)
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	aggs := func() (sum uint64) {
		per, err := nd.QStats(topo.IfIndex, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range per {
			if v, ok := q.Get(devmem.QStatRXHWGROPackets); ok && q.Type == devmem.DirectionRX {
				sum += v
			}
		}
		return sum
	}
	for _, addr := range []netip.Addr{topo.Addr4, topo.Addr6} {
		before := aggs()
		nextPort++
		server, client := connect(t, addr, nextPort)
		const total = 4 << 20
		s := newStream(uint64(nextPort))
		go func() { s.send(client, total); client.Close() }()
		server.SetReadDeadline(time.Now().Add(time.Minute))
		got, err := io.ReadAll(server)
		server.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != total {
			t.Fatalf("%v: received %d bytes, sent %d", addr, len(got), total)
		}
		if err := s.check(0, got); err != nil {
			t.Fatalf("%v: %v", addr, err)
		}
		if after := aggs(); after == before {
			t.Errorf("%v: no HW-GRO aggregate counted for the flow", addr)
		}
	}
}
