//go:build vmtest

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/nic"
	"github.com/devmem-go/devmem/selftest"
)

// These tests run the built ncdevmem binary inside the test VM (go test
// -tags vmtest -exec vmexec ./cmd/ncdevmem) against the peer netns.

// ncdevmemBin is the binary under test: DEVMEM_NCDEVMEM_BIN if set (built
// on the host, which the VM sees), else built once by TestMain.
var ncdevmemBin string

func TestMain(m *testing.M) {
	if selftest.InVM() {
		ncdevmemBin = os.Getenv("DEVMEM_NCDEVMEM_BIN")
		if ncdevmemBin == "" {
			dir, err := os.MkdirTemp("", "ncdevmem")
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(2)
			}
			ncdevmemBin = filepath.Join(dir, "ncdevmem")
			out, err := exec.Command("go", "build", "-o", ncdevmemBin, "github.com/devmem-go/devmem/cmd/ncdevmem").CombinedOutput()
			if err != nil {
				fmt.Fprintf(os.Stderr, "building ncdevmem: %v\n%s", err, out)
				os.Exit(2)
			}
		}
	}
	os.Exit(m.Run())
}

var nextPort atomic.Int32

func init() { nextPort.Store(5300) }

func port() string { return strconv.Itoa(int(nextPort.Add(1))) }

// result is one finished ncdevmem run.
type result struct {
	code   int
	stderr string
	sum    summary // from --json, when given
}

func (r result) String() string {
	return fmt.Sprintf("exit %d, summary %+v, stderr:\n%s", r.code, r.sum, r.stderr)
}

func finish(t *testing.T, cmd *exec.Cmd, stdout, stderr *bytes.Buffer, err error) result {
	t.Helper()
	r := result{stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		t.Fatalf("%v: %v", cmd.Args, err)
	}
	if bytes.HasPrefix(stdout.Bytes(), []byte("{")) {
		if err := json.Unmarshal(stdout.Bytes(), &r.sum); err != nil {
			t.Fatalf("--json output %q: %v", stdout, err)
		}
	}
	return r
}

// started is a running server.
type started struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan error
}

func startServer(t *testing.T, bin string, args ...string) *started {
	t.Helper()
	s := &started{cmd: exec.Command(bin, args...), done: make(chan error, 1)}
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() { s.cmd.Process.Kill() })
	return s
}

func (s *started) wait(t *testing.T) result {
	t.Helper()
	select {
	case err := <-s.done:
		return finish(t, s.cmd, &s.stdout, &s.stderr, err)
	case <-time.After(3 * time.Minute):
		s.cmd.Process.Kill()
		t.Fatalf("server did not finish; stderr:\n%s", s.stderr.String())
	}
	return result{}
}

// waitListening waits until something listens on port (read from
// /proc/net/tcp*: connecting to probe would be taken as the transfer).
func waitListening(t *testing.T, s *started, port string) {
	t.Helper()
	n, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X ", n)
	for range 600 {
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(b), "\n") {
				fields := strings.Fields(line)
				if len(fields) > 3 && strings.HasSuffix(fields[1], want[:len(want)-1]) && fields[3] == "0A" {
					return
				}
			}
		}
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("server exited before listening: %v\n%s", err, s.stderr.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("nothing listens on %s; stderr:\n%s", port, s.stderr.String())
}

// patternReader yields n bytes of ncdevmem's -v modulus pattern, optionally
// corrupted from byte corruptAt on.
type patternReader struct {
	v         *validator
	left      int64
	corruptAt int64
	off       int64
}

func newPattern(modulus uint64, n int64) *patternReader {
	return &patternReader{v: newValidator(modulus), left: n, corruptAt: -1}
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(b)), p.left))
	v := p.v
	for done := 0; done < n; {
		// The validator's own expected-bytes table, a chunk at a time
		// (byte by byte is too slow under TCG).
		at := v.pos[v.seed]
		c := copy(b[done:n], v.pattern[at:at+min(n-done, fastChunk)])
		v.seed = v.cycle[(at+c)%len(v.cycle)]
		done += c
	}
	for i := range b[:n] {
		if p.corruptAt >= 0 && p.off+int64(i) >= p.corruptAt {
			b[i] ^= 0x55
		}
	}
	p.off += int64(n)
	p.left -= int64(n)
	return n, nil
}

