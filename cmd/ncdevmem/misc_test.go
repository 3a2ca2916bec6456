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
