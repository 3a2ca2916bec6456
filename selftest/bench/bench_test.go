//go:build linux

package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseKV(t *testing.T) {
	kv, err := parseKV("bytes=10 recvmsg=3 allocs_steady=n/a junk max_outstanding=-1\n")
	if err != nil {
		t.Fatal(err)
	}
	if kv["bytes"] != 10 || kv["recvmsg"] != 3 || kv["allocs_steady"] != -1 || kv["max_outstanding"] != -1 {
		t.Errorf("parseKV: %v", kv)
	}
	if _, err := parseKV("recvmsg=3"); err == nil {
		t.Error("parseKV accepted a line without bytes=")
	}
}

func TestGeomFlags(t *testing.T) {
	var g geomFlags
	if err := g.Set("hw:a=0,b=1"); err != nil {
		t.Fatal(err)
	}
	if err := g.Set("plain:"); err != nil {
		t.Fatal(err)
	}
	if len(g) != 2 || g[0].label != "hw" || len(g[0].knobs) != 2 || g[0].knobs[1] != [2]string{"b", "1"} || len(g[1].knobs) != 0 {
		t.Errorf("geometries: %+v", g)
	}
	if err := g.Set("x:novalue"); err == nil {
		t.Error("accepted a knob without a value")
	}
	for _, c := range []struct {
		knobs string
		want  uint32
		ok    bool
	}{{"a=0", 0, true}, {"a=0,bind:rx-page-size=32768", 32768, true}, {"bind:rx-page-size=big", 0, false}} {
		var g geomFlags
		if err := g.Set("g:" + c.knobs); err != nil {
			t.Fatal(err)
		}
		if n, err := g[0].pageSize(); n != c.want || (err == nil) != c.ok {
			t.Errorf("%s: rx-page-size %d, %v; want %d (ok %v)", c.knobs, n, err, c.want, c.ok)
		}
	}
}

func TestMedian(t *testing.T) {
	rs := []result{{bytes: 3e6, wall: time.Second}, {bytes: 1e6, wall: time.Second}, {bytes: 2e6, wall: time.Second}, {bytes: 10e6, wall: time.Second}}
	if m := median(rs, result.mbps); m != 2.5 {
		t.Errorf("median of 1,2,3,10 = %v, want 2.5", m)
	}
	if m := median(rs[:3], result.mbps); m != 2 {
		t.Errorf("median of 3,1,2 = %v, want 2", m)
	}
}

func TestPairedRatios(t *testing.T) {
	mb := func(v ...float64) []result {
		rs := make([]result, len(v))
		for i, x := range v {
			rs[i] = result{bytes: int64(x * 1e6), wall: time.Second}
		}
		return rs
	}
	// The host slows down between rounds: every receiver's figure moves,
	// the ratio within a round does not.
	a, b := mb(90, 45, 60), mb(100, 50, 50)
	med, lo, hi, ok := pairedRatios(a, b, result.mbps)
	if !ok || med != 0.9 || lo != 0.9 || hi != 1.2 {
		t.Errorf("pairedRatios = %v %v–%v %v, want median 0.9, range 0.9–1.2", med, lo, hi, ok)
	}
	// Rounds beyond the shorter list are left out; even counts average.
	med, lo, hi, ok = pairedRatios(mb(1, 3, 7), mb(1, 1), result.mbps)
	if !ok || med != 2 || lo != 1 || hi != 3 {
		t.Errorf("pairedRatios over 2 rounds = %v %v–%v %v, want 2, 1–3", med, lo, hi, ok)
	}
	if _, _, _, ok := pairedRatios(mb(1), mb(0), result.mbps); ok {
		t.Error("a zero divisor gave a ratio")
	}
	if _, _, _, ok := pairedRatios(nil, mb(1), result.mbps); ok {
		t.Error("no common round gave a ratio")
	}
	if got := pairedNote(a, b, result.mbps); got != " (round by round 0.90–1.20, median 0.90)" {
		t.Errorf("pairedNote = %q", got)
	}
}

// TestFastrxValidates runs fastrx's plain TCP mode on loopback: a correct
// stream passes, one wrong byte fails with its offset. The devmem mode is
// exercised in the VM by make bench, which checks bytes and mismatches.
func TestFastrxValidates(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("no gcc")
	}
	bin := filepath.Join(t.TempDir(), "fastrx")
	if out, err := exec.Command(gcc, "-O2", "-Wall", "-Werror", "-pthread", "-o", bin, "fastrx/fastrx.c").CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, out)
	}
	const size = 3<<20 + 5
	for _, corrupt := range []int{-1, 0, 1 << 20, size - 1} {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		cmd := exec.Command(bin, "-m", "tcp-touch", "-v", "7", "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-n", "1")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var c net.Conn
		for range 100 {
			if c, err = net.Dial("tcp4", "127.0.0.1:"+strconv.Itoa(port)); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			cmd.Process.Kill()
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, '\n'}, size/7+1)[:size]
		if corrupt >= 0 {
			data[corrupt] = 0
		}
		if _, err := c.Write(data); err != nil {
			t.Fatal(err)
		}
		c.Close()
		err = cmd.Wait()
		kv, perr := parseKV(stdout.String())
		if perr != nil {
			t.Fatalf("corrupt %d: %v (stderr %s)", corrupt, perr, stderr.String())
		}
		if kv["bytes"] != size {
			t.Errorf("corrupt %d: bytes=%d, want %d", corrupt, kv["bytes"], size)
		}
		if corrupt < 0 {
			if err != nil || kv["mismatches"] != 0 {
				t.Errorf("correct stream: %v, %d mismatches, %s", err, kv["mismatches"], stderr.String())
			}
			continue
		}
		if err == nil || kv["mismatches"] != 1 || !strings.Contains(stderr.String(), "byte "+strconv.Itoa(corrupt)+" is 0") {
			t.Errorf("corrupt byte %d: exit %v, mismatches %d, stderr %q", corrupt, err, kv["mismatches"], stderr.String())
		}
	}
	_ = os.Remove(bin)
}

func TestCPUBusy(t *testing.T) {
	// /proc/stat in USER_HZ ticks: user nice system idle iowait irq
	// softirq steal guest guest_nice; idle and iowait are not busy, guest
	// time is in user already.
	const stat = `cpu  300 10 200 9000 50 5 15 0 7 0
cpu0 100 10 50 4500 25 5 10 0 7 0
cpu1 200 0 150 4500 25 0 5 0 0 0
intr 12345 0 0
ctxt 999
`
	total, per := parseStat(strings.NewReader(stat))
	if want := 530 * 10 * time.Millisecond; total != want {
		t.Errorf("total = %v, want %v", total, want)
	}
	if want := []time.Duration{175 * 10 * time.Millisecond, 355 * 10 * time.Millisecond}; !slices.Equal(per, want) {
		t.Errorf("per CPU = %v, want %v", per, want)
	}
	if _, per := cpuBusy(); len(per) == 0 {
		t.Error("no per-CPU lines read from /proc/stat")
	}
	before := []time.Duration{1 * time.Second, 5 * time.Second, 2 * time.Second}
	after := []time.Duration{2 * time.Second, 5 * time.Second, 4 * time.Second, 9 * time.Second} // a CPU missing from the first reading is left out
	if got := busiest(before, after); got != 2*time.Second {
		t.Errorf("busiest = %v, want 2s", got)
	}
}
