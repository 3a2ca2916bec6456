//go:build vmtest

package devmem_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/selftest"
	"golang.org/x/sys/unix"
)

// These tests send out of a udmabuf bound with bind-tx on the host-side
// netdevsim port, to a plain TCP listener in the peer netns. The patched
// netdevsim copies unreadable frags out through their DMA address, so the
// peer receives the bytes written into the udmabuf.

// txSetup makes a pattern-filled udmabuf, binds it for TX and connects to a
// peer listener; the returned channel yields everything the peer read.
func txSetup(t *testing.T, addr netip.Addr, size int64) (*devmem.DMABuf, *devmem.Binding, *net.TCPConn, <-chan []byte) {
	t.Helper()
	topo := selftest.Require(t)
	buf, err := devmem.NewUDMABuf(size, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { buf.Close() })
	if _, err := buf.WriteAt(pattern(int(size), 9), 0); err != nil {
		t.Fatal(err)
	}
	binding, err := devmem.BindTX(topo.IfIndex, buf)
	if err != nil {
		t.Fatalf("bind-tx on %s: %v", topo.IfName, err)
	}
	t.Cleanup(func() { binding.Close() })

	ln, err := selftest.ListenPeer("tcp", net.JoinHostPort(addr.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(c)
		c.Close() // before reporting, so fd counts after <-got are settled
		got <- b
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := net.Dialer{Control: bindToDeviceControl(topo.IfName)}
	c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return buf, binding, c.(*net.TCPConn), got
}

// bindToDeviceControl is a net.Dialer Control function binding the socket
// to ifname (SO_BINDTODEVICE), as devmem TX needs.
func bindToDeviceControl(ifname string) func(network, address string, c syscall.RawConn) error {
	return func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.BindToDevice(int(fd), ifname) }); cerr != nil {
			return cerr
		}
		return err
	}
}

func peerAddrs(t *testing.T) []netip.Addr {
	topo := selftest.Require(t)
	return []netip.Addr{topo.PeerAddr4, topo.PeerAddr6}
}

func TestVMSendDevmem(t *testing.T) {
	for _, addr := range peerAddrs(t) {
		for _, chunk := range []int64{0, 3, 4096, 65536 + 1} {
			t.Run(addr.String()+"/chunk="+strconv.FormatInt(chunk, 10), func(t *testing.T) {
				before, _ := selftest.OpenFDs()
				// The inner subtest's cleanups (buffer, binding,
				// connection) run before the count below.
				t.Run("send", func(t *testing.T) {
					const size = 4 << 20
					buf, binding, conn, got := txSetup(t, addr, size)
					s, err := devmem.NewSender(conn, binding, &devmem.SenderConfig{ChunkSize: chunk})
					if err != nil {
						t.Fatal(err)
					}
					mem := make([]byte, size)
					if _, err := buf.ReadAt(mem, 0); err != nil {
						t.Fatal(err)
					}
					ranges := [][2]int64{{0, 11}, {4096, 1 << 20}, {5, 3}, {size - 100, 100}}
					if chunk == 3 {
						// ncdevmem -z 3 sends lines; keep it small.
						ranges = [][2]int64{{0, 11}, {100, 7}}
					}
					ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
					defer cancel()
					var want bytes.Buffer
					sent := map[uint32][2]int64{}
					for _, r := range ranges {
						seq, err := s.SendContext(ctx, r[0], r[1])
						if err != nil {
							t.Fatalf("Send(%d, %d): %v", r[0], r[1], err)
						}
						sent[seq] = r
						want.Write(mem[r[0] : r[0]+r[1]])
					}
					var comps []devmem.Completion
					for s.Pending() > 0 {
						if comps, err = s.Completions(ctx, comps); err != nil {
							t.Fatalf("Completions: %v", err)
						}
					}
					if len(comps) != len(ranges) {
						t.Errorf("%d completions for %d sends", len(comps), len(ranges))
					}
					for _, c := range comps {
						if r := sent[c.Seq]; c.Offset != r[0] || c.Length != r[1] {
							t.Errorf("completion %+v for send %v", c, r)
						}
					}
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
					conn.CloseWrite()
					select {
					case b := <-got:
						if !bytes.Equal(b, want.Bytes()) {
							t.Fatalf("peer got %d bytes, want %d; equal length %v", len(b), want.Len(), len(b) == want.Len())
						}
					case <-ctx.Done():
						t.Fatal("peer did not finish reading")
					}
				})
				if after, _ := selftest.OpenFDs(); after != before {
					t.Errorf("fds %d -> %d: a descriptor leaked", before, after)
				}
			})
		}
	}
}

