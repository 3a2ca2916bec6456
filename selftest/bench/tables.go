//go:build linux

package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

func median(rs []result, f func(result) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return medianOf(v)
}

// medianOf sorts v and returns its median (0 when empty).
func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// pairedRatios are f(a[i]) ÷ f(b[i]) for the runs of one round: the
// receivers of a round run one after the other, so a ratio within a round
// leaves out most of what the host's speed does between rounds (minutes
// apart), which moves every receiver's figures together. It returns their
// median and range; ok is false without a common round or with a zero
// divisor.
func pairedRatios(a, b []result, f func(result) float64) (med, lo, hi float64, ok bool) {
	n := min(len(a), len(b))
	v := make([]float64, 0, n)
	for i := range n {
		d := f(b[i])
		if d == 0 {
			return 0, 0, 0, false
		}
		v = append(v, f(a[i])/d)
	}
	if len(v) == 0 {
		return 0, 0, 0, false
	}
	med = medianOf(v) // sorts v
	return med, v[0], v[len(v)-1], true
}

// pairedNote says what pairedRatios found, for an acceptance line.
func pairedNote(a, b []result, f func(result) float64) string {
	med, lo, hi, ok := pairedRatios(a, b, f)
	if !ok {
		return ""
	}
	return fmt.Sprintf(" (round by round %.2f–%.2f, median %.2f)", lo, hi, med)
}

func (r result) cpuGiB() float64 { return r.cpu.Seconds() / r.gib() }

// row is the medians of one receiver's runs.
type row struct {
	mbpsMin, mbpsMax                            float64
	n                                           int
	mbps, cpuGiB, vmGiB, busy, recv, dn, dnFrag float64
	busiest                                     float64 // the busiest CPU's share of the wall time
	fragsGiB, maxOut, allocs, steadyRc          float64
}

func summarize(rs []result) row {
	lo, hi := 0.0, 0.0
	for i, r := range rs {
		if m := r.mbps(); i == 0 || m < lo {
			lo = m
		}
		if m := r.mbps(); m > hi {
			hi = m
		}
	}
	return row{
		mbpsMin:  lo,
		mbpsMax:  hi,
		n:        len(rs),
		mbps:     median(rs, func(r result) float64 { return r.mbps() }),
		cpuGiB:   median(rs, result.cpuGiB),
		vmGiB:    median(rs, func(r result) float64 { return r.vmCPU.Seconds() / r.gib() }),
		busy:     median(rs, func(r result) float64 { return r.vmCPU.Seconds() / r.wall.Seconds() / float64(max(1, r.ncpu)) }),
		busiest:  median(rs, func(r result) float64 { return r.vmCPUMax.Seconds() / r.wall.Seconds() }),
		recv:     median(rs, func(r result) float64 { return float64(r.recvmsg) / r.gib() }),
		dn:       median(rs, func(r result) float64 { return float64(r.dontneed) / r.gib() }),
		dnFrag:   median(rs, func(r result) float64 { return float64(r.dontneed) / float64(max(r.frags, 1)) }),
		fragsGiB: median(rs, func(r result) float64 { return float64(r.frags) / r.gib() }),
		maxOut:   median(rs, func(r result) float64 { return float64(r.maxOut) }),
		allocs:   median(rs, func(r result) float64 { return float64(r.allocs) }),
		steadyRc: median(rs, func(r result) float64 { return float64(r.steadyRc) }),
	}
}

var receiverNames = map[string][2]string{ // validation off, on
	"tcp":    {"plain TCP, read and discard", "plain TCP, every byte read once"},
	"fastrx": {"optimized C devmem (fastrx)", "optimized C devmem (fastrx)"},
	"C":      {"kernel C ncdevmem", "kernel C ncdevmem"},
	"ours":   {"our cmd/ncdevmem", "our cmd/ncdevmem"},
	"gorx":   {"library loop (gorx)", "library loop (gorx)"},
	"gorx1":  {"library loop, GOMAXPROCS=1", "library loop, GOMAXPROCS=1"},
	"gorxt":  {"library loop, BlockThread", "library loop, BlockThread"},
	"gorxt1": {"library loop, BlockThread, GOMAXPROCS=1", "library loop, BlockThread, GOMAXPROCS=1"},
}

func receiverName(recv string, on bool) string {
	n, ok := receiverNames[recv]
	if !ok {
		return recv
	}
	if on {
		return n[1]
	}
	return n[0]
}

func ratio(a, b float64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f", a/b)
}

