//go:build vmtest

package nictest

import (
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
)

// ringLines returns the fields of each queue's devmem_rx_rings line (the
// queues with a posted buffer ring).
func ringLines(t *testing.T) [][]string {
	t.Helper()
	var ls [][]string
	for _, l := range strings.Split(knob(t, "devmem_rx_rings"), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "queue" {
			ls = append(ls, f)
		}
	}
	return ls
}

// ringedQueues returns the queues devmem_rx_rings lists.
func ringedQueues(t *testing.T) []string {
	t.Helper()
	var qs []string
	for _, f := range ringLines(t) {
		qs = append(qs, f[1])
	}
	return qs
}

// restartQueues restarts every rx queue (a ring size change, there and
// back).
func restartQueues(t *testing.T, ifname string, rx uint32) {
	t.Helper()
	ethtool(t, "-G", ifname, "rx", strconv.Itoa(int(max(rx/2, 1))))
	ethtool(t, "-G", ifname, "rx", strconv.Itoa(int(rx)))
}

// TestRXHWAllQueues: with rx_hw_all_queues the queues without a memory
// provider receive like hardware too (a posted ring of page pool pages,
// wire segments written into them): a plain TCP flow through them arrives
// intact, and the knob takes effect at the next queue restart.
func TestRXHWAllQueues(t *testing.T) {
	noDeferredSkbFree(t)
	topo, n := prepareNIC(t)
	r, err := n.Rings()
	if err != nil {
		t.Fatal(err)
	}
	if qs := ringedQueues(t); len(qs) != 0 {
		t.Fatalf("queues with a ring before the knob, nothing bound: %v", qs)
	}
	// Cleanups run last first: the knob is restored, then the queues
	// restart without it.
	t.Cleanup(func() { restartQueues(t, topo.IfName, r.RX) })
	setKnob(t, "rx_hw_all_queues", "1")
	if qs := ringedQueues(t); len(qs) != 0 {
		t.Fatalf("the knob took effect before a queue restart: %v", qs)
	}
	restartQueues(t, topo.IfName, r.RX)
	ch, err := n.Channels()
	if err != nil {
		t.Fatal(err)
	}
	if qs := ringedQueues(t); len(qs) != ch.RXQueues() {
		t.Fatalf("rings on queues %v of %d", qs, ch.RXQueues())
	}
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	pools, err := nd.PagePools(topo.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pools {
		if p.DetachTime == 0 && p.Inflight < uint64(r.RX) {
			t.Errorf("page pool %d: %d pages in flight, ring of %d posted", p.ID, p.Inflight, r.RX)
		}
	}

	// A plain flow, every byte checked.
	before := knob(t, "devmem_rx_pkts")
	nextPort++
	server, client := connect(t, topo.Addr4, nextPort)
	const total = 4 << 20
	s := newStream(99)
	go func() { s.send(client, total); client.Close() }()
	server.SetReadDeadline(time.Now().Add(time.Minute))
	got, err := io.ReadAll(server)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != total {
		t.Fatalf("received %d bytes, sent %d", len(got), total)
	}
	if err := s.check(0, got); err != nil {
		t.Fatal(err)
	}
	if after := knob(t, "devmem_rx_pkts"); after == before {
		t.Errorf("devmem_rx_pkts stayed at %s: the flow did not go through the hardware-like path", after)
	}
	// The flow is over: no queue has packets waiting for its NAPI (the
	// rings view's backlog, what a stalled flow's report looks at).
	deadline := time.Now().Add(10 * time.Second)
	for {
		busy := queuesWithBacklog(t)
		if len(busy) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("packets still wait for the NAPI after the flow ended: %v", busy)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// queuesWithBacklog returns the devmem_rx_rings lines of queues with
// packets from the peer waiting for their NAPI ("backlog K", K > 0).
func queuesWithBacklog(t *testing.T) []string {
	t.Helper()
	var busy []string
	for _, f := range ringLines(t) {
		l := strings.Join(f, " ")
		i := slices.Index(f, "backlog")
		if i < 0 || i+1 >= len(f) {
			t.Fatalf("devmem_rx_rings line without a backlog: %q", l)
		}
		if f[i+1] != "0" {
			busy = append(busy, l)
		}
	}
	return busy
}
