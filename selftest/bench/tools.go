//go:build linux

package main

// The two complete tools, each configuring the NIC itself: the kernel's C
// ncdevmem (counted by countsys.so) and our cmd/ncdevmem (counted by its
// summary).

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/devmem-go/devmem/selftest"
)

// transferTool runs one tool as the receiver of one flow. Both get the same
// flags, -l -f IF -s ADDR -c PEER -p PORT (-v 7 with validation on). With
// validation off both write the payload to stdout, /dev/null.
func transferTool(c *config, topo *selftest.Topology, j job, port int) (result, error) {
	p := strconv.Itoa(port)
	args := []string{"-l", "-f", topo.IfName, "-s", topo.Addr4.String(), "-c", topo.PeerAddr4.String(), "-p", p}
	if j.validate {
		args = append(args, "-v", "7")
	}
	bin := c.ours
	var env []string
	countsDir, err := os.MkdirTemp("", "bench-counts-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(countsDir)
	countsFile := filepath.Join(countsDir, "counts")
	if j.recv == "C" {
		bin = c.theirs
		env = []string{"LD_PRELOAD=" + c.shim, "COUNTSYS_OUT=" + countsFile}
	} else if j.validate {
		args = append(args, "--json") // the summary on stdout
	}
	// Payload "printed" without validation goes to /dev/null. The C tool
	// writes a line per recvmsg and per frag to stderr (unbuffered): part
	// of its cost, so it goes to a file (startReceiver's), not a pipe.
	pr, err := startReceiver(c, bin, args, env, nil, !(j.recv == "ours" && j.validate))
	if err != nil {
		return result{}, err
	}
	if err := waitListening(port, pr.exited); err != nil {
		return pr.fail(err)
	}
	res, err := driveProfiled(c, topo, j, port)
	if err != nil {
		return pr.fail(fmt.Errorf("sender: %w", err))
	}
	if err := pr.waitExit(); err != nil {
		return result{}, fmt.Errorf("%s ncdevmem: %v\n%s", j.recv, err, tail(pr.stderr.Name(), 15))
	}
	stdout := pr.stdout.Bytes()
	stderrPath := pr.stderr.Name()
	stderrText, _ := os.ReadFile(stderrPath)
	pr.finish(c, &res, j)
	res.maxOut, res.allocs = -1, -1 // unless the summary says
	switch {
	case j.recv == "C":
		err = readShimCounts(countsFile, &res)
	case j.validate:
		err = readJSONSummary(stdout, &res)
	default:
		err = readTextSummary(stderrText, &res)
	}
	return res, err
}

// readShimCounts reads countsys.so's "recvmsg=N frags=N dontneed=N tokens=N
// max_outstanding=N".
func readShimCounts(path string, res *result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("countsys output: %w", err)
	}
	kv, err := parseKV("bytes=0 " + string(b))
	if err != nil {
		return fmt.Errorf("countsys output %q: %w", b, err)
	}
	res.recvmsg, res.frags, res.dontneed = uint64(kv["recvmsg"]), uint64(kv["frags"]), uint64(kv["dontneed"])
	if v, ok := kv["max_outstanding"]; ok {
		res.maxOut = v
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
		Peak     *int64 `json:"peak_outstanding"` // if the tool reports it
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("summary %q: %w", b, err)
	}
	if !s.OK || s.Valid != "passed" || s.Bytes != res.bytes {
		return fmt.Errorf("ours: %s", b)
	}
	res.recvmsg, res.frags, res.dontneed = s.Recvmsg, s.Frags, s.Dontneed
	if s.Peak != nil {
		res.maxOut = *s.Peak
	}
	return nil
}

// The text summary (cmd/ncdevmem/summary.go writeText), which ours prints on
// stderr when stdout carries the payload.
var (
	receivedLine = regexp.MustCompile(`received (\d+) bytes .*: (\d+) recvmsg calls, (\d+) frags`)
	releasedLine = regexp.MustCompile(`tokens released \d+ in (\d+) SO_DEVMEM_DONTNEED calls`)
)

