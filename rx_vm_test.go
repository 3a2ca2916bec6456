//go:build vmtest

package devmem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/devmem-go/devmem/nic"
	"github.com/devmem-go/devmem/selftest"
	"golang.org/x/sys/unix"
)

// These tests receive on the host-side netdevsim port from senders in the
// peer netns. The patched netdevsim writes the payload of packets arriving on
// a bound queue into the queue's udmabuf, so every byte is checked where it
// landed, through an mmap of the udmabuf.

// vmStream is the byte stream the senders write: a pseudo-random block of a
// length that is not a multiple of the page size, repeated, so a byte landing
// at the wrong stream position or dma-buf offset shows.
type vmStream struct{ block []byte }

func newVMStream(seed uint64) *vmStream {
	b := make([]byte, 1<<20+4093)
	r := rand.New(rand.NewPCG(seed, seed^0x5eed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return &vmStream{block: b}
}

// check compares got with the stream's bytes at position pos.
func (s *vmStream) check(pos int64, got []byte) error {
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

// send writes total bytes of the stream to w.
func (s *vmStream) send(w io.Writer, total int64) error {
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

// vmRX is a NIC prepared for devmem RX: header split on, hds-thresh 0, a
// udmabuf bound to some queues, RSS away from the first bound queue and a
// flow rule to it. Cleanup unbinds, then undoes the NIC setup.
type vmRX struct {
	topo    *selftest.Topology
	setup   *nic.Setup
	buf     *DMABuf
	mem     []byte
	binding *Binding
	port    uint16
}

var vmNextPort = 6000

func vmPort() uint16 { vmNextPort++; return uint16(vmNextPort) }

// vmNICSetup turns header split on and hds-thresh to 0 through a nic.Setup,
// undone at cleanup (after the cleanups registered later, such as closing
// bindings, which Undo needs first).
func vmNICSetup(t *testing.T) (*selftest.Topology, *nic.Setup) {
	t.Helper()
	topo := selftest.Require(t)
	n, err := nic.Open(topo.IfName)
	if err != nil {
		t.Fatal(err)
	}
	s, err := nic.NewSetup(n, nil)
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Undo(); err != nil {
			t.Errorf("undo the setup of %s: %v", topo.IfName, err)
		}
		n.Close()
	})
	if err := s.EnableHeaderSplit(); err != nil {
		t.Fatal(err)
	}
	return topo, s
}

func vmSetupRX(t *testing.T, bufSize int64, queues []int) *vmRX {
	t.Helper()
	topo, setup := vmNICSetup(t)
	x := &vmRX{topo: topo, setup: setup, port: vmPort()}
	var err error
	if x.buf, err = NewUDMABuf(bufSize, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { x.buf.Close() })
	if x.mem, err = x.buf.Map(); err != nil {
		t.Fatal(err)
	}
	if x.binding, err = BindRX(topo.IfIndex, x.buf, queues, nil); err != nil {
		t.Fatalf("bind-rx queues %v: %v", queues, err)
	}
	t.Cleanup(func() { x.binding.Close() })

	// Steer the test's flow to the first bound queue and everything else
	// to the queues before it, as ncdevmem does.
	if queues[0] > 0 {
		if err := setup.SteerRSSAway(queues[0]); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []netip.Addr{topo.Addr4, topo.Addr6} {
		ft := nic.FlowTCP4
		if a.Is6() {
			ft = nic.FlowTCP6
		}
		if _, err := setup.AddFlowRule(nic.FlowRule{Type: ft, Dst: a, DstPort: x.port, Queue: queues[0]}); err != nil {
			t.Fatalf("flow rule to queue %d: %v", queues[0], err)
		}
	}
	return x
}

// connect makes a connection from the peer netns to a listener on addr and
// returns both ends.
func (x *vmRX) connect(t *testing.T, addr netip.Addr) (server *net.TCPConn, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(int(x.port))))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client, err = selftest.DialPeer(ctx, "tcp", ln.Addr().String())
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

// vmRecvStats is what vmReceive saw.
type vmRecvStats struct {
	bytes, dmabufBytes, linearBytes, readableBytes int64
	frags, linearFrags, recvs, readableRecvs       int
	tokens, freed                                  int
}

// vmReceive receives until EOF, checks every byte against the stream (dma-buf
// frags through the mapping, linear bytes from the message) and releases
// every token. hold, if set, is called before each release and may delay it.
func (x *vmRX) receive(t *testing.T, r *Receiver, s *vmStream, hold func()) vmRecvStats {
	t.Helper()
	var st vmRecvStats
	for {
		m, err := r.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && len(m.Frags) == 0 {
			t.Fatalf("recv after %d bytes: %v", st.bytes, err)
		}
		st.recvs++
		if m.Readable {
			st.readableRecvs++
			st.readableBytes += int64(m.N)
		}
		if err := x.buf.BeginCPUAccess(SyncRead); err != nil {
			t.Fatal(err)
		}
		for _, f := range m.Frags {
			var got []byte
			switch f.Kind {
			case FragDMABuf:
				if f.DMABufID != x.binding.ID() {
					t.Fatalf("frag from dma-buf %d, bound %d", f.DMABufID, x.binding.ID())
				}
				got = x.mem[f.Offset : f.Offset+uint64(f.Size)]
				st.frags++
				st.dmabufBytes += int64(f.Size)
			case FragLinear:
				got = m.Linear[f.Offset : f.Offset+uint64(f.Size)]
				st.linearFrags++
				st.linearBytes += int64(f.Size)
			}
			if err := s.check(st.bytes, got); err != nil {
				t.Fatalf("%v (%s frag %+v)", err, f.Kind, f)
			}
			st.bytes += int64(f.Size)
		}
		if err := x.buf.EndCPUAccess(SyncRead); err != nil {
			t.Fatal(err)
		}
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if hold != nil {
			hold()
		}
		for _, f := range m.Frags {
			if f.Kind == FragDMABuf {
				st.tokens++
			}
		}
		freed, err := r.Release(m.Frags)
		if err != nil {
			t.Fatalf("release: %v", err)
		}
		st.freed += freed
	}
	return st
}

func (x *vmRX) transfer(t *testing.T, addr netip.Addr, total int64, cfg *ReceiverConfig) vmRecvStats {
	t.Helper()
	server, client := x.connect(t, addr)
	s := newVMStream(uint64(total))
	sent := make(chan error, 1)
	go func() {
		err := s.send(client, total)
		client.Close()
		sent <- err
	}()
	if cfg == nil {
		cfg = &ReceiverConfig{}
	}
	r, err := NewReceiver(server, x.binding, cfg)
	if err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(2 * time.Minute))
	st := x.receive(t, r, s, nil)
	if err := <-sent; err != nil {
		t.Fatalf("sender: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if st.bytes != total {
		t.Fatalf("received %d bytes, sent %d", st.bytes, total)
	}
	if st.freed != st.tokens || r.Outstanding() != 0 {
		t.Fatalf("tokens: %d received, %d freed, %d outstanding", st.tokens, st.freed, r.Outstanding())
	}
	return st
}

func vmCounter(t *testing.T, name string) uint64 {
	t.Helper()
	v, err := selftest.NsimCounter(name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestVMRXOneQueue64MiB(t *testing.T) {
	x := vmSetupRX(t, 32<<20, []int{3})
	pkts := vmCounter(t, "devmem_rx_pkts")
	const total = 64 << 20
	st := x.transfer(t, x.topo.Addr4, total, nil)
	if st.dmabufBytes != total {
		t.Errorf("%d of %d bytes in dma-buf frags (%d linear, %d readable)", st.dmabufBytes, total, st.linearBytes, st.readableBytes)
	}
	if got := vmCounter(t, "devmem_rx_pkts") - pkts; got == 0 {
		t.Errorf("devmem_rx_pkts did not grow")
	}
	t.Logf("64 MiB: %d recvmsg, %d frags, %d tokens freed", st.recvs, st.frags, st.freed)

	// The binding shows on queue 3 only, and goes with Close.
	nd, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	qs, err := nd.Queues(x.topo.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		want := uint32(0)
		if q.Type == DirectionRX && q.ID == 3 {
			want = x.binding.ID()
		}
		if q.DMABuf != want {
			t.Errorf("queue %s %d: dmabuf %d, want %d", q.Type, q.ID, q.DMABuf, want)
		}
	}
	if err := x.binding.Close(); err != nil {
		t.Fatal(err)
	}
	q, err := nd.Queue(x.topo.IfIndex, DirectionRX, 3)
	if err != nil {
		t.Fatal(err)
	}
	if q.DMABuf != 0 {
		t.Errorf("queue 3 still shows dmabuf %d after the binding's socket closed", q.DMABuf)
	}
}

func TestVMRXTwoQueuesIPv6(t *testing.T) {
	x := vmSetupRX(t, 16<<20, []int{2, 3})
	nd, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	for _, id := range []int{2, 3} {
		q, err := nd.Queue(x.topo.IfIndex, DirectionRX, id)
		if err != nil {
			t.Fatal(err)
		}
		if q.DMABuf != x.binding.ID() {
			t.Errorf("rx queue %d: dmabuf %d, want %d", id, q.DMABuf, x.binding.ID())
		}
	}
	const total = 32 << 20
	st := x.transfer(t, x.topo.Addr6, total, nil)
	if st.dmabufBytes != total {
		t.Errorf("%d of %d bytes in dma-buf frags", st.dmabufBytes, total)
	}
}

// TestVMRXNoFDLeak runs a whole bind, receive, release, unbind cycle and
// checks the process holds the same fds afterwards.
func TestVMRXNoFDLeak(t *testing.T) {
	before, err := selftest.OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("cycle", func(t *testing.T) {
		x := vmSetupRX(t, 4<<20, []int{3})
		x.transfer(t, x.topo.Addr4, 4<<20, nil)
	})
	after, err := selftest.OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("open fds: %d before, %d after", before, after)
	}
}

func TestVMBindRXErrors(t *testing.T) {
	topo, setup := vmNICSetup(t)
	n := setup.NIC()
	buf, err := NewUDMABuf(1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()

	wantErr := func(t *testing.T, err error, errno syscall.Errno, msg string) {
		t.Helper()
		if err == nil {
			t.Fatalf("bind-rx succeeded, want %v", errno)
		}
		var e *Error
		if !errors.As(err, &e) || !errors.Is(err, errno) {
			t.Fatalf("got %v, want *Error with %v", err, errno)
		}
		if msg != "" && e.Message != msg {
			t.Fatalf("extack %q, want %q (error: %v)", e.Message, msg, err)
		}
		t.Logf("%v", err)
	}

	t.Run("header split off", func(t *testing.T) {
		if err := n.SetTCPDataSplit(nic.TCPDataSplitDisabled); err != nil {
			t.Fatal(err)
		}
		defer n.SetTCPDataSplit(nic.TCPDataSplitEnabled)
		b, err := BindRX(topo.IfIndex, buf, []int{1}, nil)
		if err == nil {
			b.Close()
		}
		wantErr(t, err, unix.EINVAL, "tcp-data-split is disabled")
	})
	t.Run("hds-thresh not zero", func(t *testing.T) {
		if err := n.SetHDSThresh(128); err != nil {
			t.Fatal(err)
		}
		defer n.SetHDSThresh(0)
		b, err := BindRX(topo.IfIndex, buf, []int{1}, nil)
		if err == nil {
			b.Close()
		}
		wantErr(t, err, unix.EINVAL, "hds-thresh is not zero")
	})
	t.Run("queue already bound", func(t *testing.T) {
		first, err := BindRX(topo.IfIndex, buf, []int{1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer first.Close()
		b, err := BindRX(topo.IfIndex, buf, []int{1}, nil)
		if err == nil {
			b.Close()
		}
		wantErr(t, err, unix.EEXIST, "designated queue already memory provider bound")
	})
	t.Run("queue out of range", func(t *testing.T) {
		b, err := BindRX(topo.IfIndex, buf, []int{64}, nil)
		if err == nil {
			b.Close()
		}
		wantErr(t, err, unix.EINVAL, "")
	})
	t.Run("fd not a dma-buf", func(t *testing.T) {
		fd, err := unix.MemfdCreate("not-a-dmabuf", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		b, err := BindRX(topo.IfIndex, &DMABuf{fd: fd, size: 1 << 20}, []int{1}, nil)
		if err == nil {
			b.Close()
		}
		wantErr(t, err, unix.EINVAL, "")
	})
	t.Run("unknown ifindex", func(t *testing.T) {
		b, err := BindRX(9999, buf, []int{1}, nil)
		if err == nil {
			b.Close()
		}
		wantErr(t, err, unix.ENODEV, "")
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%v does not match os.ErrNotExist", err)
		}
	})
	t.Run("closing the socket unbinds", func(t *testing.T) {
		b, err := BindRX(topo.IfIndex, buf, []int{1}, nil)
		if err != nil {
			t.Fatal(err)
		}
		b.Close()
		// The queue is free again: a second bind succeeds.
		b, err = BindRX(topo.IfIndex, buf, []int{1}, nil)
		if err != nil {
			t.Fatalf("bind after close: %v", err)
		}
		b.Close()
	})
}

// TestVMRXPoolExhaustion withholds tokens from a small dma-buf until the
// queue's page pool runs dry: the NIC drops packets (counted), the flow
// stalls, and once the tokens come back the transfer completes with every
// byte intact.
func TestVMRXPoolExhaustion(t *testing.T) {
	x := vmSetupRX(t, 1<<20, []int{3}) // 256 net_iovs, far less than the window
	server, client := x.connect(t, x.topo.Addr4)
	const total = 8 << 20
	s := newVMStream(7)
	go func() {
		s.send(client, total)
		client.Close()
	}()
	r, err := NewReceiver(server, x.binding, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	drops := vmCounter(t, "devmem_rx_drops")
	nd, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	overruns := vmQStat(t, nd, x.topo.IfIndex, 3, QStatRXHWDropOverruns)

	// Receive without releasing until nothing more arrives for a while
	// and the NIC is seen dropping for want of buffers. A pause without
	// drops is the peer backing off after a loss elsewhere (a slow guest
	// can overflow the simulated rx backlog): its next retransmission
	// either lands (buffers were left) or is dropped.
	var held []Frag
	var pos int64
	giveUp := time.Now().Add(time.Minute)
	for {
		server.SetReadDeadline(time.Now().Add(3 * time.Second))
		m, err := r.Recv()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			if vmCounter(t, "devmem_rx_drops") == drops && time.Now().Before(giveUp) {
				continue
			}
			break
		}
		if err != nil {
			t.Fatalf("recv while holding tokens: %v", err)
		}
		x.buf.BeginCPUAccess(SyncRead)
		for _, f := range m.Frags {
			if f.Kind != FragDMABuf {
				t.Fatalf("unexpected %s frag", f.Kind)
			}
			if err := s.check(pos, x.mem[f.Offset:f.Offset+uint64(f.Size)]); err != nil {
				t.Fatal(err)
			}
			pos += int64(f.Size)
		}
		x.buf.EndCPUAccess(SyncRead)
		held = append(held, m.Frags...)
		if pos >= total {
			t.Fatalf("whole transfer arrived with %d tokens held: the pool never ran dry", len(held))
		}
	}
	stalledDrops := vmCounter(t, "devmem_rx_drops") - drops
	t.Logf("stalled after %d bytes, %d tokens held, %d packets dropped", pos, len(held), stalledDrops)
	if stalledDrops == 0 {
		t.Errorf("flow stalled but devmem_rx_drops did not grow")
	}
	// Every drop was for want of a buffer: the NIC counts those as
	// overruns (rx-alloc-fail counts ring refill failures, as fbnic).
	if got := vmQStat(t, nd, x.topo.IfIndex, 3, QStatRXHWDropOverruns) - overruns; got != stalledDrops {
		t.Errorf("qstats rx-hw-drop-overruns of queue 3 grew by %d, devmem_rx_drops by %d", got, stalledDrops)
	}
	if r.Outstanding() != len(held) {
		t.Errorf("outstanding %d, held %d", r.Outstanding(), len(held))
	}
	freed, err := r.Release(held)
	if err != nil || freed != len(held) {
		t.Fatalf("release of held tokens: freed %d of %d: %v", freed, len(held), err)
	}

	// The rest of the stream arrives now that the pool refills.
	server.SetReadDeadline(time.Now().Add(2 * time.Minute))
	for pos < total {
		m, err := r.Recv()
		if err != nil {
			t.Fatalf("recv after release at %d: %v", pos, err)
		}
		x.buf.BeginCPUAccess(SyncRead)
		for _, f := range m.Frags {
			if err := s.check(pos, x.mem[f.Offset:f.Offset+uint64(f.Size)]); err != nil {
				t.Fatal(err)
			}
			pos += int64(f.Size)
		}
		x.buf.EndCPUAccess(SyncRead)
		if _, err := r.Release(m.Frags); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("after %d bytes: %v, want EOF", pos, err)
	}
}

// vmKnob sets a netdevsim test knob for the test's duration.
func vmKnob(t *testing.T, name, value string) {
	t.Helper()
	old, err := selftest.NsimKnob(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := selftest.SetNsimKnob(name, value); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { selftest.SetNsimKnob(name, old) })
}

// TestVMRXLinear makes the NIC leave the first bytes of every packet linear:
// the receiver reports them as linear frags in stream order, and a strict
// receiver refuses them.
func TestVMRXLinear(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		x := vmSetupRX(t, 8<<20, []int{3})
		vmKnob(t, "devmem_linear_bytes", "100")
		const total = 8 << 20
		st := x.transfer(t, x.topo.Addr4, total, nil)
		if st.linearFrags == 0 || st.linearBytes == 0 {
			t.Fatalf("no linear frags with devmem_linear_bytes=100 (%+v)", st)
		}
		if st.dmabufBytes+st.linearBytes != total {
			t.Fatalf("dmabuf %d + linear %d != %d", st.dmabufBytes, st.linearBytes, total)
		}
		t.Logf("%d linear frags, %d linear bytes, %d dma-buf frags", st.linearFrags, st.linearBytes, st.frags)
	})
	t.Run("strict", func(t *testing.T) {
		x := vmSetupRX(t, 8<<20, []int{3})
		vmKnob(t, "devmem_linear_bytes", "100")
		server, client := x.connect(t, x.topo.Addr4)
		s := newVMStream(3)
		go func() { s.send(client, 1<<20); client.Close() }()
		r, err := NewReceiver(server, x.binding, &ReceiverConfig{Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		server.SetReadDeadline(time.Now().Add(time.Minute))
		for {
			m, err := r.Recv()
			r.Release(m.Frags)
			if errors.Is(err, ErrNotDevmem) {
				t.Logf("strict receiver: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("got %v, want ErrNotDevmem", err)
			}
		}
	})
}

// TestVMRXReadable makes the NIC deliver every third payload packet readable
// (a flow-steering miss): a default receiver returns those bytes as readable
// messages in stream order; a strict one fails with ErrNotDevmem and leaves
// the bytes on the socket.
func TestVMRXReadable(t *testing.T) {
	t.Run("default", func(t *testing.T) {
		x := vmSetupRX(t, 8<<20, []int{3})
		vmKnob(t, "devmem_readable_every", "3")
		st := x.transfer(t, x.topo.Addr4, 8<<20, nil)
		if st.readableRecvs == 0 {
			t.Fatalf("no readable messages with devmem_readable_every=3 (%+v)", st)
		}
		t.Logf("%d readable messages, %d readable bytes, %d dma-buf bytes", st.readableRecvs, st.readableBytes, st.dmabufBytes)
	})
	t.Run("strict", func(t *testing.T) {
		x := vmSetupRX(t, 8<<20, []int{3})
		vmKnob(t, "devmem_readable_every", "3")
		server, client := x.connect(t, x.topo.Addr4)
		s := newVMStream(4)
		const total = 4 << 20
		go func() { s.send(client, total); client.Close() }()
		r, err := NewReceiver(server, x.binding, &ReceiverConfig{Strict: true})
		if err != nil {
			t.Fatal(err)
		}
		server.SetReadDeadline(time.Now().Add(time.Minute))
		var pos int64
		for {
			m, err := r.Recv()
			x.buf.BeginCPUAccess(SyncRead)
			for _, f := range m.Frags {
				if cerr := s.check(pos, x.mem[f.Offset:f.Offset+uint64(f.Size)]); cerr != nil {
					t.Fatal(cerr)
				}
				pos += int64(f.Size)
			}
			x.buf.EndCPUAccess(SyncRead)
			r.Release(m.Frags)
			if errors.Is(err, ErrNotDevmem) {
				break
			}
			if err != nil {
				t.Fatalf("at %d: got %v, want ErrNotDevmem", pos, err)
			}
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		// The readable bytes are still there, in order, for a plain read.
		p := make([]byte, 1000)
		n, err := server.Read(p)
		if err != nil {
			t.Fatalf("plain read after ErrNotDevmem: %v", err)
		}
		if err := s.check(pos, p[:n]); err != nil {
			t.Fatalf("plain read after ErrNotDevmem: %v", err)
		}
	})
}

// TestVMRXDeadlineAndCancel checks a devmem receive blocked on an idle
// connection returns at its deadline and on context cancellation.
func TestVMRXDeadlineAndCancel(t *testing.T) {
	x := vmSetupRX(t, 4<<20, []int{3})
	server, _ := x.connect(t, x.topo.Addr4)
	r, err := NewReceiver(server, x.binding, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	server.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := r.Recv(); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("recv past deadline: %v", err)
	}
	server.SetReadDeadline(time.Time{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := r.RecvContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("recv with cancelled context: %v", err)
	}
}

// TestVMQStatsAndPagePools checks the queries see the binding (the bound
// queue's page pool carries the dma-buf id) and the traffic (device rx
// packets grow; netdevsim, like its stock version, reports them on queue 0).
func TestVMQStatsAndPagePools(t *testing.T) {
	x := vmSetupRX(t, 4<<20, []int{3})
	nd, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	before := vmQStat(t, nd, x.topo.IfIndex, -1, QStatRXPackets)
	x.transfer(t, x.topo.Addr4, 4<<20, nil)
	if after := vmQStat(t, nd, x.topo.IfIndex, -1, QStatRXPackets); after <= before {
		t.Errorf("qstats rx-packets did not grow: %d before, %d after", before, after)
	}
	pools, err := nd.PagePools(x.topo.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	var bound int
	for _, p := range pools {
		if p.DMABuf == x.binding.ID() {
			bound++
		}
	}
	if bound == 0 {
		t.Errorf("no page pool of %s carries dmabuf %d: %+v", x.topo.IfName, x.binding.ID(), pools)
	}
}

// vmQStat returns counter s of rx queue q of ifindex, or of the whole
// device when q < 0.
func vmQStat(t *testing.T, nd *Netdev, ifindex, q int, s QStat) uint64 {
	t.Helper()
	stats, err := nd.QStats(ifindex, q >= 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range stats {
		if q < 0 || (st.Type == DirectionRX && st.QueueID == q) {
			v, ok := st.Get(s)
			if !ok {
				t.Fatalf("qstats of ifindex %d queue %d lack %v: %+v", ifindex, q, s, st)
			}
			return v
		}
	}
	t.Fatalf("qstats of ifindex %d have no queue %d: %+v", ifindex, q, stats)
	return 0
}