// peerSend streams r from the peer netns to addr:port with socat.
func peerSend(t *testing.T, r io.Reader, addr, port string, socatOpts ...string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	target := "TCP:" + net.JoinHostPort(addr, port)
	if len(socatOpts) > 0 {
		target += "," + strings.Join(socatOpts, ",")
	}
	cmd := selftest.PeerCommand(ctx, "socat", "-u", "STDIN", target)
	cmd.Stdin = r
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("socat: %v: %s", err, out)
	}
	return nil
}

// nicState is the NIC state the tests compare before and after each run.
func nicState(t *testing.T, topo *selftest.Topology) *nic.State {
	t.Helper()
	n, err := nic.Open(topo.IfName)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	s, err := n.State()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkRestored fails the test if the NIC state differs from before or a
// dma-buf is still bound to one of its queues.
func checkRestored(t *testing.T, topo *selftest.Topology, before *nic.State) {
	t.Helper()
	if after := nicState(t, topo); !after.Equal(before) {
		t.Errorf("NIC not restored:\nbefore %v\nafter  %v", before, after)
	}
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	qs, err := nd.Queues(topo.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		if q.DMABuf != 0 {
			t.Errorf("%v queue %d still bound to dma-buf %d", q.Type, q.ID, q.DMABuf)
		}
	}
}

func serverArgs(topo *selftest.Topology, port string, extra ...string) []string {
	return append([]string{"-l", "-f", topo.IfName, "-s", topo.Addr4.String(), "-c", topo.PeerAddr4.String(), "-p", port}, extra...)
}

// receiveFromSocat runs bin as a server and sends r from the peer.
// receiveFromPeer is receiveFromSocat with a Go sender that writes the
// stream from the peer netns in 64 KiB blocks, so TCP never has to send a
// small segment: with devmem_linear_bytes set, a segment whose whole payload
// would stay linear arrives readable (no frag to make it unreadable), which a
// server rightly calls a flow-steering error.
func receiveFromPeer(t *testing.T, topo *selftest.Topology, bin string, r io.Reader, extra ...string) result {
	t.Helper()
	p := port()
	s := startServer(t, bin, serverArgs(topo, p, extra...)...)
	waitListening(t, s, p)
	pn, _ := strconv.Atoi(p)
	var c net.Conn
	err := selftest.InPeer(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: topo.PeerAddr4.AsSlice(), Port: pn}}
		var err error
		c, err = d.Dial("tcp4", net.JoinHostPort(topo.Addr4.String(), p))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyBuffer(struct{ io.Writer }{c}, r, make([]byte, 64<<10)); err != nil {
		t.Logf("sender: %v", err)
	}
	c.Close()
	return s.wait(t)
}

func receiveFromSocat(t *testing.T, topo *selftest.Topology, bin string, r io.Reader, socatOpts []string, extra ...string) result {
	t.Helper()
	p := port()
	s := startServer(t, bin, serverArgs(topo, p, extra...)...)
	waitListening(t, s, p)
	if err := peerSend(t, r, topo.Addr4.String(), p, append([]string{"sourceport=" + p}, socatOpts...)...); err != nil {
		t.Logf("sender: %v", err)
	}
	return s.wait(t)
}

func TestServerValidatesSocat(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	const size = 16 << 20
	r := receiveFromSocat(t, topo, ncdevmemBin, newPattern(7, size), nil, "-v", "7", "--json")
	if r.code != 0 || r.sum.Bytes != size || r.sum.Validation != "passed" {
		t.Fatalf("want exit 0, %d bytes validated; got %v", size, r)
	}
	if r.sum.DontneedCalls == 0 || r.sum.TokensReleased != r.sum.Frags || r.sum.DontneedCalls >= r.sum.Frags {
		t.Errorf("tokens: %d released in %d calls for %d frags; want all, batched", r.sum.TokensReleased, r.sum.DontneedCalls, r.sum.Frags)
	}
	t.Logf("%d bytes in %.2f s (%.1f MB/s), %d recvmsg, %d frags, %d DONTNEED calls",
		r.sum.Bytes, r.sum.Seconds, r.sum.MBps, r.sum.RecvCalls, r.sum.Frags, r.sum.DontneedCalls)
	checkRestored(t, topo, before)
}

