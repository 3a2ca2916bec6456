//go:build vmtest

package nictest

import (
	"io"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
)

type counts struct {
	rx, tx  map[int][2]uint64 // queue -> packets, bytes
	sysRX   [2]uint64
	sysTX   [2]uint64
	devRX   [2]uint64 // device-wide qstats
	devTX   [2]uint64
	queues  int
	ifindex int
}

// snapshot reads per-queue and device qstats and the rtnl counters at one
// quiet moment: it retries until the rtnl counters did not move while the
// qstats were read.
func snapshot(t *testing.T, nd *devmem.Netdev, ifname string, ifindex int) counts {
	t.Helper()
	sys := func() ([2]uint64, [2]uint64) {
		return [2]uint64{sysStat(t, ifname, "rx_packets"), sysStat(t, ifname, "rx_bytes")},
			[2]uint64{sysStat(t, ifname, "tx_packets"), sysStat(t, ifname, "tx_bytes")}
	}
	for range 50 {
		c := counts{rx: map[int][2]uint64{}, tx: map[int][2]uint64{}, ifindex: ifindex}
		c.sysRX, c.sysTX = sys()
		per, err := nd.QStats(ifindex, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range per {
			switch q.Type {
			case devmem.DirectionRX:
				p, _ := q.Get(devmem.QStatRXPackets)
				b, _ := q.Get(devmem.QStatRXBytes)
				c.rx[q.QueueID] = [2]uint64{p, b}
				c.queues = max(c.queues, q.QueueID+1)
			case devmem.DirectionTX:
				p, _ := q.Get(devmem.QStatTXPackets)
				b, _ := q.Get(devmem.QStatTXBytes)
				c.tx[q.QueueID] = [2]uint64{p, b}
			}
		}
		dev, err := nd.QStats(ifindex, false)
		if err != nil || len(dev) != 1 {
			t.Fatalf("device qstats: %v %+v", err, dev)
		}
		c.devRX[0], _ = dev[0].Get(devmem.QStatRXPackets)
		c.devRX[1], _ = dev[0].Get(devmem.QStatRXBytes)
		c.devTX[0], _ = dev[0].Get(devmem.QStatTXPackets)
		c.devTX[1], _ = dev[0].Get(devmem.QStatTXBytes)
		if r, x := sys(); r == c.sysRX && x == c.sysTX {
			return c
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("rtnl counters never stood still")
	return counts{}
}

// TestQStatsPerQueue sends one flow to a readable queue and one to a
// devmem queue and checks each queue reports what it received: the two
// queues grew, the idle one did not, the per-queue sums move exactly like
// the rtnl counters and the device's qstats equal them.
func TestQStatsPerQueue(t *testing.T) {
	x := setupRX(t, 8<<20, 2, nil) // devmem flow to queue 2, RSS to 0-1
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	nextPort++
	plainPort := nextPort
	x.steer(t, plainPort, 1)
	ifname, ifindex := x.topo.IfName, x.topo.IfIndex

	before := snapshot(t, nd, ifname, ifindex)
	for _, c := range []struct {
		rx, tx [2]uint64
		dev    [2][2]uint64
	}{{before.sysRX, before.sysTX, [2][2]uint64{before.devRX, before.devTX}}} {
		if c.dev[0] != c.rx || c.dev[1] != c.tx {
			t.Errorf("device qstats rx %v tx %v, rtnl rx %v tx %v", c.dev[0], c.dev[1], c.rx, c.tx)
		}
	}

	// A readable flow to queue 1.
	server, client := connect(t, x.topo.Addr4, plainPort)
	s := newStream(1)
	const plain = 1 << 20
	go func() { s.send(client, plain); client.Close() }()
	server.SetReadDeadline(time.Now().Add(time.Minute))
	if n, err := io.Copy(io.Discard, server); err != nil || n != plain {
		t.Fatalf("plain flow: %d bytes: %v", n, err)
	}
	// Close our end too and let the last FIN/ACK go by before counting.
	server.Close()
	time.Sleep(300 * time.Millisecond)
	mid := snapshot(t, nd, ifname, ifindex)
	// A devmem flow to queue 2.
	x.transfer(t, x.topo.Addr6, 2<<20)
	time.Sleep(200 * time.Millisecond)
	after := snapshot(t, nd, ifname, ifindex)

	delta := func(a, b counts) (map[int][2]uint64, [2]uint64) {
		d := map[int][2]uint64{}
		var sum [2]uint64
		for q := range b.queues {
			d[q] = [2]uint64{b.rx[q][0] - a.rx[q][0], b.rx[q][1] - a.rx[q][1]}
			sum[0] += d[q][0]
			sum[1] += d[q][1]
		}
		return d, sum
	}
	d1, sum1 := delta(before, mid)
	d2, sum2 := delta(mid, after)
	t.Logf("plain flow: per-queue rx %v; devmem flow: %v", d1, d2)
	if d1[1][1] < plain {
		t.Errorf("queue 1 got %d bytes for a %d byte flow", d1[1][1], plain)
	}
	if d2[2][1] < 2<<20 {
		t.Errorf("queue 2 got %d bytes for a %d byte flow", d2[2][1], 2<<20)
	}
	if d1[2] != [2]uint64{} || d2[1] != [2]uint64{} {
		t.Errorf("a queue counted the other queue's flow: plain %v, devmem %v", d1, d2)
	}
	if d1[3] != [2]uint64{} || d2[3] != [2]uint64{} {
		t.Errorf("idle queue 3 counted packets: %v, %v", d1[3], d2[3])
	}
	for i, c := range []struct {
		a, b counts
		sum  [2]uint64
	}{{before, mid, sum1}, {mid, after, sum2}} {
		sys := [2]uint64{c.b.sysRX[0] - c.a.sysRX[0], c.b.sysRX[1] - c.a.sysRX[1]}
		if c.sum != sys {
			t.Errorf("step %d: per-queue rx sums %v, rtnl rx grew %v", i, c.sum, sys)
		}
		var txs [2]uint64
		for q := range c.b.tx {
			txs[0] += c.b.tx[q][0] - c.a.tx[q][0]
			txs[1] += c.b.tx[q][1] - c.a.tx[q][1]
		}
		systx := [2]uint64{c.b.sysTX[0] - c.a.sysTX[0], c.b.sysTX[1] - c.a.sysTX[1]}
		if txs != systx || txs[0] == 0 {
			t.Errorf("step %d: per-queue tx sums %v, rtnl tx grew %v", i, txs, systx)
		}
		if c.b.devRX != c.b.sysRX || c.b.devTX != c.b.sysTX {
			t.Errorf("step %d: device qstats rx %v tx %v, rtnl rx %v tx %v", i, c.b.devRX, c.b.devTX, c.b.sysRX, c.b.sysTX)
		}
	}
}
