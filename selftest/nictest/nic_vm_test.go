//go:build vmtest

package nictest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/nic"
	"github.com/devmem-go/devmem/selftest"
)

// stream is the byte stream the peer sends: a pseudo-random block whose
// length is not a multiple of the page size, repeated, so a byte that lands
// at the wrong stream position or dma-buf offset shows.
type stream struct{ block []byte }

func newStream(seed uint64) *stream {
	b := make([]byte, 1<<20+4093)
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return &stream{block: b}
}

func (s *stream) check(pos int64, got []byte) error {
	for len(got) > 0 {
		i := int(pos % int64(len(s.block)))
		n := min(len(got), len(s.block)-i)
		want := s.block[i : i+n]
		for j := range n {
			if got[j] != want[j] {
				return fmt.Errorf("stream byte %d: got %#02x, want %#02x", pos+int64(j), got[j], want[j])
			}
		}
		got, pos = got[n:], pos+int64(n)
	}
	return nil
}

func (s *stream) send(w io.Writer, total int64) error {
	var pos int64
	for pos < total {
		i := int(pos % int64(len(s.block)))
		n := min(int64(len(s.block)-i), total-pos)
		if _, err := w.Write(s.block[i : i+int(n)]); err != nil {
			return err
		}
		pos += n
	}
	return nil
}

// rx is a NIC with a udmabuf bound to one RX queue and the test's port
// steered there by flow rules (everything else by RSS to the queues before
// it). Cleanup unbinds and restores the NIC.
type rx struct {
	topo    *selftest.Topology
	nic     *ethNIC
	buf     *devmem.DMABuf
	mem     []byte
	binding *devmem.Binding
	queue   int
	port    uint16
	// allowLinear accepts linear frags (devmem_linear_bytes); their bytes
	// are counted in linearBytes.
	allowLinear bool
	linearBytes int64
}

var nextPort uint16 = 9000

// ethNIC is a test's NIC: the handle, and the Setup that configures it
// (undone at cleanup).
type ethNIC struct {
	*nic.NIC
	setup *nic.Setup
}

func prepareNIC(t *testing.T) (*selftest.Topology, *ethNIC) {
	t.Helper()
	topo := selftest.Require(t)
	n, err := nic.Open(topo.IfName)
	if err != nil {
		t.Fatal(err)
	}
	s, err := nic.NewSetup(n, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Undo(); err != nil {
			t.Errorf("restore %s: %v", topo.IfName, err)
		}
		n.Close()
	})
	if err := s.EnableHeaderSplit(); err != nil {
		t.Fatal(err)
	}
	return topo, &ethNIC{n, s}
}

func setupRX(t *testing.T, bufSize int64, queue int, opts *devmem.BindRXOptions) *rx {
	t.Helper()
	topo, nic := prepareNIC(t)
	nextPort++
	x := &rx{topo: topo, nic: nic, queue: queue, port: nextPort}
	var err error
	if x.buf, err = devmem.NewUDMABuf(bufSize, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.buf.Close() })
	if x.mem, err = x.buf.Map(); err != nil {
		t.Fatal(err)
	}
	if x.binding, err = devmem.BindRX(topo.IfIndex, x.buf, []int{queue}, opts); err != nil {
		t.Fatalf("bind-rx queue %d: %v", queue, err)
	}
	t.Cleanup(func() { x.binding.Close() })
	if queue > 0 {
		if err := nic.setup.SteerRSSAway(queue); err != nil {
			t.Fatal(err)
		}
	}
	x.steer(t, x.port, queue)
	return x
}

// steer adds flow rules sending TCP to port on both addresses to queue.
func (x *rx) steer(t *testing.T, port uint16, queue int) {
	t.Helper()
	for _, a := range []netip.Addr{x.topo.Addr4, x.topo.Addr6} {
		ft := nic.FlowTCP4
		if a.Is6() {
			ft = nic.FlowTCP6
		}
		if _, err := x.nic.setup.AddFlowRule(nic.FlowRule{Type: ft, Dst: a, DstPort: port, Queue: queue}); err != nil {
			t.Fatalf("flow rule to queue %d: %v", queue, err)
		}
	}
}

// connect makes a connection from the peer netns to port on addr.
func connect(t *testing.T, addr netip.Addr, port uint16) (*net.TCPConn, net.Conn) {
	t.Helper()
	return connectWith(t, net.JoinHostPort(addr.String(), strconv.Itoa(int(port))), selftest.DialPeer)
}

// connectWith listens on address here and connects to it with dial (from
// another netns); cleanup closes both ends.
func connectWith(t *testing.T, address string, dial func(ctx context.Context, network, address string) (net.Conn, error)) (*net.TCPConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", address)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err := dial(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c.(*net.TCPConn), client
}

// frag is one dma-buf frag as received, in stream order.
type frag struct {
	pos    int64 // stream position of its first byte
	offset uint64
	size   uint32
}

// transfer sends total bytes of a fresh stream from the peer to port on
// addr, receives them all, checks every byte and releases every token. It
// returns the dma-buf frags in stream order.
func (x *rx) transfer(t *testing.T, addr netip.Addr, total int64) []frag {
	t.Helper()
	server, client := connect(t, addr, x.port)
	return x.stream(t, server, client, total)
}

