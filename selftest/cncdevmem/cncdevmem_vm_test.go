//go:build vmtest

package cncdevmem_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devmem-go/devmem/selftest"
)

// These tests follow the kernel's devmem.py (tools/testing/selftests/
// drivers/net/hw/devmem_lib.py): ncdevmem runs in the init netns on the
// simulated NIC, socat is the remote end in the peer netns.

func require(t *testing.T) *selftest.Topology {
	t.Helper()
	topo := selftest.Require(t)
	if topo.CNcdevmem == "" {
		t.Skip("the kernel build made no C ncdevmem (DEVMEM_C_NCDEVMEM is empty); rebuild with selftest/kernel/build.sh")
	}
	if _, err := exec.LookPath("ethtool"); err != nil {
		t.Skip("ncdevmem runs the ethtool binary for RSS and flow rules; install ethtool (apt-get install ethtool)")
	}
	return topo
}

var nextPort = 7000

func port() int { nextPort++; return nextPort }

// waitListen waits until something listens on TCP port p in the init netns.
func waitListen(t *testing.T, p int) {
	t.Helper()
	hex := fmt.Sprintf(":%04X ", p)
	for range 300 {
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, _ := os.ReadFile(f)
			for _, l := range strings.Split(string(b), "\n") {
				fields := strings.Fields(l)
				if len(fields) > 3 && strings.Contains(fields[1]+" ", hex) && fields[3] == "0A" {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listens on port %d", p)
}

// pattern7 is what ncdevmem -v 7 expects: bytes 1..6 then '\n', repeating.
const pattern7 = `yes "$(printf '\001\002\003\004\005\006')"`

// runRX starts ncdevmem as a server with args, feeds it from the peer
// through the sh pipeline sender (which gets PORT, ADDR and PEER in its
// environment), and returns ncdevmem's output and error. A sender failure
// fails the test unless ncdevmem failed too (it resets the connection when
// it gives up).
func runRX(t *testing.T, topo *selftest.Topology, args []string, sender string) (string, error) {
	t.Helper()
	p := port()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	full := append([]string{"-l", "-f", topo.IfName, "-s", topo.Addr4.String(), "-p", strconv.Itoa(p)}, args...)
	srv := exec.CommandContext(ctx, topo.CNcdevmem, full...)
	var out bytes.Buffer
	srv.Stdout, srv.Stderr = &out, &out
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitListen(t, p)
	snd := selftest.PeerCommand(ctx, "sh", "-c", sender)
	snd.Env = append(os.Environ(), "PORT="+strconv.Itoa(p), "ADDR="+topo.Addr4.String(), "PEER="+topo.PeerAddr4.String())
	sndOut, sndErr := snd.CombinedOutput()
	err := srv.Wait()
	if sndErr != nil && err == nil {
		t.Errorf("sender: %v: %s", sndErr, sndOut)
	}
	t.Logf("ncdevmem %s: %v\n%s", strings.Join(full, " "), err, tail(out.String(), 15))
	return out.String(), err
}

func tail(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// TestCNcdevmemRX is devmem.py's check_rx: 1 KiB of the pattern, 5-tuple
// steering, validation.
func TestCNcdevmemRX(t *testing.T) {
	topo := require(t)
	_, err := runRX(t, topo, []string{"-c", topo.PeerAddr4.String(), "-v", "7"},
		pattern7+` | head -c 1K | socat -u - TCP4:$ADDR:$PORT,bind=$PEER:$PORT`)
	if err != nil {
		t.Fatalf("ncdevmem -l -v 7 failed: %v", err)
	}
}

// TestCNcdevmemRXLarge validates 64 MiB with the 3-tuple rule.
func TestCNcdevmemRXLarge(t *testing.T) {
	topo := require(t)
	start := time.Now()
	_, err := runRX(t, topo, []string{"-v", "7"}, pattern7+` | head -c 64M | socat -u - TCP4:$ADDR:$PORT`)
	if err != nil {
		t.Fatalf("ncdevmem -l -v 7 of 64 MiB failed: %v", err)
	}
	t.Logf("64 MiB validated in %v", time.Since(start).Round(time.Millisecond))
}

// TestCNcdevmemRXHDS is check_rx_hds: payloads of many sizes, one segment
// per write, and -L (fail on any linear data) must pass.
func TestCNcdevmemRXHDS(t *testing.T) {
	topo := require(t)
	for _, size := range []int{1, 7, 100, 1448, 4096, 8192} {
		_, err := runRX(t, topo, []string{"-L"},
			fmt.Sprintf(`head -c %d /dev/zero | tr '\0' 'x' | socat -b %d -u - TCP4:$ADDR:$PORT,nodelay`, size*3, size))
		if err != nil {
			t.Errorf("ncdevmem -L with %d-byte segments: %v", size, err)
		}
	}
}

// TestCNcdevmemRXLinearFails makes the NIC leave payload linear: -L must
// fail.
func TestCNcdevmemRXLinearFails(t *testing.T) {
	topo := require(t)
	old, err := selftest.NsimKnob("devmem_linear_bytes")
	if err != nil {
		t.Fatal(err)
	}
	if err := selftest.SetNsimKnob("devmem_linear_bytes", "100"); err != nil {
		t.Fatal(err)
	}
	defer selftest.SetNsimKnob("devmem_linear_bytes", old)
	_, err = runRX(t, topo, []string{"-L"}, pattern7+` | head -c 64K | socat -u - TCP4:$ADDR:$PORT`)
	if err == nil {
		t.Fatal("ncdevmem -L passed although the NIC left 100 bytes of every packet linear")
	}
}

// runTX is check_tx / check_tx_chunks: ncdevmem sends stdin from a TX
// udmabuf to a socat listener in the peer.
func runTX(t *testing.T, input string, args ...string) {
	topo := require(t)
	p := port()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ln := selftest.PeerCommand(ctx, "socat", "-U", "-", "TCP4-LISTEN:"+strconv.Itoa(p))
	var got bytes.Buffer
	ln.Stdout = &got
	if err := ln.Start(); err != nil {
		t.Fatal(err)
	}
	// The listener is in the peer netns: poll the peer's /proc/net/tcp.
	for i := 0; ; i++ {
		b, _ := selftest.PeerCommand(ctx, "cat", "/proc/net/tcp").Output()
		if strings.Contains(string(b), fmt.Sprintf(":%04X 00000000:0000 0A", p)) {
			break
		}
		if i > 200 {
			t.Fatal("socat listener did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	full := append([]string{"-f", topo.IfName, "-s", topo.PeerAddr4.String(), "-p", strconv.Itoa(p)}, args...)
	c := exec.CommandContext(ctx, topo.CNcdevmem, full...)
	c.Stdin = strings.NewReader(input)
	out, err := c.CombinedOutput()
	if err != nil {
		t.Fatalf("ncdevmem %s: %v\n%s", strings.Join(full, " "), err, tail(string(out), 15))
	}
	if err := ln.Wait(); err != nil {
		t.Fatalf("socat listener: %v", err)
	}
	if got.String() != input {
		t.Fatalf("peer received %q, want %q", got.String(), input)
	}
}

func TestCNcdevmemTX(t *testing.T) { runTX(t, "hello\nworld\n") }

func TestCNcdevmemTXChunks(t *testing.T) { runTX(t, "hello\nworld\n", "-z", "3") }

// TestCNcdevmemProbe is ncdevmem's configuration test mode (no -s/-c).
func TestCNcdevmemProbe(t *testing.T) {
	topo := require(t)
	out, err := exec.Command(topo.CNcdevmem, "-f", topo.IfName).CombinedOutput()
	if err != nil {
		t.Fatalf("ncdevmem -f %s: %v\n%s", topo.IfName, err, tail(string(out), 20))
	}
}