func readTextSummary(b []byte, res *result) error {
	m1, m2 := receivedLine.FindSubmatch(b), releasedLine.FindSubmatch(b)
	if m1 == nil || m2 == nil {
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		return fmt.Errorf("no summary in ours' stderr:\n%s", strings.Join(lines[max(0, len(lines)-10):], "\n"))
	}
	if n, _ := strconv.ParseInt(string(m1[1]), 10, 64); n != res.bytes {
		return fmt.Errorf("ours received %d bytes of %d", n, res.bytes)
	}
	res.recvmsg, _ = strconv.ParseUint(string(m1[2]), 10, 64)
	res.frags, _ = strconv.ParseUint(string(m1[3]), 10, 64)
	res.dontneed, _ = strconv.ParseUint(string(m2[1]), 10, 64)
	return nil
}

// printReportLines prints the first limit lines of a perf report, without its
// comments and blank lines.
func printReportLines(out []byte, limit int) {
	n := 0
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "#") || strings.TrimSpace(l) == "" {
			continue
		}
		fmt.Println(l)
		if n++; n == limit {
			return
		}
	}
}

// printInclusive prints the receivers' profile by inclusive time (perf's
// children): where their system calls, the release and the Go scheduler
// spend it. Percentages are of all samples of the VM; a cpu-clock sample
// taken in an interrupt counts for the task it interrupted.
func printInclusive(perf, data, label string) {
	out, _ := exec.Command(perf, "report", "-i", data, "--stdio", "--children", "-g", "none",
		"--comms", "fastrx,gorx", "--sort", "sym", "--percent-limit", "1").CombinedOutput()
	fmt.Printf("--- receiver, inclusive: %s (children, self, symbol)\n", label)
	printReportLines(out, 60)
}

// printProfile prints the top of a receiver's profile: by symbol, self time,
// kernel and user together.
func printProfile(perf, data, label string) {
	sortBy := "dso,sym"
	if strings.HasPrefix(label, "whole VM") {
		// Which process: sender (devmem-bench), receiver, softirqs
		// (ksoftirqd, kworker), idle (swapper); then by symbol.
		out, _ := exec.Command(perf, "report", "-i", data, "--stdio", "--no-children", "-g", "none",
			"--sort", "comm", "--percent-limit", "2").CombinedOutput()
		var byComm []string
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) == 2 && !strings.HasPrefix(l, "#") {
				byComm = append(byComm, f[1]+" "+f[0])
			}
		}
		fmt.Printf("--- by process: %s: %s\n", label, strings.Join(byComm, ", "))
		sortBy = "comm,dso,sym"
		// The receivers' own samples, by symbol, with counts: at -F 499
		// a sample is about 2 ms of CPU, so receivers compare in
		// seconds, not in shares of different totals.
		out, _ = exec.Command(perf, "report", "-i", data, "--stdio", "--no-children", "-g", "none", "-n",
			"--comms", "fastrx,gorx", "--sort", "pid,dso,sym", "--percent-limit", "0.2").CombinedOutput()
		byTid, _ := exec.Command(perf, "report", "-i", data, "--stdio", "--no-children", "-g", "none", "-n",
			"--comms", "fastrx,gorx", "--sort", "pid", "--percent-limit", "0.3").CombinedOutput()
		fmt.Printf("--- receiver threads: %s\n%s", label, byTid)
		fmt.Printf("--- receiver: %s (samples of fastrx or gorx)\n", label)
		printReportLines(out, 60)
		printInclusive(perf, data, label)
	}
	out, err := exec.Command(perf, "report", "-i", data, "--stdio", "--no-children", "-g", "none",
		"--sort", sortBy, "--percent-limit", "1").CombinedOutput()
	fmt.Printf("--- profile: %s (perf cpu-clock, self time)\n", label)
	printReportLines(out, 25)
	if err != nil {
		fmt.Printf("perf report: %v\n", err)
	}
}