func TestServerFailsOnCorruptData(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	bad := newPattern(7, 1<<20)
	bad.corruptAt = 100000
	r := receiveFromSocat(t, topo, ncdevmemBin, bad, nil, "-v", "7", "--json")
	if r.code != 1 || r.sum.Validation != "failed" || !strings.Contains(r.sum.Error, "validation failed") {
		t.Fatalf("want exit 1 with a validation failure; got %v", r)
	}
	checkRestored(t, topo, before)
}

func TestServerReceivesOurClient(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	const size = 8 << 20
	p := port()
	s := startServer(t, ncdevmemBin, serverArgs(topo, p, "-v", "7", "--json")...)
	waitListening(t, s, p)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := selftest.PeerCommand(ctx, ncdevmemBin, "-f", topo.PeerIfName, "-s", topo.Addr4.String(), "-c", topo.PeerAddr4.String(), "-p", p, "--json")
	client.Stdin = newPattern(7, size)
	var cout, cerr bytes.Buffer
	client.Stdout, client.Stderr = &cout, &cerr
	cr := finish(t, client, &cout, &cerr, client.Run())
	r := s.wait(t)
	if cr.code != 0 || cr.sum.Bytes != size {
		t.Errorf("client: %v", cr)
	}
	if r.code != 0 || r.sum.Bytes != size || r.sum.Validation != "passed" {
		t.Errorf("server: %v", r)
	}
	checkRestored(t, topo, before)
}

func TestClientToSocat(t *testing.T) {
	topo := selftest.Require(t)
	for _, tc := range []struct {
		name  string
		data  []byte
		extra []string
	}{
		{"hello", []byte("hello\nworld"), nil},
		{"chunks", []byte("hello\nworld"), []string{"-z", "3"}},
		{"4MiB", bytes.Repeat([]byte("0123456789abcdef\n"), 4<<20/17), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := port()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			ln := selftest.PeerCommand(ctx, "socat", "-u", "TCP-LISTEN:"+p+",bind="+topo.PeerAddr4.String()+",reuseaddr", "STDOUT")
			var got, lerr bytes.Buffer
			ln.Stdout, ln.Stderr = &got, &lerr
			if err := ln.Start(); err != nil {
				t.Fatal(err)
			}
			waitPeerListening(t, p)
			cmd := exec.Command(ncdevmemBin, append([]string{"-f", topo.IfName, "-s", topo.PeerAddr4.String(), "-p", p, "--json"}, tc.extra...)...)
			cmd.Stdin = bytes.NewReader(tc.data)
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			r := finish(t, cmd, &out, &errb, cmd.Run())
			if r.code != 0 {
				ln.Process.Kill() // no connection will come
			}
			if err := ln.Wait(); err != nil && r.code == 0 {
				t.Errorf("socat: %v: %s", err, lerr.String())
			}
			if r.code != 0 {
				t.Fatalf("client: %v", r)
			}
			if !bytes.Equal(got.Bytes(), tc.data) {
				t.Errorf("socat received %d bytes, want %d (equal: false)", got.Len(), len(tc.data))
			}
		})
	}
}

