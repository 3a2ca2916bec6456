//go:build linux

package main

// Running one receiver against the driver's senders: the receiver is a
// separate process (its CPU time is its rusage), the senders are goroutines
// of the driver in netns peer.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devmem-go/devmem/selftest"
)

// A job is one transfer: a receiver, its flows, what is sent.
type job struct {
	recv     string // tcp, fastrx, gorx, C, ours
	validate bool
	flows    int   // connections, bulk and request/response together
	rrFlows  int   // the last rrFlows flows are request/response
	queues   int   // bound queues (fastrx/gorx)
	size     int64 // bulk bytes, over all bulk flows
	rrTime   time.Duration
	req      int
	resp     int
}

// result is one job's measurement.
type result struct {
	bytes    int64         // every flow's payload
	bulk     int64         // the bulk flows'
	wall     time.Duration // first connect to the last close
	cpu      time.Duration // receiver's user+sys: of the receive loop (fastrx, gorx, tcp) or the whole process (the tools)
	cpuProc  time.Duration // the whole process's (rusage)
	cpuSys   time.Duration // of cpu, in the kernel (-1: not reported)
	cswVol   int64         // the receive loop's voluntary context switches (-1: not reported)
	cswInvol int64         // and involuntary ones
	vmCPU    time.Duration // every CPU of the VM busy (/proc/stat), sender and softirqs included
	ncpu     int
	vmCPUMax time.Duration // the busiest CPU's busy time
	recvmsg  uint64
	dontneed uint64
	frags    uint64
	maxOut   int64 // -1: not known
	allocs   int64 // steady-state allocations (gorx), -1: not known
	steadyRc int64 // recvmsg calls in that window
	// request/response
	rrTx       int
	rrP50      time.Duration
	rrP99      time.Duration
	rrDuration time.Duration
}

func (r result) mbps() float64 { return float64(r.bytes) / 1e6 / r.wall.Seconds() }
func (r result) gib() float64  { return float64(r.bytes) / (1 << 30) }