func orNA(v float64, format string) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf(format, v)
}

func printSingle(c *config, receivers []string, rs results) {
	fmt.Println()
	fmt.Println("| validation | receiver | runs | MB/s | MB/s min–max | CPU s/GiB | VM CPU s/GiB | recvmsg/GiB | DONTNEED/GiB | DONTNEED/frag | frags/GiB | max tokens out | allocs (steady, over recvmsg) | MB/s ÷ fastrx | CPU/GiB ÷ fastrx |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, mode := range c.modes {
		ref, haveRef := rs[key(mode, "/", "fastrx")]
		var rr row
		if haveRef {
			rr = summarize(ref)
		}
		for _, recv := range receivers {
			r := summarize(rs[key(mode, "/", recv)])
			allocs := "n/a"
			if r.allocs >= 0 && strings.HasPrefix(recv, "gorx") {
				allocs = fmt.Sprintf("%.0f over %.0f", r.allocs, r.steadyRc)
			}
			dnFrag := "n/a"
			if r.fragsGiB > 0 {
				dnFrag = fmt.Sprintf("1/%.0f", 1/max(r.dnFrag, 1e-9))
			}
			rm, rc := "", ""
			if haveRef {
				rm, rc = ratio(r.mbps, rr.mbps), ratio(r.cpuGiB, rr.cpuGiB)
			}
			fmt.Printf("| %s | %s | %d | %.2f | %.1f–%.1f | %.2f | %.2f | %.0f | %.0f | %s | %.0f | %s | %s | %s | %s |\n",
				mode, receiverName(recv, mode == "on"), r.n, r.mbps, r.mbpsMin, r.mbpsMax, r.cpuGiB, r.vmGiB, r.recv, r.dn, dnFrag,
				r.fragsGiB, orNA(r.maxOut, "%.0f"), allocs, rm, rc)
		}
	}
}

