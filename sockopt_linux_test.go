package devmem

import (
	"errors"
	"net"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
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

// TestConstructorConns feeds NewReceiver and NewTokenReleaser every kind of
// conn that is not a live, connected TCP socket: each is refused with an
// *Error naming the constructor, none panics, and none is accepted.
func TestConstructorConns(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	unixFile := os.NewFile(uintptr(fds[0]), "socketpair")
	defer unixFile.Close()
	unix.Close(fds[1])
	unixConn, err := net.FileConn(unixFile)
	if err != nil {
		t.Fatal(err)
	}
	defer unixConn.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed, _ := tcpPair(t)
	closed.Close()

	cases := []struct {
		name  string
		conn  syscall.Conn
		errno syscall.Errno // 0: no errno to match
		is    error
	}{
		{"nil", nil, unix.EINVAL, nil},
		{"typed nil *net.TCPConn", (*net.TCPConn)(nil), unix.EINVAL, nil},
		{"typed nil *os.File", (*os.File)(nil), unix.EINVAL, nil},
		{"closed", closed, 0, net.ErrClosed},
		{"UDP", udp.(*net.UDPConn), unix.EPROTOTYPE, nil},
		{"unix stream socketpair", unixConn.(*net.UnixConn), unix.EPROTOTYPE, nil},
		{"pipe", pr, unix.ENOTSOCK, nil},
		{"TCP listener", ln.(*net.TCPListener), unix.ENOTCONN, nil},
	}
	constructors := []struct {
		op  string
		new func(syscall.Conn) error
	}{
		{"NewReceiver", func(c syscall.Conn) error {
			r, err := NewReceiver(c, testRXBinding(1), nil)
			if err == nil {
				r.Close()
			}
			return err
		}},
		{"NewTokenReleaser", func(c syscall.Conn) error {
			_, err := NewTokenReleaser(c)
			return err
		}},
	}
	for _, k := range constructors {
		for _, c := range cases {
			t.Run(k.op+"/"+c.name, func(t *testing.T) {
				err := k.new(c.conn)
				var e *Error
				if !errors.As(err, &e) || e.Op != k.op {
					t.Fatalf("err = %v, want an *Error from %s", err, k.op)
				}
				if c.errno != 0 && !errors.Is(err, c.errno) {
					t.Fatalf("err = %v, want errno %v", err, c.errno)
				}
				if c.is != nil && !errors.Is(err, c.is) {
					t.Fatalf("err = %v, want %v", err, c.is)
				}
				t.Log(err)
			})
		}
	}
}

// TestNewReceiverArgs: the binding and the configuration are checked too.
func TestNewReceiverArgs(t *testing.T) {
	_, s := tcpPair(t)
	cases := []struct {
		name string
		b    *Binding
		cfg  *ReceiverConfig
		is   error
	}{
		{"nil binding", nil, nil, unix.EINVAL},
		{"TX binding", &Binding{id: 3, dir: DirectionTX}, nil, unix.EINVAL},
		{"TX binding among the extra ones", testRXBinding(1), &ReceiverConfig{Bindings: []*Binding{{id: 3, dir: DirectionTX}}}, unix.EINVAL},
		{"nil extra binding", testRXBinding(1), &ReceiverConfig{Bindings: []*Binding{nil}}, unix.EINVAL},
		{"ControlSize 1", testRXBinding(1), &ReceiverConfig{ControlSize: 1}, ErrControlTooSmall},
		{"ControlSize one byte short of a message", testRXBinding(1), &ReceiverConfig{ControlSize: controlLen(1) - 1}, ErrControlTooSmall},
		{"negative MaxOutstanding", testRXBinding(1), &ReceiverConfig{MaxOutstanding: -1}, unix.EINVAL},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := NewReceiver(s, c.b, c.cfg)
			if err == nil {
				r.Close()
			}
			var e *Error
			if !errors.As(err, &e) || e.Op != "NewReceiver" || !errors.Is(err, c.is) {
				t.Fatalf("err = %v, want an *Error from NewReceiver matching %v", err, c.is)
			}
			t.Log(err)
		})
	}
	closed := testRXBinding(4)
	closed.Close()
	if _, ok := any(closed).(interface{ Closed() bool }); ok {
		if _, err := NewReceiver(s, closed, nil); !errors.Is(err, unix.EINVAL) {
			t.Errorf("closed binding: %v, want EINVAL", err)
		}
	} else {
		t.Log("Binding has no Closed method (yet): closed bindings not checked")
	}
	// One message's worth is enough, and extra RX bindings are welcome.
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{ControlSize: controlLen(1), Bindings: []*Binding{testRXBinding(2)}})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
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

// testRXBinding is a Binding as BindRX returns it, without a kernel: host
// tests receive on loopback, where no frag carries its id.
func testRXBinding(id uint32) *Binding { return &Binding{id: id, dir: DirectionRX} }
