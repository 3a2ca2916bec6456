//go:build linux

package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTestTimeout(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
		ok   bool
	}{
		{[]string{"-test.v=true", "-test.timeout=10m0s"}, 10 * time.Minute, true},
		{[]string{"-test.timeout", "90s"}, 90 * time.Second, true},
		{[]string{"--test.timeout=1h"}, time.Hour, true},
		{[]string{"-test.timeout=0s"}, 0, false},
		{[]string{"-test.run=timeout"}, 0, false},
		{[]string{"test.timeout=5s"}, 0, false},
		{nil, 0, false},
	} {
		got, ok := testTimeout(tc.args)
		if got != tc.want || ok != tc.ok {
			t.Errorf("testTimeout(%q) = %v, %v; want %v, %v", tc.args, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	fw := &frameWriter{w: &buf}
	fw.stream(frameStdout).Write([]byte("out"))
	fw.stream(frameStderr).Write([]byte("err"))
	fw.writeFrame(frameExit, nil)
	for _, want := range []struct {
		kind    byte
		payload string
	}{{frameStdout, "out"}, {frameStderr, "err"}, {frameExit, ""}} {
		kind, payload, err := readFrame(&buf)
		if err != nil || kind != want.kind || string(payload) != want.payload {
			t.Fatalf("readFrame = %q, %q, %v; want %q, %q", kind, payload, err, want.kind, want.payload)
		}
	}
}

func TestKernelProblemPatterns(t *testing.T) {
	for line, bad := range map[string]bool{
		"[    1.2] WARNING: CPU: 0 PID: 1 at net/core/devmem.c:10 f+0x1/0x2":     true,
		"[    1.2] BUG: kernel NULL pointer dereference, address: 0000000000000": true,
		"[    1.2] Kernel panic - not syncing: Attempted to kill init!":          true,
		"[    1.2] refcount_t: underflow; use-after-free.":                       true,
		"[    1.2] netdevsim netdevsim1 eth0: renamed from eth1":                 false,
		"[    1.2] 9pnet_virtio: no channels available for device root":          false,
	} {
		if got := kernelProblem.MatchString(line); got != bad {
			t.Errorf("kernelProblem(%q) = %v, want %v", line, got, bad)
		}
	}
}

// The tests below boot VMs. They need DEVMEM_KERNEL (make vmtest sets it)
// so that a plain `go test ./...` never starts a kernel build.

func buildVMExec(t *testing.T) string {
	t.Helper()
	if os.Getenv("DEVMEM_VM") == "1" {
		t.Skip("already inside the VM")
	}
	if os.Getenv("DEVMEM_KERNEL") == "" {
		t.Skip("set DEVMEM_KERNEL=path/to/bzImage to boot VMs (make vmtest does)")
	}
	if _, err := exec.LookPath(qemuBinary()); err != nil {
		t.Skip("no QEMU:", err)
	}
	bin := filepath.Join(t.TempDir(), "vmexec")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

type vmResult struct {
	status         int
	stdout, stderr string
}

func runVM(t *testing.T, bin string, args ...string) vmResult {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	t.Logf("vmexec %q: status %d after %v", args, cmd.ProcessState.ExitCode(), time.Since(start).Round(time.Millisecond))
	return vmResult{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

func TestVM(t *testing.T) {
	bin := buildVMExec(t)
	cwd, _ := os.Getwd()

	t.Run("ExitStatusAndStreams", func(t *testing.T) {
		t.Parallel() // each boots its own VM
		r := runVM(t, bin, "-no-topology", "--", "/bin/sh", "-c", "echo hello; echo to-stderr >&2; echo world; exit 3")
		if r.status != 3 || r.stdout != "hello\nworld\n" || r.stderr != "to-stderr\n" {
			t.Errorf("got status %d, stdout %q, stderr %q; want 3, \"hello\\nworld\\n\", \"to-stderr\\n\"", r.status, r.stdout, r.stderr)
		}
	})
	t.Run("EnvironmentAndTopology", func(t *testing.T) {
		t.Parallel() // each boots its own VM
		// The accelerator named is the one the guest runs on: kvm-clock
		// is there under KVM only.
		script := `test "$DEVMEM_VM" = 1 && test "$VMEXEC_TEST_MARK" = carried && ` +
			`if grep -qw kvm-clock /sys/devices/system/clocksource/clocksource0/available_clocksource; ` +
			`then test "$DEVMEM_VM_ACCEL_USED" = kvm; else test "$DEVMEM_VM_ACCEL_USED" = tcg; fi && ` +
			`ip -n "$DEVMEM_PEER_NETNS" -brief addr show dev "$DEVMEM_PEER_IFNAME" | grep -q "$DEVMEM_PEER_ADDR4" && pwd`
		os.Setenv("VMEXEC_TEST_MARK", "carried")
		defer os.Unsetenv("VMEXEC_TEST_MARK")
		r := runVM(t, bin, "--", "/bin/sh", "-c", script)
		if r.status != 0 || r.stdout != cwd+"\n" {
			t.Errorf("got status %d, stdout %q, stderr %q; want 0 and the working directory %q", r.status, r.stdout, r.stderr, cwd)
		}
	})
	t.Run("KernelWarningFailsRun", func(t *testing.T) {
		t.Parallel() // each boots its own VM
		// A line in the kernel log that looks like a WARN splat must fail a
		// program that itself succeeded.
		r := runVM(t, bin, "-no-topology", "--", "/bin/sh", "-c", "echo '<4>WARNING: CPU: 0 PID: 1 at vmexec_test' > /dev/kmsg")
		if r.status == 0 || !strings.Contains(r.stderr, "kernel reported a problem") {
			t.Errorf("got status %d, stderr %q; want a failure naming the kernel problem", r.status, r.stderr)
		}
	})
	t.Run("TaintFailsRun", func(t *testing.T) {
		t.Parallel() // each boots its own VM
		// 512 is TAINT_WARN, what a WARN leaves behind.
		r := runVM(t, bin, "-no-topology", "--", "/bin/sh", "-c", "echo 512 > /proc/sys/kernel/tainted")
		if r.status == 0 || !strings.Contains(r.stderr, "taint changed") {
			t.Errorf("got status %d, stderr %q; want a failure naming the taint", r.status, r.stderr)
		}
	})
	t.Run("Timeout", func(t *testing.T) {
		t.Parallel() // each boots its own VM
		r := runVM(t, bin, "-no-topology", "-timeout", "10s", "--", "/bin/sleep", "600")
		if r.status != exitTimeout || !strings.Contains(r.stderr, "timed out") {
			t.Errorf("got status %d, stderr %q; want %d and a timeout report", r.status, r.stderr, exitTimeout)
		}
	})
}
