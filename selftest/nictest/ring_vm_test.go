//go:build vmtest

package nictest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"sort"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/selftest"
)

// waitInflight polls the bound pool until its inflight count is want, as
// skbs holding frags may still be on their way to being freed.
func waitInflight(t *testing.T, nd *devmem.Netdev, x *rx, want uint64) devmem.PagePool {
	t.Helper()
	var p devmem.PagePool
	for range 100 {
		if p = boundPool(t, nd, x); p.Inflight == want {
			return p
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("page pool %d: inflight %d, want %d (%+v)", p.ID, p.Inflight, want, p)
	return p
}

// TestRingPrefill: bind-rx restarts the queue, and the restarted queue
// posts its whole ring (ethtool -G rx) from the dma-buf's page pool before
// any packet arrives; the ring's buffers count as in flight.
func TestRingPrefill(t *testing.T) {
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()

	t.Run("fits", func(t *testing.T) {
		x := setupRX(t, 8<<20, 3, nil)
		ring := rxRing(t, x)
		if ring == 0 || ring*niovSize > 8<<20 {
			t.Fatalf("rx ring of %d entries", ring)
		}
		p := waitInflight(t, nd, x, uint64(ring))
		if p.InflightMem != uint64(ring)*niovSize {
			t.Errorf("inflight-mem %d, want %d", p.InflightMem, ring*niovSize)
		}
		if a := qstat(t, nd, x.topo.IfIndex, devmem.DirectionRX, 3, devmem.QStatRXAllocFail); a != 0 {
			// qstats survive queue restarts; nothing before this
			// test starved queue 3 of a fresh device, but report it.
			t.Logf("rx-alloc-fail of queue 3 is %d", a)
		}
		x.transfer(t, x.topo.Addr4, 2<<20)
		// Every token is back and the ring full again. Buffers the
		// pool keeps for recycling also count as in flight, so the
		// count may be higher, never lower.
		if p := boundPool(t, nd, x); p.Inflight < uint64(ring) {
			t.Errorf("inflight %d after the transfer, below the ring's %d", p.Inflight, ring)
		}
	})

	t.Run("small-dmabuf", func(t *testing.T) {
		// A dma-buf of fewer buffers than the ring: the queue starts
		// with all of them posted and counts the refill that came up
		// short, as fbnic_fill_bdq() does.
		const bufs = 64
		topo, _ := prepareNIC(t)
		before := qstat(t, nd, topo.IfIndex, devmem.DirectionRX, 2, devmem.QStatRXAllocFail)
		x := setupRX(t, bufs*niovSize, 2, nil)
		if ring := rxRing(t, x); ring <= bufs {
			t.Fatalf("rx ring of %d entries is not larger than %d buffers", ring, bufs)
		}
		waitInflight(t, nd, x, bufs)
		if a := qstat(t, nd, x.topo.IfIndex, devmem.DirectionRX, 2, devmem.QStatRXAllocFail); a <= before {
			t.Errorf("rx-alloc-fail of queue 2 stayed at %d with a ring larger than the dma-buf", a)
		}
		// A flow that fits in the dma-buf gets through. (A larger one
		// does too, but with so few buffers the peer backs off so far
		// that a test cannot wait for it.)
		x.transfer(t, x.topo.Addr6, 128<<10)
	})
}

// TestStarvationResume starves a flow 20 times: the receiver holds every
// token until nothing arrives for a while (the NIC's ring and the dma-buf
// are empty, packets are dropped as no_buf), then gives them all back and
// measures how long the flow takes to deliver its next byte. Every drop in
// the stall must be for lack of buffers, and the flow must always resume.
func TestStarvationResume(t *testing.T) {
	const rounds = 20
	x := setupRX(t, 256*niovSize, 3, nil)
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	server, client := connect(t, x.topo.Addr4, x.port)
	s := newStream(42)
	const total = 64 << 20
	sent := make(chan error, 1)
	go func() {
		err := s.send(client, total)
		client.Close()
		sent <- err
	}()
	r, err := devmem.NewReceiver(server, x.binding, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	var pos int64
	recv := func(deadline time.Duration) ([]devmem.Frag, error) {
		server.SetReadDeadline(time.Now().Add(deadline))
		m, err := r.Recv()
		if err != nil {
			return nil, err
		}
		x.buf.BeginCPUAccess(devmem.SyncRead)
		defer x.buf.EndCPUAccess(devmem.SyncRead)
		for _, f := range m.Frags {
			if f.Kind != devmem.FragDMABuf {
				t.Fatalf("%s frag at %d", f.Kind, pos)
			}
			if err := s.check(pos, x.mem[f.Offset:f.Offset+uint64(f.Size)]); err != nil {
				t.Fatal(err)
			}
			pos += int64(f.Size)
		}
		return m.Frags, nil
	}

	var resume []time.Duration
	for round := range rounds {
		causes, overruns := dropsAndOverruns(t, nd, x)
		var held []devmem.Frag
		for {
			f, err := recv(time.Second)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatalf("round %d: recv at %d: %v", round, pos, err)
			}
			held = append(held, f...)
			if pos >= total {
				t.Fatalf("round %d: the rest of the stream arrived with %d tokens held", round, len(held))
			}
		}
		after, afterOverruns := dropsAndOverruns(t, nd, x)
		for c, n := range after {
			if c != "no_buf" && n != causes[c] {
				t.Errorf("round %d: %d drops for %s while starving", round, n-causes[c], c)
			}
		}
		noBuf := after["no_buf"] - causes["no_buf"]
		if got := afterOverruns - overruns; got != noBuf {
			t.Errorf("round %d: rx-hw-drop-overruns grew by %d, no_buf drops by %d", round, got, noBuf)
		}
		if freed, err := r.Release(held); err != nil || freed != len(held) {
			t.Fatalf("round %d: released %d of %d tokens: %v", round, freed, len(held), err)
		}
		start := time.Now()
		f, err := recv(2 * time.Minute)
		if err != nil {
			diag(t, nd, x)
			t.Fatalf("round %d: no byte within 2 minutes of returning %d tokens (%d no_buf drops in the stall): %v",
				round, len(held), noBuf, err)
		}
		resume = append(resume, time.Since(start))
		if _, err := r.Release(f); err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: stalled at %d with %d tokens held, %d no_buf drops, resumed after %v",
			round, pos, len(held), noBuf, resume[len(resume)-1].Round(time.Millisecond))
	}

	// The rest, releasing as it comes.
	for pos < total {
		f, err := recv(time.Minute)
		if err != nil {
			t.Logf("receiver: %d tokens outstanding", r.Outstanding())
			diag(t, nd, x)
			freshFlow(t, x)
			server.Close()
			time.Sleep(time.Second)
			t.Logf("stalled socket closed")
			freshFlow(t, x)
			t.Fatalf("recv at %d: %v", pos, err)
		}
		if freed, err := r.Release(f); err != nil || freed != len(f) {
			t.Fatalf("released %d of %d tokens: %v", freed, len(f), err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("sender: %v", err)
	}
	sort.Slice(resume, func(i, j int) bool { return resume[i] < resume[j] })
	t.Logf("time to resume over %d stalls: min %v, median %v, max %v", rounds,
		resume[0].Round(time.Millisecond), resume[rounds/2].Round(time.Millisecond), resume[rounds-1].Round(time.Millisecond))
}

// diag logs what the NIC and the socket say, for a stalled flow.
func diag(t *testing.T, nd *devmem.Netdev, x *rx) {
	t.Helper()
	t.Logf("drop causes: %v", dropCauses(t))
	t.Logf("rings: %s", knob(t, "devmem_rx_rings"))
	for _, p := range attachedPools(t, nd, x) {
		t.Logf("pool %+v", p)
	}
	for _, s := range []devmem.QStat{devmem.QStatRXPackets, devmem.QStatRXAllocFail, devmem.QStatRXHWDropOverruns} {
		t.Logf("queue %d %v = %d", x.queue, s, qstat(t, nd, x.topo.IfIndex, devmem.DirectionRX, x.queue, s))
	}
	if out, err := exec.Command("ss", "-tmi", "state", "established").CombinedOutput(); err == nil {
		t.Logf("ss -tmi:\n%s", out)
	}
	for _, c := range [][]string{{"ss", "-tmi", "state", "established"}, {"tc", "-s", "qdisc", "show"}, {"ip", "-s", "link", "show", "eth0"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := selftest.PeerCommand(ctx, c[0], c[1:]...).CombinedOutput()
		cancel()
		t.Logf("peer %v: %v\n%s", c, err, out)
	}
	time.Sleep(3 * time.Second)
	t.Logf("drop causes 3 s later: %v", dropCauses(t))
}

// TestSmallDMABufStream streams through a dma-buf of 256 buffers, fewer
// than the ring, releasing every token at once: drops happen whenever the
// ring runs dry, and the flow must still always complete.
//
// Each drop leaves a hole, and the segments after it wait in the socket's
// out-of-order queue, in the dma-buf's buffers. TCP prunes that queue only
// once the socket's memory passes its receive buffer, which autotuning
// grows to megabytes: out-of-order data can then hold every buffer of a
// 1 MiB dma-buf, and the retransmission that would fill the hole finds
// none (a CI run stalled so: 256 of 256 in flight, 1 MiB in the receive
// queue's memory, an empty receive queue, the sender in RTO backoff). The
// receiving socket's buffer is kept to a quarter of the dma-buf, as a
// server with so small a binding must do.
func TestSmallDMABufStream(t *testing.T) {
	const dmabufSize = 256 * niovSize
	x := setupRX(t, dmabufSize, 3, nil)
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	for i := range 3 {
		server, client := connect(t, x.topo.Addr4, x.port)
		// SO_RCVBUF: the kernel doubles it.
		if err := server.SetReadBuffer(dmabufSize / 8); err != nil {
			t.Fatal(err)
		}
		s := newStream(uint64(i))
		const total = 32 << 20
		go func() { s.send(client, total); client.Close() }()
		r, err := devmem.NewReceiver(server, x.binding, nil)
		if err != nil {
			t.Fatal(err)
		}
		var pos int64
		for pos < total {
			server.SetReadDeadline(time.Now().Add(30 * time.Second))
			m, err := r.Recv()
			if err != nil {
				diag(t, nd, x)
				t.Fatalf("transfer %d: recv at %d: %v", i, pos, err)
			}
			x.buf.BeginCPUAccess(devmem.SyncRead)
			for _, f := range m.Frags {
				if err := s.check(pos, x.mem[f.Offset:f.Offset+uint64(f.Size)]); err != nil {
					t.Fatal(err)
				}
				pos += int64(f.Size)
			}
			x.buf.EndCPUAccess(devmem.SyncRead)
			r.Release(m.Frags)
		}
		r.Close()
		t.Logf("transfer %d: %v", i, dropCauses(t))
	}
}

// freshFlow logs how much of a new 256 KiB flow to the queue arrives.
func freshFlow(t *testing.T, x *rx) {
	t.Helper()
	nextPort++
	port := nextPort
	x.steer(t, port, x.queue)
	server, client := connect(t, x.topo.Addr4, port)
	go func() { client.Write(make([]byte, 256<<10)); client.Close() }()
	r, err := devmem.NewReceiver(server, x.binding, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var n int
	for n < 256<<10 {
		server.SetReadDeadline(time.Now().Add(10 * time.Second))
		m, err := r.Recv()
		if err != nil {
			break
		}
		n += m.N
		r.Release(m.Frags)
	}
	t.Logf("fresh flow to queue %d: %d of %d bytes; rings: %s; drops %v", x.queue, n, 256<<10, knob(t, "devmem_rx_rings"), dropCauses(t))
}

// dropsAndOverruns reads the drop causes and the queue's
// rx-hw-drop-overruns at one moment: again until the causes did not move
// while the qstat was read (a retransmission may be dropped in between).
func dropsAndOverruns(t *testing.T, nd *devmem.Netdev, x *rx) (map[string]uint64, uint64) {
	t.Helper()
	for {
		c := dropCauses(t)
		o := qstat(t, nd, x.topo.IfIndex, devmem.DirectionRX, x.queue, devmem.QStatRXHWDropOverruns)
		if c2 := dropCauses(t); c2["no_buf"] == c["no_buf"] {
			return c, o
		}
	}
}
