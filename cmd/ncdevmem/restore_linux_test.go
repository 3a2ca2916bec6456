package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nsID is how package nic names a namespace in its journals.
func nsID(t *testing.T, kind string) string {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/"+kind, &st); err != nil {
		t.Skip(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// TestRestoreFlag: --restore needs no other flag, applies the journals of
// dead processes in this network namespace (here one that recorded no
// change, on lo), removes them and leaves a live process's journal alone.
func TestRestoreFlag(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("DEVMEM_JOURNAL_DIR", dir)
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Skip(err)
	}
	write := func(pid int, seq int) string {
		j := map[string]any{
			"pid": pid, "start": 1, "pidns": nsID(t, "pid"), "netns": nsID(t, "net"),
			"ifindex": 1, "ifname": "lo", "seq": seq,
		}
		b, _ := json.Marshal(j)
		p := filepath.Join(dir, fmt.Sprintf("%d-%d.json", pid, seq))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gone := write(dead.Process.Pid, 1)
	// The live one is this test process, with its real start time (a
	// running pid with another start time counts as gone: reused).
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		t.Skip(err)
	}
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	live := filepath.Join(dir, fmt.Sprintf("%d-2.json", os.Getpid()))
	b, _ := json.Marshal(map[string]any{
		"pid": os.Getpid(), "start": json.Number(f[19]), "pidns": nsID(t, "pid"), "netns": nsID(t, "net"),
		"ifindex": 1, "ifname": "lo", "seq": 2,
	})
	if err := os.WriteFile(live, b, 0o644); err != nil {
		t.Fatal(err)
	}

	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--restore"}, strings.NewReader(""), &stdout, &stderr)
	if code != exitOK || !strings.Contains(stderr.String(), "of 1 crashed run") {
		t.Errorf("--restore: exit %d, stderr:\n%s", code, stderr.String())
	}
	if _, err := os.Stat(gone); !os.IsNotExist(err) {
		t.Errorf("the dead process's journal is still there (%v)", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("the live process's journal was removed: %v", err)
	}
}
