//go:build vmtest

package nictest

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
)

// The simulated NIC packs wire-sized segments into its buffers the way
// fbnic's payload page queue does (see selftest/kernel/README.md): packet
// payloads start 128-byte aligned one after the other in a buffer, and one
// that does not fit in the rest of a buffer continues at offset 0 of the
// next buffer, as a second frag.

const niovSize = 4096

type geometry struct {
	frags, unaligned, nonZeroOff, crossings int
	maxPerNiov                              int
	maxSize                                 uint32
}

// joinSplit undoes the splits recvmsg makes: a frag the kernel returned in
// two pieces (the receive buffer ran out in the middle of it) comes back as
// two cmsgs, the second continuing the first in the same buffer.
func joinSplit(frags []frag, niov uint64) []frag {
	var out []frag
	for _, f := range frags {
		if n := len(out); n > 0 {
			p := &out[n-1]
			end := p.offset + uint64(p.size)
			if f.offset == end && end%niov != 0 && f.pos == p.pos+int64(p.size) {
				p.size += f.size
				continue
			}
		}
		out = append(out, f)
	}
	return out
}

func measure(frags []frag, niov uint64) geometry {
	var g geometry
	frags = joinSplit(frags, niov)
	// Frags in one buffer follow each other in stream order (one flow
	// on the queue); a buffer seen again later was recycled.
	run := 0
	for i, f := range frags {
		g.frags++
		if f.offset%128 != 0 {
			g.unaligned++
		}
		if f.offset%niov != 0 {
			g.nonZeroOff++
		}
		g.maxSize = max(g.maxSize, f.size)
		if i > 0 && frags[i-1].offset/niov == f.offset/niov {
			run++
		} else {
			run = 1
		}
		g.maxPerNiov = max(g.maxPerNiov, run)
		// A payload crossing a buffer boundary: this frag runs to the
		// end of its buffer and the next one starts at offset 0 of the
		// following buffer, together no bigger than one wire segment.
		if i+1 < len(frags) {
			n := frags[i+1]
			end := f.offset + uint64(f.size)
			if end%niov == 0 && f.offset%niov != 0 && n.offset == end &&
				f.size+n.size <= 1500 {
				g.crossings++
			}
		}
	}
	return g
}

func TestGeometryPacked(t *testing.T) {
	for _, fam := range []string{"ipv4", "ipv6"} {
		t.Run(fam, func(t *testing.T) {
			setKnob(t, "devmem_rx_buf_per_pkt", "0")
			x := setupRX(t, 8<<20, 3, nil)
			addr := x.topo.Addr4
			if fam == "ipv6" {
				addr = x.topo.Addr6
			}
			frags := x.transfer(t, addr, 4<<20)
			g := measure(frags, niovSize)
			t.Logf("%d frags, %d at a non-zero offset, %d buffer crossings, up to %d frags per buffer, largest %d bytes",
				g.frags, g.nonZeroOff, g.crossings, g.maxPerNiov, g.maxSize)
			if g.unaligned != 0 {
				t.Errorf("%d frags start off a 128-byte boundary", g.unaligned)
			}
			if g.nonZeroOff == 0 {
				t.Errorf("no frag at a non-zero offset in its buffer")
			}
			if g.maxPerNiov < 2 {
				t.Errorf("never more than one frag per buffer")
			}
			if g.crossings == 0 {
				t.Errorf("no payload crossed a buffer boundary")
			}
			if g.maxSize > niovSize {
				t.Errorf("a frag of %d bytes, larger than a buffer", g.maxSize)
			}
		})
	}
}