// stream sends total bytes from client to server and receives them as
// transfer does.
func (x *rx) stream(t *testing.T, server *net.TCPConn, client net.Conn, total int64) []frag {
	t.Helper()
	s := newStream(uint64(total) ^ uint64(x.port))
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
	server.SetReadDeadline(time.Now().Add(3 * time.Minute))
	var frags []frag
	var pos int64
	for {
		m, err := r.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("recv after %d bytes: %v", pos, err)
		}
		if err := x.buf.BeginCPUAccess(devmem.SyncRead); err != nil {
			t.Fatal(err)
		}
		for _, f := range m.Frags {
			if f.Kind == devmem.FragLinear && x.allowLinear {
				if err := s.check(pos, m.Linear[f.Offset:f.Offset+uint64(f.Size)]); err != nil {
					t.Fatalf("%v (linear frag %+v)", err, f)
				}
				x.linearBytes += int64(f.Size)
				pos += int64(f.Size)
				continue
			}
			if f.Kind != devmem.FragDMABuf {
				t.Fatalf("%s frag at stream byte %d: the NIC put payload outside the dma-buf", f.Kind, pos)
			}
			if f.Offset+uint64(f.Size) > uint64(len(x.mem)) {
				t.Fatalf("frag %+v beyond the %d byte dma-buf", f, len(x.mem))
			}
			if err := s.check(pos, x.mem[f.Offset:f.Offset+uint64(f.Size)]); err != nil {
				t.Fatalf("%v (frag %+v)", err, f)
			}
			frags = append(frags, frag{pos: pos, offset: f.Offset, size: f.Size})
			pos += int64(f.Size)
		}
		if err := x.buf.EndCPUAccess(devmem.SyncRead); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Release(m.Frags); err != nil {
			t.Fatalf("release: %v", err)
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("sender: %v", err)
	}
	if pos != total {
		t.Fatalf("received %d bytes, sent %d", pos, total)
	}
	if n := r.Outstanding(); n != 0 {
		t.Fatalf("%d tokens outstanding after releasing all", n)
	}
	return frags
}

func knob(t *testing.T, name string) string {
	t.Helper()
	v, err := selftest.NsimKnob(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// setKnob sets a debugfs knob of the host-side port and restores it at
// cleanup.
func setKnob(t *testing.T, name, value string) {
	t.Helper()
	old := knob(t, name)
	if err := selftest.SetNsimKnob(name, value); err != nil {
		t.Fatalf("set %s=%s: %v", name, value, err)
	}
	t.Cleanup(func() {
		if err := selftest.SetNsimKnob(name, old); err != nil {
			t.Errorf("restore %s=%s: %v", name, old, err)
		}
	})
}

// dropCauses reads devmem_rx_drop_causes: "cause count" per line.
func dropCauses(t *testing.T) map[string]uint64 {
	t.Helper()
	m := map[string]uint64{}
	for _, l := range strings.Split(knob(t, "devmem_rx_drop_causes"), "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			t.Fatalf("devmem_rx_drop_causes line %q", l)
		}
		m[f[0]] = n
	}
	if len(m) == 0 {
		t.Fatal("devmem_rx_drop_causes is empty")
	}
	return m
}

func ethtool(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("ethtool", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("ethtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func qstat(t *testing.T, nd *devmem.Netdev, ifindex int, typ devmem.Direction, q int, s devmem.QStat) uint64 {
	t.Helper()
	stats, err := nd.QStats(ifindex, q >= 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range stats {
		if q < 0 || (st.Type == typ && st.QueueID == q) {
			v, ok := st.Get(s)
			if !ok {
				t.Fatalf("qstats of ifindex %d %s queue %d lack %v: %+v", ifindex, typ, q, s, st)
			}
			return v
		}
	}
	t.Fatalf("qstats of ifindex %d have no %s queue %d", ifindex, typ, q)
	return 0
}

func boundPool(t *testing.T, nd *devmem.Netdev, x *rx) devmem.PagePool {
	t.Helper()
	pools, err := nd.PagePools(x.topo.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	var found []devmem.PagePool
	for _, p := range pools {
		if p.DMABuf == x.binding.ID() && p.DetachTime == 0 {
			found = append(found, p)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d attached page pools carry dma-buf %d: %+v", len(found), x.binding.ID(), pools)
	}
	return found[0]
}

func rxRing(t *testing.T, x *rx) int {
	t.Helper()
	r, err := x.nic.Rings()
	if err != nil {
		t.Fatal(err)
	}
	return int(r.RX)
}

func sysStat(t *testing.T, ifname, name string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/sys/class/net/" + ifname + "/statistics/" + name)
	if err != nil {
		t.Fatal(err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func ethtoolErr(args ...string) (string, error) {
	out, err := exec.Command("ethtool", args...).CombinedOutput()
	return string(out), err
}

func itoa(i int) string { return strconv.Itoa(i) }

// noDeferredSkbFree turns off the per-CPU deferred skb free for the test
// (net.core.skb_defer_max=0, restored at cleanup). A socket that consumes
// an skb on another CPU than the one that allocated it (the NAPI's) queues
// it there, and up to skb_defer_max/2 of them stay queued until that CPU
// runs its rx softirq again; their frags keep page pool buffers in flight.
// Tests that wait for a pool to drain after the traffic stopped would wait
// on an idle CPU instead.
func noDeferredSkbFree(t *testing.T) {
	t.Helper()
	const path = "/proc/sys/net/core/skb_defer_max"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("0"), 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, old, 0); err != nil {
			t.Errorf("restore %s: %v", path, err)
		}
	})
}