// waitPeerListening waits until something listens on TCP port in the peer
// netns, reading the peer's /proc/net/tcp from a thread inside it (a probe
// connection would be taken as the transfer).
func waitPeerListening(t *testing.T, port string) {
	t.Helper()
	n, _ := strconv.Atoi(port)
	want := fmt.Sprintf(":%04X", n)
	for range 600 {
		var found bool
		err := selftest.InPeer(func() error {
			b, err := os.ReadFile("/proc/thread-self/net/tcp")
			for _, line := range strings.Split(string(b), "\n") {
				fields := strings.Fields(line)
				if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" {
					found = true
				}
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if found {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on port %s in the peer netns", port)
}

// setKnob sets a netdevsim devmem test knob for the rest of the test.
func setKnob(t *testing.T, name, value string) {
	t.Helper()
	old, err := selftest.NsimKnob(name)
	if err != nil {
		t.Skipf("netdevsim knob %s: %v", name, err)
	}
	if err := selftest.SetNsimKnob(name, value); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { selftest.SetNsimKnob(name, old) })
}

func TestFailOnLinear(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	t.Run("small payloads split", func(t *testing.T) {
		// check_rx_hds: small writes with nodelay, all still split.
		pr, pw := io.Pipe()
		total := 0
		go func() {
			// One write per size, so socat (nodelay) sends small
			// segments.
			for size := 1; size <= 8192; size *= 2 {
				pw.Write(bytes.Repeat([]byte{'x'}, size))
				total += size
				time.Sleep(10 * time.Millisecond)
			}
			pw.Close()
		}()
		r := receiveFromSocat(t, topo, ncdevmemBin, pr, []string{"nodelay"}, "-L", "--json")
		if r.code != 0 || r.sum.LinearBytes != 0 || r.sum.Bytes != uint64(total) {
			t.Fatalf("want exit 0, %d bytes, none linear; got %v", total, r)
		}
	})
	t.Run("linear data fails", func(t *testing.T) {
		setKnob(t, "devmem_linear_bytes", "100")
		r := receiveFromSocat(t, topo, ncdevmemBin, newPattern(7, 1<<20), nil, "-L", "--json")
		if r.code != 1 || !strings.Contains(r.sum.Error, "fail-on-linear") {
			t.Fatalf("want exit 1 on linear data; got %v", r)
		}
	})
	t.Run("linear data validates without -L", func(t *testing.T) {
		setKnob(t, "devmem_linear_bytes", "100")
		r := receiveFromPeer(t, topo, ncdevmemBin, newPattern(7, 1<<20), "-v", "7", "--json")
		if r.code != 0 || r.sum.LinearBytes == 0 || r.sum.Validation != "passed" {
			t.Fatalf("want exit 0 with linear bytes validated; got %v", r)
		}
	})
	checkRestored(t, topo, before)
}

func TestReadableDataIsFlowSteeringError(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	setKnob(t, "devmem_readable_every", "3")
	r := receiveFromSocat(t, topo, ncdevmemBin, newPattern(7, 1<<20), nil, "-v", "7", "--json")
	if r.code != 1 || !strings.Contains(r.sum.Error, "flow steering error") {
		t.Fatalf("want exit 1 with a flow steering error; got %v", r)
	}
	checkRestored(t, topo, before)
}

func TestProbe(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	cmd := exec.Command(ncdevmemBin, "-f", topo.IfName)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	r := finish(t, cmd, &out, &errb, cmd.Run())
	if r.code != 0 || strings.Count(r.stderr, "PASS: ") != 4 || strings.Contains(r.stderr, "FAIL") {
		t.Fatalf("want 4 PASS lines and exit 0; got %v", r)
	}
	checkRestored(t, topo, before)
}

func TestSignalsRestore(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		for _, during := range []string{"accept", "transfer"} {
			t.Run(sig.String()+" during "+during, func(t *testing.T) {
				p := port()
				s := startServer(t, ncdevmemBin, serverArgs(topo, p, "-v", "7", "--json")...)
				waitListening(t, s, p)
				if during == "transfer" {
					pr, pw := io.Pipe()
					go peerSend(t, pr, topo.Addr4.String(), p, "sourceport="+p)
					defer pw.Close()
					// Some data, then the sender stalls with the
					// connection open.
					io.CopyN(pw, newPattern(7, 1<<20), 1<<20)
				}
				s.cmd.Process.Signal(sig)
				r := s.wait(t)
				if r.code != 1 || !strings.Contains(r.sum.Error, "interrupted") {
					t.Errorf("want exit 1, interrupted; got %v", r)
				}
				checkRestored(t, topo, before)
			})
		}
	}
}

func TestSetupErrorsExit2(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	run := func(t *testing.T, name string, args ...string) result {
		cmd := exec.Command(name, args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		return finish(t, cmd, &out, &errb, cmd.Run())
	}
	expect := func(t *testing.T, r result, cause string) {
		t.Helper()
		if r.code != 2 || !strings.Contains(r.stderr, cause) || strings.Contains(r.stderr, "panic") {
			t.Errorf("want exit 2 mentioning %q; got %v", cause, r)
		}
	}
	t.Run("bad flag", func(t *testing.T) {
		expect(t, run(t, ncdevmemBin, "-f", topo.IfName, "--nope"), "unknown option --nope")
	})
	t.Run("unknown interface", func(t *testing.T) {
		expect(t, run(t, ncdevmemBin, "-l", "-f", "nosuch0", "-s", topo.Addr4.String(), "-p", port()), "nosuch0")
	})
	t.Run("port in use", func(t *testing.T) {
		p := port()
		ln, err := net.Listen("tcp", net.JoinHostPort(topo.Addr4.String(), p))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		expect(t, run(t, ncdevmemBin, serverArgs(topo, p)...), "address already in use")
	})
	t.Run("no /dev/udmabuf", func(t *testing.T) {
		// A private mount namespace with an empty /dev: the binary
		// really finds no /dev/udmabuf.
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("no unshare(1)")
		}
		script := `mount -t tmpfs none /dev && exec "$@"`
		expect(t, run(t, "unshare", append([]string{"-m", "sh", "-c", script, "sh", ncdevmemBin}, serverArgs(topo, port())...)...), "/dev/udmabuf")
	})
	checkRestored(t, topo, before)
}

// The kernel's C ncdevmem and ours give the same verdicts for the same
// command lines.
func TestSameVerdictsAsC(t *testing.T) {
	topo := selftest.Require(t)
	if topo.CNcdevmem == "" {
		t.Skip("the kernel build made no C ncdevmem (DEVMEM_C_NCDEVMEM)")
	}
	verdict := func(code int) string {
		if code == 0 {
			return "ok"
		}
		return "fail"
	}
	cases := []struct {
		name    string
		corrupt bool
		knob    string
	}{
		{"valid", false, ""},
		{"corrupt", true, ""},
		{"readable", false, "devmem_readable_every"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.knob != "" {
				setKnob(t, tc.knob, "3")
			}
			var verdicts []string
			for _, bin := range []string{topo.CNcdevmem, ncdevmemBin} {
				pr := newPattern(7, 1<<20)
				if tc.corrupt {
					pr.corruptAt = 5000
				}
				r := receiveFromSocat(t, topo, bin, pr, nil, "-v", "7")
				verdicts = append(verdicts, verdict(r.code))
				t.Logf("%s: exit %d", filepath.Base(bin), r.code)
			}
			if verdicts[0] != verdicts[1] {
				t.Errorf("C ncdevmem: %s, ours: %s", verdicts[0], verdicts[1])
			}
		})
	}
	t.Run("probe", func(t *testing.T) {
		var codes []int
		for _, bin := range []string{topo.CNcdevmem, ncdevmemBin} {
			cmd := exec.Command(bin, "-f", topo.IfName)
			out, _ := cmd.CombinedOutput()
			codes = append(codes, cmd.ProcessState.ExitCode())
			if cmd.ProcessState.ExitCode() != 0 {
				sc := bufio.NewScanner(bytes.NewReader(out))
				for sc.Scan() {
					t.Logf("%s: %s", filepath.Base(bin), sc.Text())
				}
			}
		}
		if verdict(codes[0]) != verdict(codes[1]) {
			t.Errorf("probe: C ncdevmem exit %d, ours %d", codes[0], codes[1])
		}
	})
}

// sendFromPeer streams r from the peer netns to the server's port, from the
// same source port (the 5-tuple rule of -c), in 64 KiB blocks.
func sendFromPeer(t *testing.T, topo *selftest.Topology, p string, r io.Reader) {
	t.Helper()
	pn, _ := strconv.Atoi(p)
	var c net.Conn
	err := selftest.InPeer(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: topo.PeerAddr4.AsSlice(), Port: pn}}
		var err error
		c, err = d.Dial("tcp4", net.JoinHostPort(topo.Addr4.String(), p))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyBuffer(struct{ io.Writer }{c}, r, make([]byte, 64<<10)); err != nil {
		t.Logf("sender: %v", err)
	}
	c.Close()
}

