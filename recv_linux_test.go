package devmem

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// On loopback nothing is in device memory: the kernel ignores
// MSG_SOCK_DEVMEM for readable skbs and copies them.
func TestReceiverReadable(t *testing.T) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, &ReceiverConfig{BufferSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := []byte("not in device memory")
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	msg, err := r.Recv()
	if err != nil {
		t.Fatal(err)
	}
	want := Message{Frags: []Frag{{Kind: FragLinear, Size: uint32(len(data))}}, Linear: data, N: len(data), Readable: true}
	if diff := cmp.Diff(want, msg); diff != "" {
		t.Fatalf("message (-want +got):\n%s", diff)
	}
	c.Close()
	if _, err := r.Recv(); err != io.EOF {
		t.Fatalf("after the peer closed: %v, want io.EOF", err)
	}
	if r.Outstanding() != 0 {
		t.Fatalf("%d tokens outstanding", r.Outstanding())
	}
}

// A strict receiver's recvmsg faults on readable data without consuming
// it: a plain Read still gets every byte.
func TestReceiverStrict(t *testing.T) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, &ReceiverConfig{BufferSize: 4096, Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := []byte("steered to the wrong queue")
	if _, err := c.Write(data); err != nil {
		t.Fatal(err)
	}
	msg, err := r.Recv()
	if !errors.Is(err, ErrNotDevmem) || !errors.Is(err, syscall.EFAULT) || msg.N != 0 {
		t.Fatalf("Recv = %+v, %v; want ErrNotDevmem (EFAULT)", msg, err)
	}
	t.Log(err)
	got := make([]byte, len(data))
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(s, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("plain read after strict Recv: %q, %v", got, err)
	}
}

func TestReceiverDeadline(t *testing.T) {
	_, s := tcpPair(t)
	r, err := NewReceiver(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = r.Recv()
	var e *Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &e) || e.Op != "recvmsg" {
		t.Fatalf("Recv = %v, want os.ErrDeadlineExceeded from recvmsg", err)
	}
}

func TestReceiverContext(t *testing.T) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := r.RecvContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("RecvContext = %v, want context.DeadlineExceeded", err)
	}
	// The deadline used to interrupt is cleared: the next receive
	// blocks until data comes.
	go func() {
		time.Sleep(30 * time.Millisecond)
		c.Write([]byte("x"))
	}()
	msg, err := r.RecvContext(context.Background())
	if err != nil || msg.N != 1 {
		t.Fatalf("RecvContext after a cancellation: %+v, %v", msg, err)
	}
	// Data that is already there wins over a live context.
	c.Write([]byte("y"))
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	if msg, err := r.RecvContext(ctx2); err != nil || msg.N != 1 {
		t.Fatalf("RecvContext with data: %+v, %v", msg, err)
	}
	cancel2()
	if _, err := r.RecvContext(ctx2); !errors.Is(err, context.Canceled) {
		t.Fatalf("RecvContext with a cancelled ctx: %v", err)
	}
}

// Close and conn.Close both wake a blocked Recv (run with -race).
func TestReceiverCloseRace(t *testing.T) {
	for _, closeConn := range []bool{false, true} {
		_, s := tcpPair(t)
		r, err := NewReceiver(s, nil)
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() {
			_, err := r.Recv()
			errc <- err
		}()
		time.Sleep(20 * time.Millisecond)
		if closeConn {
			s.Close()
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Fatalf("closeConn=%v: Recv = %v, want net.ErrClosed", closeConn, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("closeConn=%v: Recv still blocked after Close", closeConn)
		}
		if _, err := r.Recv(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Recv after Close: %v", err)
		}
	}
}

func TestReceiverRelease(t *testing.T) {
	_, s := tcpPair(t)
	r, err := NewReceiver(s, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Pretend the kernel handed out tokens 1..3: on loopback the kernel
	// knows none of them, so it frees nothing and says so.
	r.outstanding.add(1)
	r.outstanding.add(2)
	r.outstanding.add(3)
	frags := []Frag{{Kind: FragLinear, Size: 5}, {Kind: FragDMABuf, Token: 1}, {Kind: FragDMABuf, Token: 2}, {Kind: FragDMABuf, Token: 9}}
	freed, err := r.Release(frags)
	var re *ReleaseError
	if !errors.As(err, &re) || freed != 0 || re.Requested != 3 {
		t.Fatalf("Release = %d, %v", freed, err)
	}
	// Accepted batches are forgotten, whatever the count.
	if r.Outstanding() != 1 {
		t.Fatalf("%d outstanding, want 1", r.Outstanding())
	}
	b := NewTokenBatcher(r, nil)
	if err := b.AddTokens([]uint32{3}); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); !errors.As(err, &re) || re.Requested != 1 {
		t.Fatalf("batcher Close: %v", err)
	}
	if r.Outstanding() != 0 {
		t.Fatalf("%d outstanding, want 0", r.Outstanding())
	}
	r.outstanding.add(4)
	if err := r.Close(); !errors.As(err, &re) || re.Requested != 1 {
		t.Fatalf("Close: %v", err)
	}
}

func TestReceiverMaxOutstanding(t *testing.T) {
	_, s := tcpPair(t)
	r, err := NewReceiver(s, &ReceiverConfig{MaxOutstanding: 1})
	if err != nil {
		t.Fatal(err)
	}
	r.outstanding.add(1)
	if _, err := r.Recv(); !errors.Is(err, ErrTooManyOutstanding) {
		t.Fatalf("Recv = %v, want ErrTooManyOutstanding", err)
	}
}

func TestReceiverRecvAllocs(t *testing.T) {
	c, s := tcpPair(t)
	r, err := NewReceiver(s, &ReceiverConfig{BufferSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data := make([]byte, 1000)
	allocs := testing.AllocsPerRun(200, func() {
		c.Write(data)
		for n := 0; n < len(data); {
			msg, err := r.Recv()
			if err != nil {
				t.Fatal(err)
			}
			n += msg.N
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocs per Write+Recv", allocs)
	}
}