// runJob runs a fastrx/gorx/tcp job (the tools' jobs are transferTool).
func runJob(c *config, topo *selftest.Topology, ns *nicSetup, j job, port int) (result, error) {
	var st *steered
	var err error
	// fastrx gets the driver's binding; gorx binds the same udmabuf to the
	// same queues itself (the library's Receiver takes the *Binding).
	st, err = ns.steer(max(1, j.queues), j.flows, port, j.recv == "fastrx")
	if err != nil {
		return result{}, err
	}
	defer ns.undo(st)

	args := []string{"-a", topo.Addr4.String(), "-p", strconv.Itoa(port), "-n", strconv.Itoa(j.flows),
		"-P", strconv.Itoa(port)}
	if j.rrFlows > 0 {
		args = append(args, "-r", strconv.Itoa(j.rrFlows), "-q", strconv.Itoa(j.req), "-R", strconv.Itoa(j.resp))
	}
	var bin string
	var env []string
	var extra []*os.File
	// A library loop may name another build (-gorx-b), gorxt@b, and its
	// ReleaseBatch, gorxt+b128.
	recv, buildB := strings.CutSuffix(j.recv, "@b")
	recv, batch, _ := strings.Cut(recv, "+b")
	if batch != "" && strings.HasPrefix(recv, "gorx") {
		args = append(args, "-b", batch)
	}
	switch recv {
	case "tcp":
		bin = c.fastrx
		mode := "tcp"
		if j.validate {
			mode = "tcp-touch"
			args = append(args, "-v", "7")
		}
		args = append(args, "-m", mode)
	case "fastrx", "gorx", "gorx1", "gorxt", "gorxt1":
		bin = c.fastrx
		if recv != "fastrx" {
			bin = c.gorx
			if buildB {
				if c.gorxB == "" {
					return result{}, fmt.Errorf("%s: no -gorx-b build", j.recv)
				}
				bin = c.gorxB
			}
		}
		if recv == "gorx1" || recv == "gorxt1" {
			// The same loop on one P: what the Go scheduler's
			// hand-offs between threads cost.
			env = []string{"GOMAXPROCS=1"}
		}
		if recv == "gorxt" || recv == "gorxt1" {
			// Waiting in poll(2) on the flow's thread, as fastrx
			// waits in recvmsg, instead of the runtime's poller.
			args = append(args, "-t")
		}
		buf, err := ns.dmabuf()
		if err != nil {
			return result{}, err
		}
		fd, err := unix.Dup(buf.FD())
		if err != nil {
			return result{}, err
		}
		f := os.NewFile(uintptr(fd), "dmabuf")
		defer f.Close()
		extra = []*os.File{f}
		args = append(args, "-m", "devmem", "-d", "3")
		if j.recv == "fastrx" {
			args = append(args, "-i", strconv.FormatUint(uint64(st.id()), 10))
		} else {
			qs := make([]string, len(st.queues))
			for i, q := range st.queues {
				qs[i] = strconv.Itoa(q)
			}
			args = append(args, "-I", strconv.Itoa(ns.nic.Index()), "-Q", strings.Join(qs, ","))
			if ns.pageSize != 0 {
				args = append(args, "-S", strconv.FormatUint(uint64(ns.pageSize), 10))
			}
		}
		if j.validate {
			args = append(args, "-v", "7")
		}
	default:
		return result{}, fmt.Errorf("unknown receiver %q", j.recv)
	}
	p, err := startReceiver(c, bin, args, env, extra, false)
	if err != nil {
		return result{}, err
	}
	if err := waitListening(port, p.exited); err != nil {
		return p.fail(err)
	}
	res, err := driveProfiled(c, topo, j, port)
	if err != nil {
		return p.fail(fmt.Errorf("sender: %w", err))
	}
	if err := p.waitExit(); err != nil {
		return result{}, fmt.Errorf("%s: %v\n%s", j.recv, err, tail(p.stderr.Name(), 15))
	}
	p.finish(c, &res, j)
	printGorxProfile(recv, j)
	kv, err := parseKV(p.stdout.String())
	if err != nil {
		return result{}, fmt.Errorf("%s: %w", j.recv, err)
	}
	if kv["bytes"] != res.bytes {
		return result{}, fmt.Errorf("%s received %d bytes of %d", j.recv, kv["bytes"], res.bytes)
	}
	if j.recv != "tcp" && kv["readable"] != 0 {
		return result{}, fmt.Errorf("%s: %d bytes arrived readable, not in the dma-buf (steering)", j.recv, kv["readable"])
	}
	if kv["mismatches"] != 0 {
		return result{}, fmt.Errorf("%s: %d mismatches", j.recv, kv["mismatches"])
	}
	res.recvmsg, res.dontneed, res.frags = uint64(kv["recvmsg"]), uint64(kv["dontneed"]), uint64(kv["frags"])
	res.maxOut = kv["max_outstanding"]
	// The receive loop's CPU time, without process start and setup.
	res.cpuProc = res.cpu
	res.cpu = time.Duration(kv["cpu_us"]) * time.Microsecond
	res.cpuSys = -1
	if v, ok := kv["cpu_sys_us"]; ok {
		res.cpuSys = time.Duration(v) * time.Microsecond
	}
	res.cswVol, res.cswInvol = -1, -1
	if v, ok := kv["csw_vol"]; ok {
		res.cswVol, res.cswInvol = v, kv["csw_invol"]
	}
	res.allocs, res.steadyRc = -1, 0
	if v, ok := kv["allocs_steady"]; ok && v >= 0 {
		res.allocs, res.steadyRc = v, kv["recvmsg_steady"]
	}
	if j.recv == "tcp" {
		res.maxOut = -1
	}
	return res, nil
}

// parseKV reads "k=v k=v" (the receivers' summary line); a value that is
// not a number (allocs_steady=n/a) reads as -1.
func parseKV(s string) (map[string]int64, error) {
	kv := map[string]int64{}
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			n = -1
		}
		kv[k] = n
	}
	if _, ok := kv["bytes"]; !ok {
		return nil, fmt.Errorf("no summary line in %q", s)
	}
	return kv, nil
}

// proc is a running receiver.
type proc struct {
	cmd    *exec.Cmd
	exited chan error
	stderr *os.File
	stdout *bytes.Buffer
	dir    string
	perf   string
}

