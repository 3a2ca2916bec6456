//go:build linux

// Command bench runs, inside the devmem test VM, the kernel's C ncdevmem and
// our cmd/ncdevmem as the receiver of the same transfer, alternating, and
// prints a table: throughput, receiver CPU time, recvmsg and
// SO_DEVMEM_DONTNEED calls per GiB, DONTNEED calls per frag, and the ratio
// ours/theirs of each. selftest/bench/run.sh builds everything and boots the
// VM; see docs/PERFORMANCE.md.
//
// Both receivers get the same flags (-l -f IF -s ADDR -c PEER -p PORT, plus
// -v 7 with validation on), so each configures the NIC its own way (RSS to
// queue 0, an ntuple rule for the 5-tuple, header split, a udmabuf bound to
// one queue). The sender is the same for both: a Go goroutine writing a
// pre-built -v 7 pattern buffer over a socket made in the peer netns, then
// waiting for the receiver to close. Throughput is payload bytes over the
// time from connect to that close. CPU time is the receiver's user+sys from
// wait4 (its own and its reaped children's, e.g. ethtool). Counts come from
// the programs: ours from its summary, the C tool's from countsys.so
// (LD_PRELOAD), which wraps recvmsg and setsockopt.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/devmem-go/devmem/selftest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	ours, theirs, shim string
	size               int64
	runs               int
	modes              []string
	port               int
	keepLogs           bool
	perf               string // perf binary: profile each receiver instead of timing it
}

func run() error {
	var c config
	var modes string
	flag.StringVar(&c.ours, "ours", "bin/ncdevmem", "our ncdevmem binary")
	flag.StringVar(&c.theirs, "theirs", os.Getenv("DEVMEM_C_NCDEVMEM"), "the kernel's C ncdevmem binary")
	flag.StringVar(&c.shim, "shim", "", "countsys.so, the LD_PRELOAD counter for the C tool")
	flag.Int64Var(&c.size, "size", 512<<20, "bytes per transfer")
	flag.IntVar(&c.runs, "runs", 3, "runs per tool and mode")
	flag.StringVar(&modes, "modes", "on,off", "validation modes: on (-v 7), off (payload written to stdout, which is /dev/null)")
	flag.IntVar(&c.port, "port", 5300, "first TCP port; each run takes the next")
	flag.BoolVar(&c.keepLogs, "v", false, "print each receiver's stderr tail")
	flag.StringVar(&c.perf, "perf", "", "run each receiver under this perf binary (perf record -e cpu-clock) and print the top of its profile; the timings then include perf")
	flag.Parse()
	c.modes = strings.Split(modes, ",")
	topo, err := selftest.Env()
	if err != nil {
		return err
	}
	if c.theirs == "" {
		c.theirs = topo.CNcdevmem
	}
	if c.theirs == "" || c.shim == "" {
		return errors.New("-theirs and -shim are required (run.sh passes them)")
	}
	printMachine()
	fmt.Printf("transfer %d MiB per run, %d runs per tool and mode, modes %s, alternating C/ours\n\n",
		c.size>>20, c.runs, strings.Join(c.modes, ","))

	results := map[string][]result{}
	port := c.port
	for r := 0; r < c.runs; r++ {
		for _, mode := range c.modes {
			for _, tool := range []string{"C", "ours"} {
				res, err := transfer(&c, topo, tool, mode, port)
				port++
				if err != nil {
					return fmt.Errorf("run %d, %s, validation %s: %w", r+1, tool, mode, err)
				}
				fmt.Printf("run %d  %-4s  validation %-3s  %7.2f MB/s  cpu %6.2f s  recvmsg %7d  dontneed %7d  frags %7d\n",
					r+1, tool, mode, res.mbps(), res.cpu.Seconds(), res.recvmsg, res.dontneed, res.frags)
				results[mode+"/"+tool] = append(results[mode+"/"+tool], res)
			}
		}
	}
	fmt.Println()
	printTable(c.modes, results)
	return nil
}

// result is one receiver run.
type result struct {
	bytes                    int64
	wall                     time.Duration // connect to the receiver's close
	cpu                      time.Duration // user+sys
	recvmsg, dontneed, frags uint64
}

func (r result) mbps() float64 { return float64(r.bytes) / 1e6 / r.wall.Seconds() }

func perGiB(n uint64, bytes int64) float64 { return float64(n) / (float64(bytes) / (1 << 30)) }

