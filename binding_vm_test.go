//go:build vmtest

package devmem

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devmem-go/devmem/nic"
	"github.com/devmem-go/devmem/selftest"
	"golang.org/x/sys/unix"
)

// socketFDs returns the process's socket fds.
func socketFDs(t *testing.T) map[int]bool {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	for _, e := range entries {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			fd, _ := strconv.Atoi(e.Name())
			out[fd] = true
		}
	}
	return out
}

// queueBinding returns the id of the binding that backs RX queue q (0 for
// none), as the kernel reports it.
func queueBinding(t *testing.T, ifindex, q int) uint32 {
	t.Helper()
	n, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	qu, err := n.Queue(ifindex, DirectionRX, q)
	if err != nil {
		t.Fatal(err)
	}
	return qu.DMABuf
}

// devmemRecv reads want bytes from c with recvmsg(MSG_SOCK_DEVMEM) and checks
// that every one of them arrived in the dma-buf of binding id, with the
// content sent. It does not go through Receiver on purpose: this is about the
// binding. Tokens are left to the socket's close.
func devmemRecv(t *testing.T, c *net.TCPConn, id uint32, mem, want []byte) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SetReadDeadline(time.Now().Add(60 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	oob := make([]byte, 64<<10)
	var got int
	for got < len(want) {
		var n, oobn int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, unix.MSG_SOCK_DEVMEM|unix.MSG_DONTWAIT)
			return rerr != unix.EAGAIN
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			t.Fatalf("recvmsg after %d bytes: %v", got, err)
		}
		if n == 0 && oobn == 0 {
			t.Fatalf("EOF after %d bytes of %d", got, len(want))
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			t.Fatalf("after %d bytes: %d bytes arrived readable, not in device memory: the queue lost its binding", got, n)
		}
		for _, m := range msgs {
			if m.Header.Level != unix.SOL_SOCKET {
				continue
			}
			switch m.Header.Type {
			case unix.SCM_DEVMEM_DMABUF:
				off := binary.NativeEndian.Uint64(m.Data[0:])
				size := binary.NativeEndian.Uint32(m.Data[8:])
				dmabufID := binary.NativeEndian.Uint32(m.Data[16:])
				if dmabufID != id {
					t.Fatalf("frag from dma-buf %d, want %d", dmabufID, id)
				}
				if !bytes.Equal(mem[off:off+uint64(size)], want[got:got+int(size)]) {
					t.Fatalf("frag at stream byte %d (dma-buf offset %d, %d bytes) differs from what was sent", got, off, size)
				}
				got += int(size)
			case unix.SCM_DEVMEM_LINEAR:
				size := int(binary.NativeEndian.Uint32(m.Data[8:]))
				t.Logf("%d linear bytes at stream byte %d", size, got)
				got += size
			}
		}
	}
}

// TestVMBindingSurvivesGC binds a queue, drops the Binding, collects it
// (checked with a weak pointer) and runs the finalizers, then receives: the
// payload still lands in device memory and queue-get still reports the
// binding. It failed when the Binding kept the netlink connection, whose
// os.File unbound the queue at the first GC.
func TestVMBindingSurvivesGC(t *testing.T) {
	topo, setup := vmNICSetup(t)
	const queue = 1
	port := vmPort()
	buf, err := NewUDMABuf(4<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	mem, err := buf.Map()
	if err != nil {
		t.Fatal(err)
	}
	if err := setup.SteerRSSAway(queue); err != nil {
		t.Fatal(err)
	}
	if _, err := setup.AddFlowRule(nic.FlowRule{Type: nic.FlowTCP4, Dst: topo.Addr4, DstPort: port, Queue: queue}); err != nil {
		t.Fatal(err)
	}

	before := socketFDs(t)
	id, collected := func() (uint32, func() bool) {
		b, err := BindRX(topo.IfIndex, buf, []int{queue}, nil)
		if err != nil {
			t.Fatalf("bind-rx: %v", err)
		}
		w := weakPointer(b)
		return b.ID(), func() bool { return w() == nil }
	}()
	var sock int = -1
	for fd := range socketFDs(t) {
		if !before[fd] {
			sock = fd
		}
	}
	if sock < 0 {
		t.Fatal("no new socket for the binding")
	}
	// Whatever happens, unbind at the end through the socket: the
	// dropped Binding cannot, and later tests want the queue.
	t.Cleanup(func() {
		if collected() {
			unix.Close(sock)
		}
	})
	for i := 0; i < 10 && !collected(); i++ {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
	if !collected() {
		t.Fatal("the dropped Binding was not collected; the test proves nothing")
	}
	for range 3 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond) // finalizers run on their own goroutine
	}

	if got := queueBinding(t, topo.IfIndex, queue); got != id {
		t.Fatalf("after a GC queue %d reports binding %d, want %d: the collector unbound it", queue, got, id)
	}
	ln, err := net.Listen("tcp4", net.JoinHostPort(topo.Addr4.String(), strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	want := make([]byte, 256<<10)
	for i := range want {
		want[i] = byte(i*13 + i>>10)
	}
	sent := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c, err := selftest.DialPeer(ctx, "tcp4", ln.Addr().String())
		if err != nil {
			sent <- err
			return
		}
		defer c.Close()
		_, err = c.Write(want)
		sent <- err
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	devmemRecv(t, c.(*net.TCPConn), id, mem, want)
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	c.Close()

	// Closing the socket is what unbinds.
	if err := unix.Close(sock); err != nil {
		t.Fatal(err)
	}
	sock = -1
	deadline := time.Now().Add(5 * time.Second)
	for queueBinding(t, topo.IfIndex, queue) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("closing the binding's socket did not unbind")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestVMBindArgs: what the kernel refused without a reason, or accepted
// oddly, gets a clear error from BindRX and BindTX.
func TestVMBindArgs(t *testing.T) {
	topo, _ := vmNICSetup(t)
	buf, err := NewUDMABuf(1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	for _, tt := range []struct {
		name string
		bind func() (*Binding, error)
		is   error
		msg  string
	}{
		{"no queues", func() (*Binding, error) { return BindRX(topo.IfIndex, buf, nil, nil) }, unix.EINVAL, "no queues"},
		{"queue twice", func() (*Binding, error) { return BindRX(topo.IfIndex, buf, []int{3, 3}, nil) }, unix.EINVAL, "listed twice"},
		{"rx ifindex 0", func() (*Binding, error) { return BindRX(0, buf, []int{1}, nil) }, os.ErrNotExist, "ifindex 0"},
		{"tx ifindex 0", func() (*Binding, error) { return BindTX(0, buf) }, os.ErrNotExist, "ifindex 0"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.bind()
			if err == nil {
				t.Errorf("bound as %d, queues %v", b.ID(), b.Queues())
				b.Close()
				return
			}
			if !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("%v, want an error matching %v saying %q", err, tt.is, tt.msg)
			}
		})
	}
	// The same queues, once each, bind.
	b, err := BindRX(topo.IfIndex, buf, []int{3, 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if b.Size() != buf.Size() || len(b.Queues()) != 2 {
		t.Errorf("size %d queues %v", b.Size(), b.Queues())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}