// TestTwoServersAtOnce runs two self-configuring servers on different
// queues of one NIC. The first finishes and undoes its setup while the
// second still waits for its client: the second must keep its flow rule,
// RSS and header split, validate its stream, and the NIC must end as it
// began. (With a snapshot restore, the first's exit deleted the second's
// rule and reset RSS, and the second's data arrived in host memory.)
func TestTwoServersAtOnce(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	const size = 4 << 20
	for _, order := range []string{"queue 3 first", "queue 2 first"} {
		t.Run(order, func(t *testing.T) {
			p3, p2 := port(), port()
			s3 := startServer(t, ncdevmemBin, serverArgs(topo, p3, "-t", "3", "-q", "1", "-v", "7", "--json")...)
			waitListening(t, s3, p3)
			s2 := startServer(t, ncdevmemBin, serverArgs(topo, p2, "-t", "2", "-q", "1", "-v", "7", "--json")...)
			waitListening(t, s2, p2)
			first, second := s3, s2
			pf, ps := p3, p2
			if order == "queue 2 first" {
				first, second, pf, ps = s2, s3, p2, p3
			}
			sendFromPeer(t, topo, pf, newPattern(7, size))
			if r := first.wait(t); r.code != 0 || r.sum.Bytes != size || r.sum.Validation != "passed" {
				t.Errorf("first server: %v", r)
			}
			sendFromPeer(t, topo, ps, newPattern(7, size))
			if r := second.wait(t); r.code != 0 || r.sum.Bytes != size || r.sum.Validation != "passed" {
				t.Errorf("second server, after the first one's exit: %v", r)
			}
			checkRestored(t, topo, before)
		})
	}
}

