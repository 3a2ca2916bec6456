package devmem

import (
	"errors"
	"net"
	"syscall"
	"testing"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t testing.TB) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-done
	if s == nil {
		t.FailNow()
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// On a TCP socket that never received devmem data every token is unknown:
// the kernel frees nothing and ReleaseTokens says so. The batches seen
// must respect the kernel's per-call limits.
func TestTokenReleaserLoopback(t *testing.T) {
	c, _ := tcpPair(t)
	r, err := NewTokenReleaser(c)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	r.afterBatch = func(batch []TokenRange) {
		calls++
		sum := 0
		for _, b := range batch {
			sum += int(b.Count)
		}
		if len(batch) > maxDontneedRanges || sum > maxDontneedFrags {
			t.Errorf("batch of %d ranges, %d tokens", len(batch), sum)
		}
	}
	tokens := make([]uint32, 0, 3000)
	for i := uint32(1); len(tokens) < cap(tokens); i += 2 { // no runs: one range per token
		tokens = append(tokens, i)
	}
	freed, err := r.ReleaseTokens(tokens)
	var re *ReleaseError
	if !errors.As(err, &re) || freed != 0 || re.Requested != len(tokens) || re.Freed != 0 {
		t.Fatalf("freed %d, err %v", freed, err)
	}
	if want := (len(tokens) + maxDontneedRanges - 1) / maxDontneedRanges; calls != want {
		t.Fatalf("%d calls, want %d", calls, want)
	}
	t.Log(err)

	calls = 0
	if _, err := r.ReleaseRanges([]TokenRange{{Start: 1, Count: 5000}}); !errors.As(err, &re) || re.Requested != 5000 {
		t.Fatalf("ReleaseRanges: %v", err)
	}
	if calls != 5 {
		t.Fatalf("%d calls for 5000 tokens, want 5", calls)
	}
	if freed, err := r.ReleaseTokens(nil); freed != 0 || err != nil {
		t.Fatalf("empty release: %d, %v", freed, err)
	}
}

func TestTokenReleaserUDP(t *testing.T) {
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r, err := NewTokenReleaser(c.(*net.UDPConn))
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.ReleaseTokens([]uint32{1})
	var e *Error
	if !errors.Is(err, syscall.EBADF) || !errors.As(err, &e) || e.Op != opDontneed {
		t.Fatalf("err = %v, want EBADF from %s", err, opDontneed)
	}
}

func TestTokenReleaserClosed(t *testing.T) {
	c, _ := tcpPair(t)
	r, err := NewTokenReleaser(c)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := r.ReleaseTokens([]uint32{1}); err == nil {
		t.Fatal("release on a closed conn succeeded")
	}
}
