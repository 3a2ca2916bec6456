package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
)

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, 0},
		{usagef("bad"), 2},
		{setupf("bind-rx: %w", &devmem.Error{Op: "bind-rx", Message: "tcp-data-split is disabled"}), 2},
		{dataf("flow steering error"), 1},
		{errors.New("unclassified"), 1},
		{errors.Join(dataf("validation"), setupf("restore")), 1},
		{fmt.Errorf("wrapped: %w", setupf("x")), 2},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

func TestUndoStackRunsAllInReverse(t *testing.T) {
	var order []string
	u := &undoStack{}
	u.push("nic", func() error { order = append(order, "nic"); return nil })
	u.push("rule", func() error { order = append(order, "rule"); return errors.New("busy") })
	u.push("binding", func() error { order = append(order, "binding"); return nil })
	err := u.run()
	if got := strings.Join(order, ","); got != "binding,rule,nic" {
		t.Errorf("undo order %s", got)
	}
	if err == nil || !strings.Contains(err.Error(), "restore rule: busy") || exitCode(err) != exitSetup {
		t.Errorf("undo error %v", err)
	}
	if u.run() != nil || len(order) != 3 {
		t.Error("a second run must do nothing")
	}
}

func TestSplitRangesFitsKernelLimits(t *testing.T) {
	var ranges []devmem.TokenRange
	// 300 single tokens, then one run of 2500.
	for i := range 300 {
		ranges = append(ranges, devmem.TokenRange{Start: uint32(1 + 2*i), Count: 1})
	}
	ranges = append(ranges, devmem.TokenRange{Start: 10000, Count: 2500})
	var total uint32
	var calls int
	next := uint32(10000)
	err := splitRanges(ranges, func(b []devmem.TokenRange) error {
		calls++
		var n uint32
		for _, r := range b {
			n += r.Count
			if r.Start >= 10000 {
				if r.Start != next {
					t.Errorf("run split out of order: %d, want %d", r.Start, next)
				}
				next += r.Count
			}
		}
		if len(b) > dontneedMaxRanges || n > dontneedMaxTokens {
			t.Errorf("batch of %d ranges, %d tokens", len(b), n)
		}
		total += n
		return nil
	})
	if err != nil || total != 2800 {
		t.Fatalf("total %d, err %v", total, err)
	}
	// 300 singles: 128+128+44 (the last joined by 984 of the run),
	// then 1024 + 492 of the run.
	if calls != 5 {
		t.Errorf("%d calls, want 5", calls)
	}
}

type fakeReleaser struct{ calls [][]uint32 }

func (f *fakeReleaser) ReleaseTokens(tokens []uint32) (int, error) {
	f.calls = append(f.calls, append([]uint32(nil), tokens...))
	return len(tokens), nil
}

func TestCountingReleaser(t *testing.T) {
	f := &fakeReleaser{}
	c := &countingReleaser{rel: f}
	tokens := []uint32{5, 3, 4, 9, 1}
	freed, err := c.ReleaseTokens(tokens)
	if err != nil || freed != 5 {
		t.Fatalf("freed %d, %v", freed, err)
	}
	if tokens[0] != 5 {
		t.Error("caller's tokens were reordered")
	}
	calls, total := c.stats()
	if calls != 1 || total != 5 || len(f.calls) != 1 {
		t.Errorf("calls %d freed %d, fake saw %d calls", calls, total, len(f.calls))
	}
	many := make([]uint32, 3000)
	for i := range many {
		many[i] = uint32(100 + i)
	}
	c.ReleaseTokens(many)
	if calls, _ := c.stats(); calls != 1+3 {
		t.Errorf("3000 consecutive tokens took %d calls, want 3", calls-1)
	}
}

func TestSummaryJSON(t *testing.T) {
	s := &summary{Mode: "server", IfName: "eth0", Bytes: 2e6, Validation: "passed", Queues: []int{1}}
	s.finish(2*time.Second, nil)
	var b strings.Builder
	if err := s.writeJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatalf("not one JSON object: %v: %s", err, b.String())
	}
	if got["mb_per_s"] != 1.0 || got["ok"] != true || got["exit_status"] != 0.0 || got["validation"] != "passed" {
		t.Errorf("summary %s", b.String())
	}
	s = &summary{Mode: "server"}
	s.finish(time.Second, errors.Join(dataf("flow steering error"), setupf("restore x")))
	if s.Exit != 1 || strings.Contains(s.Error, "\n") || !strings.Contains(s.Error, "flow steering error; restore x") {
		t.Errorf("error summary %+v", s)
	}
}