// TestKilledServerUndone SIGKILLs a configured server (no undo runs) and
// checks that its changes are undone by the next run, and by --restore.
func TestKilledServerUndone(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	kill := func(t *testing.T) {
		t.Helper()
		p := port()
		s := startServer(t, ncdevmemBin, serverArgs(topo, p, "-v", "7", "--json")...)
		waitListening(t, s, p)
		s.cmd.Process.Kill()
		<-s.done
		if nicState(t, topo).Equal(before) {
			t.Fatal("the server changed nothing; nothing to undo")
		}
	}
	t.Run("by --restore", func(t *testing.T) {
		kill(t)
		// The second run undoes the first's leftovers before its own
		// setup, so one journal is left for --restore.
		kill(t)
		out, err := exec.Command(ncdevmemBin, "--restore").CombinedOutput()
		if err != nil {
			t.Fatalf("--restore: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "of 1 crashed run") {
			t.Errorf("--restore output %q, want 1 run restored", out)
		}
		checkRestored(t, topo, before)
	})
	t.Run("by the next run", func(t *testing.T) {
		kill(t)
		r := receiveFromPeer(t, topo, ncdevmemBin, newPattern(7, 1<<20), "-v", "7", "--json")
		if r.code != 0 || r.sum.Validation != "passed" {
			t.Errorf("next run: %v", r)
		}
		checkRestored(t, topo, before)
	})
}

// TestNoConfigTouchesNothing: with -t, -q and -n (the kernel's netkit
// invocation) ncdevmem reads no channels and changes nothing on the NIC;
// the test does the header split it needs, as the netkit tests do.
func TestNoConfigTouchesNothing(t *testing.T) {
	topo := selftest.Require(t)
	before := nicState(t, topo)
	n, err := nic.Open(topo.IfName)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	setup, err := nic.NewSetup(n, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := setup.EnableHeaderSplit(); err != nil {
		t.Fatal(err)
	}
	configured := nicState(t, topo)
	p := port()
	s := startServer(t, ncdevmemBin, "-l", "-f", topo.IfName, "-s", topo.Addr4.String(), "-p", p, "-t", "1", "-q", "1", "-n", "--json")
	waitListening(t, s, p)
	if now := nicState(t, topo); !now.Equal(configured) {
		t.Errorf("-n changed the NIC:\nbefore %v\nafter  %v", configured, now)
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	r := s.wait(t)
	if strings.Contains(r.stderr, "reading channels") || !strings.Contains(r.stderr, "channels not read") {
		t.Errorf("channels read with -t/-q given: %v", r)
	}
	if now := nicState(t, topo); !now.Equal(configured) {
		t.Errorf("-n changed the NIC on exit:\nbefore %v\nafter  %v", configured, now)
	}
	if err := setup.Undo(); err != nil {
		t.Fatal(err)
	}
	checkRestored(t, topo, before)
}