// startReceiver starts bin; its stdout goes to p.stdout, or to /dev/null
// with devnull (where the tools write the payload).
func startReceiver(c *config, bin string, args, env []string, extra []*os.File, devnull bool) (*proc, error) {
	dir, err := os.MkdirTemp("", "bench-")
	if err != nil {
		return nil, err
	}
	p := &proc{dir: dir, stdout: &bytes.Buffer{}, exited: make(chan error, 1)}
	if c.perf != "" {
		p.perf = filepath.Join(dir, "perf.data")
		args = append([]string{"record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-o", p.perf, "--", bin}, args...)
		bin = c.perf
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.ExtraFiles = extra
	if p.stderr, err = os.Create(filepath.Join(dir, "stderr")); err != nil {
		return nil, err
	}
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = p.stdout
	if devnull {
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return nil, err
		}
		defer f.Close() // the child has its own copy once started
		p.cmd.Stdout = f
	}
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.exited <- p.cmd.Wait() }()
	return p, nil
}

func (p *proc) fail(err error) (result, error) {
	p.cmd.Process.Kill()
	<-p.exited
	defer p.cleanup()
	return result{}, fmt.Errorf("%w\n%s", err, tail(p.stderr.Name(), 15))
}

// waitExit waits for the receiver to exit once its flows ended; one that
// has not after receiverExitTimeout is killed.
func (p *proc) waitExit() error {
	select {
	case err := <-p.exited:
		return err
	case <-time.After(receiverExitTimeout):
		p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("killed: still running %v after its flows ended", receiverExitTimeout)
	}
}

func (p *proc) cleanup() {
	p.stderr.Close()
	os.RemoveAll(p.dir)
}

// finish takes the receiver's CPU time and, when profiling, prints its
// profile.
func (p *proc) finish(c *config, res *result, j job) {
	ru := p.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	res.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	if c.keepLogs {
		fmt.Print(tail(p.stderr.Name(), 5))
	}
	if p.perf != "" {
		printProfile(c.perf, p.perf, j.label())
	}
	p.cleanup()
}

func (j job) label() string {
	v := "off"
	if j.validate {
		v = "on"
	}
	s := fmt.Sprintf("%s, validation %s", j.recv, v)
	if j.flows > 1 || j.queues > 1 {
		s += fmt.Sprintf(", %d flows over %d queues", j.flows, j.queues)
	}
	if j.rrFlows > 0 {
		s += fmt.Sprintf(", %d request/response", j.rrFlows)
	}
	return s
}

// cpuBusy is the busy time of every CPU from /proc/stat, and of all of
// them together.
func cpuBusy() (total time.Duration, perCPU []time.Duration) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, nil
	}
	defer f.Close()
	return parseStat(f)
}

// parseStat reads the cpu lines of /proc/stat.
func parseStat(r io.Reader) (total time.Duration, perCPU []time.Duration) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 8 || !strings.HasPrefix(fields[0], "cpu") {
			continue
		}
		var busy time.Duration
		for i, v := range fields[1:] {
			if i == 3 || i == 4 { // idle, iowait
				continue
			}
			if i >= 8 { // guest, guest_nice are in user already
				break
			}
			t, _ := strconv.ParseInt(v, 10, 64)
			busy += time.Duration(t) * (time.Second / 100) // USER_HZ
		}
		if fields[0] == "cpu" {
			total = busy
		} else {
			perCPU = append(perCPU, busy)
		}
	}
	return total, perCPU
}

// busiest is the largest busy time one CPU gained between two cpuBusy
// readings: a single CPU near the wall time is what serializes a job
// whose other CPUs idle.
func busiest(before, after []time.Duration) time.Duration {
	var m time.Duration
	for i := range min(len(before), len(after)) {
		m = max(m, after[i]-before[i])
	}
	return m
}

// patternBlock is the ncdevmem -v 7 stream (1..6 then '\n') in a block whose
// length is a multiple of 7, so consecutive writes continue the pattern.
var patternBlock = bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, '\n'}, 1<<16)

// dialPeer connects from netns peer, source port srcPort.
func dialPeer(ctx context.Context, topo *selftest.Topology, srcPort, port int) (*net.TCPConn, error) {
	var conn *net.TCPConn
	err := selftest.InPeer(func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: topo.PeerAddr4.AsSlice(), Port: srcPort}}
		c, err := d.DialContext(ctx, "tcp4", net.JoinHostPort(topo.Addr4.String(), strconv.Itoa(port)))
		if err != nil {
			return err
		}
		conn = c.(*net.TCPConn)
		return nil
	})
	return conn, err
}

