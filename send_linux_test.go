//go:build linux

package devmem

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestNativeTxABI(t *testing.T) {
	b := nativeTxABI.dmabufCmsg(7)
	if len(b) != unix.CmsgSpace(4) {
		t.Errorf("control is %d bytes, want CMSG_SPACE(4) = %d", len(b), unix.CmsgSpace(4))
	}
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	if int(h.Len) != unix.CmsgLen(4) || h.Level != unix.SOL_SOCKET || h.Type != unix.SCM_DEVMEM_DMABUF {
		t.Errorf("header %+v", *h)
	}
	if unsafe.Sizeof(iovec{}) != unsafe.Sizeof(unix.Iovec{}) {
		t.Error("iovec and unix.Iovec differ in size")
	}
	if unsafe.Sizeof(sockExtendedErr{}) != sizeofSockExtendedErr || unsafe.Sizeof(unix.SockExtendedErr{}) != sizeofSockExtendedErr {
		t.Error("sock_extended_err is not 16 bytes")
	}
}

// loopbackPair returns a connected TCP pair on 127.0.0.1.
func loopbackPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// anonBuffer maps size bytes outside the Go heap, filled with a pattern, to
// stand in for the dma-buf: with id 0 the Sender sends no SCM_DEVMEM_DMABUF
// and its offsets become addresses in this buffer.
func anonBuffer(t *testing.T, size int) []byte {
	t.Helper()
	mem, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(mem) })
	for i := range mem {
		mem[i] = byte(i*7 + i>>8)
	}
	return mem
}

// TestSenderLoopbackZerocopy drives the real sendmsg and error-queue paths
// with plain MSG_ZEROCOPY over loopback (devmem itself cannot run on
// loopback): ids, partial sends, chunking, completion reaping.
func TestSenderLoopbackZerocopy(t *testing.T) {
	client, server := loopbackPair(t)
	mem := anonBuffer(t, 4<<20)
	s, err := newSender(client, 0, &SenderConfig{ChunkSize: 3*4096 + 7}, uintptr(unsafe.Pointer(&mem[0])))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(server)
		got <- b
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ranges := [][2]int64{{0, 100000}, {100000, 5}, {200000, 3 << 20}, {7, 1}}
	var want bytes.Buffer
	seqs := map[uint32][2]int64{}
	for _, r := range ranges {
		seq, err := s.SendContext(ctx, r[0], r[1])
		if err != nil {
			t.Fatalf("Send(%d, %d): %v", r[0], r[1], err)
		}
		seqs[seq] = r
		want.Write(mem[r[0] : r[0]+r[1]])
	}
	var comps []Completion
	for s.Pending() > 0 {
		comps, err = s.Completions(ctx, comps)
		if err != nil {
			t.Fatalf("Completions: %v", err)
		}
	}
	// Every Send is reported exactly once, with its range.
	if len(comps) != len(ranges) {
		t.Errorf("%d completions for %d sends: %+v", len(comps), len(ranges), comps)
	}
	for _, c := range comps {
		r, ok := seqs[c.Seq]
		if !ok || c.Offset != r[0] || c.Length != r[1] {
			t.Errorf("completion %+v does not match a send (%v)", c, r)
		}
		delete(seqs, c.Seq)
	}
	// Point waits: one more send, waited for by sequence number.
	seq, err := s.SendContext(ctx, 1<<20, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	want.Write(mem[1<<20 : 2<<20])
	if err := s.WaitComplete(ctx, seq); err != nil {
		t.Fatalf("WaitComplete(%d): %v", seq, err)
	}
	if s.Pending() != 0 {
		t.Errorf("pending %d after WaitComplete of the only send", s.Pending())
	}
	if err := s.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close with nothing pending: %v", err)
	}
	if _, err := s.Send(0, 1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	client.CloseWrite()
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("server got %d bytes, want %d (content differs: %v)", len(b), want.Len(), len(b) == want.Len())
	}
	if err := s.WaitComplete(ctx, 1000); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("WaitComplete on an unissued seq: %v", err)
	}
}

// TestSenderContextCancel blocks a Send on a full send buffer (the peer does
// not read) and checks that the context wakes it, that the part queued is
// reported and tracked, and that the write deadline is restored.
func TestSenderContextCancel(t *testing.T) {
	client, server := loopbackPair(t)
	if err := client.SetWriteBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if err := server.SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	mem := anonBuffer(t, 16<<20)
	s, err := newSender(client, 0, nil, uintptr(unsafe.Pointer(&mem[0])))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err = s.SendContext(ctx, 0, int64(len(mem)))
	var partial *PartialSendError
	if !errors.Is(err, context.DeadlineExceeded) || !errors.As(err, &partial) || partial.Queued <= 0 {
		t.Fatalf("SendContext on a full buffer: %v", err)
	}
	if s.Pending() != 1 {
		t.Fatalf("pending %d, want the partial send", s.Pending())
	}
	// The deadline is back to none: draining the peer lets Flush finish.
	go io.Copy(io.Discard, server)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	if err := s.Flush(ctx2); err != nil {
		t.Fatalf("Flush: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close after Flush: %v", err)
	}
	if err := s.Flush(ctx2); err != nil {
		t.Errorf("Flush with nothing pending after Close: %v", err)
	}
	if _, err := s.Send(0, 1); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
}

func TestSenderWriteDeadline(t *testing.T) {
	client, _ := loopbackPair(t)
	mem := anonBuffer(t, 4096)
	s, err := newSender(client, 0, nil, uintptr(unsafe.Pointer(&mem[0])))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(0, 10); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Send past the deadline: %v", err)
	}
}

func TestNewSenderNotTCP(t *testing.T) {
	c, err := net.ListenPacket("unixgram", "")
	if err != nil {
		t.Skip(err)
	}
	defer c.Close()
	_, err = NewSender(c.(*net.UnixConn), &Binding{id: 1, dir: DirectionTX}, nil)
	if !errors.Is(err, syscall.EOPNOTSUPP) || !strings.Contains(err.Error(), "needs a TCP socket") {
		t.Fatalf("NewSender on a unix socket: %v", err)
	}
}

func TestBindToDevice(t *testing.T) {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	uc := c.(*net.UDPConn)
	if err := BindToDevice(uc, "lo"); err != nil {
		if errors.Is(err, os.ErrPermission) {
			t.Skip(err)
		}
		t.Fatalf("BindToDevice(lo): %v", err)
	}
	if err := BindToDevice(uc, "nosuchdev0"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("BindToDevice(nosuchdev0) = %v, want os.ErrNotExist", err)
	}
}

func TestBindToDeviceControl(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := net.Dialer{Control: BindToDeviceControl("lo")}
	c, err := d.Dial("tcp4", ln.Addr().String())
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	c.Close()
	d = net.Dialer{Control: BindToDeviceControl("nosuchdev0")}
	if _, err := d.Dial("tcp4", ln.Addr().String()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dial bound to a missing device: %v", err)
	}
}