// transfer runs one receiver and the sender against it.
func transfer(c *config, topo *selftest.Topology, tool, mode string, port int) (result, error) {
	p := strconv.Itoa(port)
	args := []string{"-l", "-f", topo.IfName, "-s", topo.Addr4.String(), "-c", topo.PeerAddr4.String(), "-p", p}
	if mode == "on" {
		args = append(args, "-v", "7")
	}
	dir, err := os.MkdirTemp("", "bench-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	countsFile := filepath.Join(dir, "counts")
	bin := c.ours
	env := os.Environ()
	if tool == "C" {
		bin = c.theirs
		env = append(env, "LD_PRELOAD="+c.shim, "COUNTSYS_OUT="+countsFile)
	} else if mode == "on" {
		args = append(args, "--json") // the summary on stdout
	}
	perfData := filepath.Join(dir, "perf.data")
	if c.perf != "" {
		args = append([]string{"record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-o", perfData, "--", bin}, args...)
		bin = c.perf
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	// The C tool writes a line per recvmsg and per frag to stderr
	// (unbuffered): part of its cost, so it goes to a file, not a pipe we
	// would have to drain. Payload "printed" without validation goes to
	// /dev/null for both.
	stderr, err := os.Create(filepath.Join(dir, "stderr"))
	if err != nil {
		return result{}, err
	}
	defer stderr.Close()
	var stdout bytes.Buffer
	cmd.Stderr = stderr
	if tool == "ours" && mode == "on" {
		cmd.Stdout = &stdout
	} else {
		devnull, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return result{}, err
		}
		defer devnull.Close()
		cmd.Stdout = devnull
	}
	if err := cmd.Start(); err != nil {
		return result{}, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fail := func(err error) (result, error) {
		cmd.Process.Kill()
		<-exited
		return result{}, fmt.Errorf("%w\n%s", err, tail(stderr.Name(), 15))
	}
	if err := waitListening(port, exited); err != nil {
		return fail(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	wall, err := send(ctx, topo, port, c.size)
	if err != nil {
		return fail(fmt.Errorf("sender: %w", err))
	}
	if err := <-exited; err != nil {
		return result{}, fmt.Errorf("%s ncdevmem: %v\n%s", tool, err, tail(stderr.Name(), 15))
	}
	if c.keepLogs {
		fmt.Print(tail(stderr.Name(), 5))
	}
	if c.perf != "" {
		printProfile(c.perf, perfData, tool, mode)
	}
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	res := result{
		bytes: c.size,
		wall:  wall,
		cpu:   time.Duration(ru.Utime.Nano() + ru.Stime.Nano()),
	}
	if tool == "C" {
		err = readShimCounts(countsFile, &res)
	} else if mode == "on" {
		err = readJSONSummary(stdout.Bytes(), &res)
	} else {
		err = readTextSummary(stderr.Name(), &res)
	}
	return res, err
}

// patternBlock is the ncdevmem -v 7 stream (1..6 then '\n') in a block whose
// length is a multiple of 7, so consecutive writes continue the pattern.
var patternBlock = bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, '\n'}, 1<<16)

// send streams size bytes from the peer netns to the receiver, from source
// port port (the receiver's -c 5-tuple rule names it), half-closes and waits
// for the receiver to close: that wait is the end of the transfer.
func send(ctx context.Context, topo *selftest.Topology, port int, size int64) (time.Duration, error) {
	var conn *net.TCPConn
	err := selftest.InPeer(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: topo.PeerAddr4.AsSlice(), Port: port}}
		c, err := d.DialContext(ctx, "tcp4", net.JoinHostPort(topo.Addr4.String(), strconv.Itoa(port)))
		if err != nil {
			return err
		}
		conn = c.(*net.TCPConn)
		return nil
	})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	for left := size; left > 0; {
		n, err := conn.Write(patternBlock[:min(left, int64(len(patternBlock)))])
		left -= int64(n)
		if err != nil {
			return 0, err
		}
	}
	if err := conn.CloseWrite(); err != nil {
		return 0, err
	}
	// The receiver sends nothing; Read returns at its close (EOF or RST).
	io.Copy(io.Discard, conn)
	return time.Since(start), nil
}

// printProfile prints the top of a receiver's profile: by symbol, self time,
// kernel and user together.
func printProfile(perf, data, tool, mode string) {
	out, err := exec.Command(perf, "report", "-i", data, "--stdio", "--no-children", "-g", "none",
		"--sort", "dso,sym", "--percent-limit", "1").CombinedOutput()
	fmt.Printf("--- profile: %s, validation %s (perf cpu-clock, self time)\n", tool, mode)
	lines := strings.Split(string(out), "\n")
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
			continue
		}
		fmt.Println(l)
		if n++; n == 25 {
			break
		}
	}
	if err != nil {
		fmt.Printf("perf report: %v\n", err)
	}
}

// readShimCounts reads countsys.so's "recvmsg=N frags=N dontneed=N tokens=N".
func readShimCounts(path string, res *result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("countsys output: %w", err)
	}
	var tokens uint64
	if _, err := fmt.Sscanf(string(b), "recvmsg=%d frags=%d dontneed=%d tokens=%d",
		&res.recvmsg, &res.frags, &res.dontneed, &tokens); err != nil {
		return fmt.Errorf("countsys output %q: %w", b, err)
	}
	return nil
}