// drive connects every flow (flow i from peer port port+i), sends j.size
// bytes over the bulk flows, runs request/response on the others while the
// bulk flows last (or j.rrTime without bulk flows), half-closes each and
// waits for the receiver to close: that is the end of the transfer.
func drive(topo *selftest.Topology, j job, port int) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	conns := make([]*net.TCPConn, j.flows)
	// Connecting goes through the simulated NIC too: a SYN that never
	// gets there is a stall like any other.
	dctx, dcancel := context.WithTimeout(ctx, jobTimeout(j))
	defer dcancel()
	for i := range conns {
		c, err := dialPeer(dctx, topo, port+i, port)
		if err != nil {
			if dctx.Err() != nil {
				printStall(topo)
			}
			return result{}, fmt.Errorf("connecting flow %d: %w", i, err)
		}
		defer c.Close()
		conns[i] = c
	}
	// A flow that stalls fails the job (the driver tries it once more)
	// instead of hanging the bench: no transfer here takes minutes.
	deadline := time.Now().Add(jobTimeout(j))
	for _, c := range conns {
		c.SetDeadline(deadline)
	}
	bulk := j.flows - j.rrFlows
	var res result
	busy0, per0 := cpuBusy()
	start := time.Now()
	var wg sync.WaitGroup
	errs := make([]error, j.flows)
	bulkDone := make(chan struct{})
	var bulkWG sync.WaitGroup
	for i := range bulk {
		share := j.size / int64(bulk)
		if i == 0 {
			share += j.size % int64(bulk)
		}
		res.bytes += share
		res.bulk += share
		wg.Add(1)
		bulkWG.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = sendBulk(conns[i], share, bulkWG.Done)
		}()
	}
	go func() { bulkWG.Wait(); close(bulkDone) }()
	lats := make([][]time.Duration, j.flows)
	for i := bulk; i < j.flows; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			until := bulkDone
			if bulk == 0 {
				t := make(chan struct{})
				time.AfterFunc(j.rrTime, func() { close(t) })
				until = t
			}
			lats[i], errs[i] = requestResponse(conns[i], j.req, j.resp, until)
		}()
	}
	wg.Wait()
	res.wall = time.Since(start)
	busy1, per1 := cpuBusy()
	res.vmCPU, res.ncpu, res.vmCPUMax = busy1-busy0, len(per1), busiest(per0, per1)
	for i, err := range errs {
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				printStall(topo)
			}
			return result{}, fmt.Errorf("flow %d: %w", i, err)
		}
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	if len(all) > 0 {
		slices.Sort(all)
		res.rrTx = len(all)
		res.rrP50 = all[len(all)/2]
		res.rrP99 = all[len(all)*99/100]
		res.rrDuration = res.wall
		res.bytes += int64(len(all) * j.req)
	}
	return res, nil
}

