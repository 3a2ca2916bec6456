//go:build linux

package main

import (
	"encoding/json"
	"fmt"
	"os"
)

// jobEnvVar is the kernel command-line parameter that carries the path of the
// job file to the guest. The kernel hands unknown name=value parameters whose
// name has no dot to init as environment variables.
const jobEnvVar = "VMEXEC_JOB"

// job is everything the guest half needs to reproduce the caller's process:
// written by the host next to the VM's sockets, read by PID 1 in the guest
// through the shared root filesystem.
type job struct {
	Argv     []string `json:"argv"`
	Env      []string `json:"env"`
	Dir      string   `json:"dir"`
	Topology bool     `json:"topology"`
	// KernelDir is the directory the kernel came from; the kernel's own C
	// ncdevmem sits next to bzImage when the kernel build made one.
	KernelDir string `json:"kernel_dir"`
	Verbose   bool   `json:"verbose"`
}

func writeJob(path string, j *job) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func readJob(path string) (*job, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var j job
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parse job %s: %w", path, err)
	}
	if len(j.Argv) == 0 {
		return nil, fmt.Errorf("job %s: no program to run", path)
	}
	return &j, nil
}

// result is the guest's final word, sent as the payload of the exit frame.
type result struct {
	// ExitStatus is the program's exit code, or 128+signal when it was killed
	// by a signal, or -1 when it never ran.
	ExitStatus int    `json:"exit_status"`
	Signal     string `json:"signal,omitempty"`
	// Error explains why the guest could not run the program at all
	// (mount, topology or exec failure).
	Error string `json:"error,omitempty"`
	// TaintBefore and TaintAfter are /proc/sys/kernel/tainted when init
	// started and after the program exited.
	TaintBefore uint64 `json:"taint_before"`
	TaintAfter  uint64 `json:"taint_after"`
}