// TestGeometryBufPerPkt checks the old behaviour behind the knob: each
// packet's payload starts at offset 0 of a fresh buffer (bnxt's aggregation
// ring with netmem).
func TestGeometryBufPerPkt(t *testing.T) {
	setKnob(t, "devmem_rx_buf_per_pkt", "1")
	x := setupRX(t, 8<<20, 2, nil)
	frags := x.transfer(t, x.topo.Addr4, 2<<20)
	g := measure(frags, niovSize)
	t.Logf("%d frags, up to %d per buffer", g.frags, g.maxPerNiov)
	if g.nonZeroOff != 0 {
		t.Errorf("%d of %d frags at a non-zero offset", g.nonZeroOff, g.frags)
	}
	if g.maxPerNiov != 1 {
		t.Errorf("up to %d frags in one buffer", g.maxPerNiov)
	}
}

// TestGeometryLinearBytes combines packing with the devmem_linear_bytes
// knob: the first bytes of each packet stay linear, the rest is packed.
func TestGeometryLinearBytes(t *testing.T) {
	setKnob(t, "devmem_linear_bytes", "100")
	x := setupRX(t, 8<<20, 3, nil)
	x.allowLinear = true
	frags := x.transfer(t, netip.Addr(x.topo.Addr4), 1<<20)
	g := measure(frags, niovSize)
	if x.linearBytes == 0 {
		t.Errorf("no linear bytes with devmem_linear_bytes=100")
	}
	if g.nonZeroOff == 0 || g.maxPerNiov < 2 {
		t.Errorf("not packed: %+v", g)
	}
}

// TestLinearBytesSmallSegments sends segments shorter than
// devmem_linear_bytes, one at a time: each must still come with its last
// byte in the dma-buf. A header-split NIC with hds-thresh 0 (which devmem
// requires) never hands a bound queue a readable payload, and a readable
// segment in the middle of a devmem stream is what ncdevmem reports as a
// flow-steering error.
func TestLinearBytesSmallSegments(t *testing.T) {
	const linear, seg, count = 100, 60, 40
	setKnob(t, "devmem_linear_bytes", strconv.Itoa(linear))
	x := setupRX(t, 8<<20, 3, nil)
	server, client := connect(t, x.topo.Addr4, x.port)
	if err := client.(*net.TCPConn).SetNoDelay(true); err != nil {
		t.Fatal(err)
	}
	r, err := devmem.NewReceiver(server, x.binding, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := newStream(uint64(x.port))
	server.SetReadDeadline(time.Now().Add(time.Minute))
	var pos int64
	for i := range count {
		// One write, then wait for all of it: each write is one segment.
		if _, err := client.Write(s.block[pos : pos+seg]); err != nil {
			t.Fatal(err)
		}
		var lin, dma int
		for got := 0; got < seg; {
			m, err := r.Recv()
			if err != nil {
				t.Fatalf("segment %d: recv after %d bytes: %v (readable %v)", i, pos, err, m.Readable)
			}
			if m.Readable {
				t.Fatalf("segment %d: %d bytes arrived readable, not in the dma-buf", i, m.N)
			}
			if err := x.buf.BeginCPUAccess(devmem.SyncRead); err != nil {
				t.Fatal(err)
			}
			for _, f := range m.Frags {
				var b []byte
				switch f.Kind {
				case devmem.FragLinear:
					b, lin = m.Linear[f.Offset:f.Offset+uint64(f.Size)], lin+int(f.Size)
				case devmem.FragDMABuf:
					b, dma = x.mem[f.Offset:f.Offset+uint64(f.Size)], dma+int(f.Size)
				}
				if err := s.check(pos, b); err != nil {
					t.Fatalf("segment %d: %v (frag %+v)", i, err, f)
				}
				pos += int64(f.Size)
				got += int(f.Size)
			}
			if err := x.buf.EndCPUAccess(devmem.SyncRead); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Release(m.Frags); err != nil {
				t.Fatal(err)
			}
		}
		if lin != seg-1 || dma != 1 {
			t.Fatalf("segment %d of %d bytes: %d linear, %d in the dma-buf; want %d and 1", i, seg, lin, dma, seg-1)
		}
	}
}