// driveProfiled is drive, under a system-wide perf record (-perf-system)
// whose report it prints: every CPU of the VM, sender, softirqs and the
// simulated NIC's copy included.
func driveProfiled(c *config, topo *selftest.Topology, j job, port int) (result, error) {
	if c.perfSystem == "" {
		return drive(topo, j, port)
	}
	dir, err := os.MkdirTemp("", "bench-perf-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "perf.data")
	// Call graphs, so that the receivers' time can be told by system call.
	rec := exec.Command(c.perfSystem, "record", "-q", "-a", "-g", "-e", "cpu-clock", "-F", "499", "-o", data)
	rec.Stdout, rec.Stderr = os.Stderr, os.Stderr
	if err := rec.Start(); err != nil {
		return result{}, err
	}
	// Start when perf has opened its events and its output (exec and
	// setup take a while under TCG).
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(data); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	res, err := drive(topo, j, port)
	rec.Process.Signal(os.Interrupt)
	rec.Wait()
	if err == nil {
		printProfile(c.perfSystem, data, "whole VM, "+j.label())
	}
	return res, err
}

// sendBulk writes size bytes of the pattern, calls sent, half-closes and
// waits for the receiver's close.
func sendBulk(conn *net.TCPConn, size int64, sent func()) error {
	defer func() {
		if sent != nil {
			sent()
		}
	}()
	for left := size; left > 0; {
		n, err := conn.Write(patternBlock[:min(left, int64(len(patternBlock)))])
		left -= int64(n)
		if err != nil {
			return err
		}
	}
	sent()
	sent = nil
	if err := conn.CloseWrite(); err != nil {
		return err
	}
	// The receiver sends nothing; Read returns at its close (EOF or RST).
	io.Copy(io.Discard, conn)
	return nil
}

// requestResponse sends req-byte requests (continuing the pattern) and
// reads resp-byte responses until stop is closed, then half-closes and waits
// for the receiver's close. It returns each transaction's latency.
func requestResponse(conn *net.TCPConn, req, resp int, stop <-chan struct{}) ([]time.Duration, error) {
	conn.SetNoDelay(true)
	var lats []time.Duration
	rbuf := make([]byte, resp)
	pos := 0
	reqBuf := make([]byte, req)
	for {
		select {
		case <-stop:
			if len(lats) > 0 {
				if err := conn.CloseWrite(); err != nil {
					return nil, err
				}
				io.Copy(io.Discard, conn)
				return lats, nil
			}
		default:
		}
		for i := range reqBuf {
			reqBuf[i] = patternBlock[(pos+i)%7]
		}
		pos = (pos + req) % 7
		t := time.Now()
		if _, err := conn.Write(reqBuf); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(conn, rbuf); err != nil {
			return nil, err
		}
		lats = append(lats, time.Since(t))
	}
}

// receiverExitTimeout bounds how long a receiver may take to exit once
// its flows ended (returning tokens and closing sockets take milliseconds).
const receiverExitTimeout = time.Minute

// jobTimeout bounds a transfer: at 1 MB/s, and never under 2 minutes (TCG
// on a loaded host is slow, but not that slow).
func jobTimeout(j job) time.Duration {
	return max(2*time.Minute, time.Duration(j.size/1e6)*time.Second+j.rrTime)
}

// printStall prints what the simulated NIC says about its queues when a
// transfer stalled: rings, drop causes, and the TCP state of the flows.
func printStall(topo *selftest.Topology) {
	fmt.Println("stalled transfer; the NIC and the flows:")
	for _, k := range []string{"devmem_rx_rings", "devmem_rx_drop_causes", "devmem_rx_drops"} {
		v, err := selftest.NsimKnob(k)
		fmt.Printf("  %s: %q %v\n", k, v, err)
	}
	show := func(what string, cmd *exec.Cmd) {
		out, _ := cmd.CombinedOutput()
		fmt.Printf("  %s:\n%s\n", what, out)
	}
	ctx := context.Background()
	show("ss -tnmi (host)", exec.Command("ss", "-tnmi"))
	show("ss -tnmi (peer)", selftest.PeerCommand(ctx, "ss", "-tnmi"))
	show("ethtool -S "+topo.IfName, exec.Command("ethtool", "-S", topo.IfName))
	// Where the packets are: dropped by either port, or queued in the
	// sender's qdisc behind a stopped TX queue.
	show("ip -s -s link (host)", exec.Command("ip", "-s", "-s", "link", "show", "dev", topo.IfName))
	show("ip -s -s link (peer)", selftest.PeerCommand(ctx, "ip", "-s", "-s", "link", "show", "dev", topo.PeerIfName))
	show("tc -s qdisc (peer)", selftest.PeerCommand(ctx, "tc", "-s", "qdisc", "show", "dev", topo.PeerIfName))
	show("dmesg", exec.Command("sh", "-c", "dmesg | tail -n 20"))
}

// printGorxProfile prints gorx's profiles (GORX_CPUPROFILE, GORX_MEMPROFILE:
// files in the VM, whose writes do not reach the host) in base64 between
// marker lines, for `go tool pprof` on the host.
func printGorxProfile(recv string, j job) {
	if !strings.HasPrefix(recv, "gorx") {
		return
	}
	for _, kind := range []string{"cpu", "mem"} {
		path := os.Getenv("GORX_" + strings.ToUpper(kind) + "PROFILE")
		if path == "" {
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil {
			fmt.Printf("gorx profile: %v\n", err)
			continue
		}
		fmt.Printf("--- gorx profile (%s) %s (base64)\n%s\n--- end gorx profile\n", kind, j.label(), base64.StdEncoding.EncodeToString(b))
	}
}