func printScaling(c *config, rs results) []accept {
	var acc []accept
	fmt.Println()
	fmt.Println("| receiver | flows | bound queues | runs | aggregate MB/s | min–max | × 1 flow on 1 queue | CPU s/GiB | VM CPU s/GiB | VM CPUs busy | busiest CPU | DONTNEED/frag | max tokens out |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
	for _, recv := range c.scaleReceivers {
		base := summarize(rs[key(recv, "/", 1, "x", 1)])
		for _, fq := range c.scale {
			r := summarize(rs[key(recv, "/", fq[0], "x", fq[1])])
			fmt.Printf("| %s | %d | %d | %d | %.2f | %.1f–%.1f | %s | %.2f | %.2f | %.0f%% | %.0f%% | 1/%.0f | %.0f |\n",
				receiverName(recv, true), fq[0], fq[1], r.n, r.mbps, r.mbpsMin, r.mbpsMax, ratio(r.mbps, base.mbps), r.cpuGiB, r.vmGiB,
				100*r.busy, 100*r.busiest, 1/max(r.dnFrag, 1e-9), r.maxOut)
			if fq == [2]int{4, 4} && base.n > 0 {
				acc = append(acc, accept{
					what:  fmt.Sprintf("%s: 4 flows over 4 queues ≥ 3x one flow on one queue", recv),
					value: fmt.Sprintf("%.2fx (VM CPUs %.0f%% busy at 1x1, %.0f%% at 4x4; the busiest %.0f%% and %.0f%%)", r.mbps/base.mbps, 100*base.busy, 100*r.busy, 100*base.busiest, 100*r.busiest),
					pass:  r.mbps >= 3*base.mbps,
				})
			}
		}
	}
	return acc
}

func printMixed(c *config, rs results) {
	fmt.Println()
	fmt.Println("| receiver | workload | runs | bulk MB/s | transactions/s | p50 µs | p99 µs | DONTNEED/frag | frags |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, recv := range c.mixedReceivers {
		for _, kind := range []string{"rr", "rr+bulk", "bulk"} {
			x := rs[key(recv, "/", kind)]
			bulk := median(x, func(r result) float64 { return float64(r.bulk) / 1e6 / r.wall.Seconds() })
			tps := median(x, func(r result) float64 { return float64(r.rrTx) / r.wall.Seconds() })
			p50 := median(x, func(r result) float64 { return us(r.rrP50) })
			p99 := median(x, func(r result) float64 { return us(r.rrP99) })
			dn := median(x, func(r result) float64 { return float64(r.dontneed) / float64(max(r.frags, 1)) })
			frags := median(x, func(r result) float64 { return float64(r.frags) })
			name := map[string]string{"rr": "request/response alone", "rr+bulk": "request/response + bulk", "bulk": "bulk alone"}[kind]
			dnS := "n/a"
			if frags > 0 {
				dnS = fmt.Sprintf("1/%.0f", 1/max(dn, 1e-9))
			}
			bulkS, tpsS, p50S, p99S := "", "", "", ""
			if kind != "rr" {
				bulkS = fmt.Sprintf("%.2f", bulk)
			}
			if kind != "bulk" {
				tpsS, p50S, p99S = fmt.Sprintf("%.0f", tps), fmt.Sprintf("%.0f", p50), fmt.Sprintf("%.0f", p99)
			}
			fmt.Printf("| %s | %s | %d | %s | %s | %s | %s | %s | %.0f |\n",
				receiverName(recv, true), name, len(x), bulkS, tpsS, p50S, p99S, dnS, frags)
		}
	}
}

type accept struct {
	what, value string
	pass        bool
}

// acceptance checks issue #12's ratios on one geometry's single-flow table.
func acceptance(c *config, geom string, rs results) []accept {
	var acc []accept
	runs := func(mode, recv string) []result { return rs[key(mode, "/", recv)] }
	get := func(mode, recv string) (row, bool) {
		x, ok := rs[key(mode, "/", recv)]
		if !ok {
			return row{}, false
		}
		return summarize(x), true
	}
	for _, mode := range c.modes {
		fx, okF := get(mode, "fastrx")
		cc, okC := get(mode, "C")
		o, okO := get(mode, "ours")
		t, okT := get(mode, "tcp")
		p := fmt.Sprintf("[%s, validation %s] ", geom, mode)
		if okC && okO {
			acc = append(acc, accept{p + "cmd/ncdevmem ≥ 1.5x kernel C ncdevmem throughput", ratio(o.mbps, cc.mbps) + "x", o.mbps >= 1.5*cc.mbps})
		}
		if r, ok := get(mode, "ours"); ok {
			acc = append(acc, accept{p + "ours DONTNEED per frag ≤ 1/64", fmt.Sprintf("1/%.0f", 1/max(r.dnFrag, 1e-9)), r.dnFrag <= 1.0/64})
		}
		// The library loops: as they wait for data by default (the
		// runtime's poller) and with BlockThread.
		for _, lib := range []string{"gorx", "gorxt"} {
			g, okG := get(mode, lib)
			if !okG {
				continue
			}
			if okF {
				// The verdict is on the ratio of the medians; the
				// round-by-round ratios say how far the spread reaches.
				gr, fr := runs(mode, lib), runs(mode, "fastrx")
				acc = append(acc, accept{p + lib + " ≥ 1.0x fastrx throughput", ratio(g.mbps, fx.mbps) + "x" + pairedNote(gr, fr, result.mbps), g.mbps >= fx.mbps},
					accept{p + lib + " CPU/GiB ≤ 1.1x fastrx's", ratio(g.cpuGiB, fx.cpuGiB) + "x" + pairedNote(gr, fr, result.cpuGiB), g.cpuGiB <= 1.1*fx.cpuGiB})
			}
			if okT {
				what := "plain TCP read+discard"
				if mode == "on" {
					what = "plain TCP copy (every byte read)"
				}
				acc = append(acc, accept{p + lib + " ≥ " + what + " throughput", ratio(g.mbps, t.mbps) + "x", g.mbps >= t.mbps},
					accept{p + lib + " CPU/GiB < " + what + "'s", ratio(g.cpuGiB, t.cpuGiB) + "x", g.cpuGiB < t.cpuGiB})
			}
			acc = append(acc, accept{p + lib + " DONTNEED per frag ≤ 1/64", fmt.Sprintf("1/%.0f", 1/max(g.dnFrag, 1e-9)), g.dnFrag <= 1.0/64})
			if g.allocs >= 0 {
				acc = append(acc, accept{p + lib + " 0 allocs in steady state", fmt.Sprintf("%.0f over %.0f recvmsg", g.allocs, g.steadyRc), g.allocs == 0})
			}
		}
	}
	return acc
}

func printAcceptance(acc []accept) {
	fmt.Println("\n## acceptance (issue #12)")
	fmt.Println()
	for _, a := range acc {
		v := "FAIL"
		if a.pass {
			v = "pass"
		}
		fmt.Printf("* %s: %s — %s\n", v, a.what, a.value)
	}
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