// TestVMSendReuse rewrites a range only after WaitComplete and checks that
// the peer sees both versions in order.
func TestVMSendReuse(t *testing.T) {
	topo := selftest.Require(t)
	buf, binding, conn, got := txSetup(t, topo.PeerAddr4, 1<<20)
	s, err := devmem.NewSender(conn, binding, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var want bytes.Buffer
	for i := range 20 {
		msg := []byte("message " + strconv.Itoa(i) + "\n")
		if _, err := buf.WriteAt(msg, 0); err != nil {
			t.Fatal(err)
		}
		seq, err := s.SendContext(ctx, 0, int64(len(msg)))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.WaitComplete(ctx, seq); err != nil {
			t.Fatal(err)
		}
		want.Write(msg)
	}
	s.Close()
	conn.CloseWrite()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("peer got %q, want %q", b, want.Bytes())
	}
}

func TestVMSendErrors(t *testing.T) {
	topo := selftest.Require(t)
	const size = 1 << 20
	buf, binding, conn, _ := txSetup(t, topo.PeerAddr4, size)

	s, err := devmem.NewSender(conn, binding, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Past the end of the dma-buf.
	if _, err := s.Send(size+4096, 10); !errors.Is(err, syscall.EFAULT) {
		t.Errorf("send beyond the dma-buf: %v", err)
	}
	if s.Pending() != 0 {
		t.Errorf("failed sends left %d pending", s.Pending())
	}

	// A closed binding: NewSender refuses it, and a Sender of it stops.
	other, err := devmem.BindTX(topo.IfIndex, buf)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := devmem.NewSender(conn, other, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.Send(0, 10); !errors.Is(err, net.ErrClosed) {
		t.Errorf("send through a closed binding: %v", err)
	}
	if _, err := devmem.NewSender(conn, other, nil); !errors.Is(err, net.ErrClosed) {
		t.Errorf("NewSender with a closed binding: %v", err)
	}
}

// TestVMSendWithReaper is the usual MSG_ZEROCOPY design on device memory: one
// goroutine sends out of a ring of slots, rewriting a slot only once its last
// send has completed; another reaps with Completions and hands slots back.
// The peer checks every byte.
func TestVMSendWithReaper(t *testing.T) {
	topo := selftest.Require(t)
	const slot, slots, sends = 64 << 10, 8, 64
	buf, binding, conn, got := txSetup(t, topo.PeerAddr4, slot*slots)
	s, err := devmem.NewSender(conn, binding, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	free := make(chan int, slots)
	for i := range slots {
		free <- i
	}
	var (
		mu   sync.Mutex
		busy = map[uint32]int{}
	)
	reaped := make(chan error, 1)
	go func() {
		var comps []devmem.Completion
		for n := 0; n < sends; {
			var err error
			if comps, err = s.Completions(ctx, comps[:0]); err != nil {
				reaped <- err
				return
			}
			if len(comps) == 0 {
				time.Sleep(time.Millisecond) // nothing sent yet
			}
			mu.Lock()
			for _, c := range comps {
				free <- busy[c.Seq]
				delete(busy, c.Seq)
			}
			mu.Unlock()
			n += len(comps)
		}
		reaped <- nil
	}()
	var want bytes.Buffer
	for i := range sends {
		var k int
		select {
		case k = <-free:
		case <-ctx.Done():
			t.Fatal("no slot came back")
		}
		data := pattern(slot, byte(i))
		if _, err := buf.WriteAt(data, int64(k)*slot); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		seq, err := s.SendContext(ctx, int64(k)*slot, slot)
		if err != nil {
			mu.Unlock()
			t.Fatalf("send %d: %v", i, err)
		}
		busy[seq] = k
		mu.Unlock()
		want.Write(data)
	}
	if err := <-reaped; err != nil {
		t.Fatalf("reaper: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	conn.CloseWrite()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("peer got %d bytes, want %d (or different content)", len(b), want.Len())
	}
}