func readJSONSummary(b []byte, res *result) error {
	var s struct {
		OK       bool   `json:"ok"`
		Bytes    int64  `json:"bytes"`
		Recvmsg  uint64 `json:"recvmsg_calls"`
		Frags    uint64 `json:"frags"`
		Dontneed uint64 `json:"dontneed_calls"`
		Valid    string `json:"validation"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("summary %q: %w", b, err)
	}
	if !s.OK || s.Valid != "passed" || s.Bytes != res.bytes {
		return fmt.Errorf("ours: %s", b)
	}
	res.recvmsg, res.frags, res.dontneed = s.Recvmsg, s.Frags, s.Dontneed
	return nil
}

// The text summary (cmd/ncdevmem/summary.go writeText), which ours prints on
// stderr when stdout carries the payload.
var (
	receivedLine = regexp.MustCompile(`received (\d+) bytes .*: (\d+) recvmsg calls, (\d+) frags`)
	releasedLine = regexp.MustCompile(`tokens released \d+ in (\d+) SO_DEVMEM_DONTNEED calls`)
)

func readTextSummary(path string, res *result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	m1, m2 := receivedLine.FindSubmatch(b), releasedLine.FindSubmatch(b)
	if m1 == nil || m2 == nil {
		return fmt.Errorf("no summary in ours' stderr:\n%s", tail(path, 10))
	}
	if n, _ := strconv.ParseInt(string(m1[1]), 10, 64); n != res.bytes {
		return fmt.Errorf("ours received %d bytes of %d", n, res.bytes)
	}
	res.recvmsg, _ = strconv.ParseUint(string(m1[2]), 10, 64)
	res.frags, _ = strconv.ParseUint(string(m1[3]), 10, 64)
	res.dontneed, _ = strconv.ParseUint(string(m2[1]), 10, 64)
	return nil
}

// printTable prints, per mode, each tool's median over its runs and the
// ratio ours/theirs.
func printTable(modes []string, results map[string][]result) {
	fmt.Println("| validation | receiver | runs | throughput MB/s | CPU s (user+sys) | CPU s/GiB | recvmsg/GiB | DONTNEED/GiB | DONTNEED/frag |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, mode := range modes {
		type row struct{ mbps, cpu, cpuGiB, recv, dn, dnFrag float64 }
		rows := map[string]row{}
		for _, tool := range []string{"C", "ours"} {
			rs := results[mode+"/"+tool]
			r := row{
				mbps:   median(rs, func(r result) float64 { return r.mbps() }),
				cpu:    median(rs, func(r result) float64 { return r.cpu.Seconds() }),
				cpuGiB: median(rs, func(r result) float64 { return r.cpu.Seconds() / (float64(r.bytes) / (1 << 30)) }),
				recv:   median(rs, func(r result) float64 { return perGiB(r.recvmsg, r.bytes) }),
				dn:     median(rs, func(r result) float64 { return perGiB(r.dontneed, r.bytes) }),
				dnFrag: median(rs, func(r result) float64 { return float64(r.dontneed) / float64(max(r.frags, 1)) }),
			}
			rows[tool] = r
			name := map[string]string{"C": "kernel C ncdevmem", "ours": "our cmd/ncdevmem"}[tool]
			fmt.Printf("| %s | %s | %d | %.2f | %.2f | %.2f | %.0f | %.0f | %.4f |\n",
				mode, name, len(rs), r.mbps, r.cpu, r.cpuGiB, r.recv, r.dn, r.dnFrag)
		}
		c, o := rows["C"], rows["ours"]
		ratio := func(a, b float64) string {
			if b == 0 {
				return "n/a"
			}
			return fmt.Sprintf("%.3f", a/b)
		}
		fmt.Printf("| %s | **ours/theirs** | | %s | %s | %s | %s | %s | %s |\n", mode,
			ratio(o.mbps, c.mbps), ratio(o.cpu, c.cpu), ratio(o.cpuGiB, c.cpuGiB),
			ratio(o.recv, c.recv), ratio(o.dn, c.dn), ratio(o.dnFrag, c.dnFrag))
	}
}

func median(rs []result, f func(result) float64) float64 {
	if len(rs) == 0 {
		return 0
	}
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// printMachine says what the numbers were measured on, from inside the VM.
func printMachine() {
	model, cpus := "unknown", 0
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			k, v, _ := strings.Cut(s.Text(), ":")
			switch strings.TrimSpace(k) {
			case "model name":
				model = strings.TrimSpace(v)
			case "processor":
				cpus++
			}
		}
		f.Close()
	}
	release, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("guest: %d CPUs (%s), kernel %s", cpus, model, release)
}

// waitListening waits for a TCP listener on port, reading /proc/net/tcp*
// (a probing connection would be taken as the transfer).
func waitListening(port int, exited <-chan error) error {
	want := fmt.Sprintf(":%04X", port)
	for range 1200 {
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(b), "\n") {
				fields := strings.Fields(line)
				if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" {
					return nil
				}
			}
		}
		select {
		case err := <-exited:
			return fmt.Errorf("receiver exited before listening: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listens on port %d", port)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n") + "\n"
}
