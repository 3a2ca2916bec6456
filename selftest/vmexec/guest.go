//go:build linux

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// guestMain is PID 1 in the VM. Anything it cannot report over the control
// port goes to the console (fd 2 is /dev/console, i.e. ttyS0), which the
// host shows when no exit frame arrives.
func guestMain() {
	defer powerOff()
	j, err := readJob(os.Getenv(jobEnvVar))
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmexec: guest: %v\n", err)
		return
	}
	if err := setupRoot(); err != nil {
		fmt.Fprintf(os.Stderr, "vmexec: guest: %v\n", err)
		return
	}
	port, err := openControlPort()
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmexec: guest: %v\n", err)
		return
	}
	fw := &frameWriter{w: port}
	res := runJob(j, fw)
	b, _ := json.Marshal(res)
	if err := fw.writeFrame(frameExit, b); err != nil {
		fmt.Fprintf(os.Stderr, "vmexec: guest: sending the exit frame: %v\n", err)
	}
	port.Close()
}

func runJob(j *job, fw *frameWriter) result {
	res := result{ExitStatus: -1, TaintBefore: readTaint()}
	logf := func(format string, args ...any) {
		fw.writeFrame(frameLog, []byte(fmt.Sprintf(format, args...)))
	}
	logf("root ready (uptime %s)", uptime())
	fail := func(err error) result {
		res.Error = err.Error()
		res.TaintAfter = readTaint()
		return res
	}

	// The program sees the caller's environment; lookups of helper
	// binaries (ip) use the caller's PATH too.
	os.Clearenv()
	for _, kv := range j.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			os.Setenv(k, v)
		}
	}
	env := append([]string(nil), j.Env...)
	env = append(env, "DEVMEM_VM=1")
	if err := setLinkUp("lo"); err != nil {
		return fail(fmt.Errorf("loopback: %w", err))
	}
	if j.Topology {
		topo, err := setupTopology(logf)
		if err != nil {
			return fail(fmt.Errorf("topology: %w", err))
		}
		env = append(env, topo.environ()...)
		logf("topology ready (uptime %s)", uptime())
	}
	if nc := filepath.Join(j.KernelDir, "ncdevmem"); fileExists(nc) {
		env = append(env, "DEVMEM_C_NCDEVMEM="+nc)
	}

	path, err := exec.LookPath(j.Argv[0])
	if err != nil && !errors.Is(err, exec.ErrDot) {
		return fail(err)
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   j.Argv,
		Env:    env,
		Dir:    j.Dir,
		Stdout: fw.stream(frameStdout),
		Stderr: fw.stream(frameStderr),
		// A background child that keeps the output pipes open must not
		// hold up the exit report forever.
		WaitDelay:   2 * time.Second,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	err = cmd.Wait()
	unix.Kill(-cmd.Process.Pid, unix.SIGKILL) // leftovers of the program's process group
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case !ok:
		return fail(fmt.Errorf("wait: %v", err))
	case ws.Signaled():
		res.ExitStatus = 128 + int(ws.Signal())
		res.Signal = ws.Signal().String()
	default:
		res.ExitStatus = ws.ExitStatus()
	}
	logf("program exited with status %d (uptime %s)", res.ExitStatus, uptime())
	res.TaintAfter = readTaint()
	return res
}

// openControlPort finds the virtio serial port the host named
// controlPortName. Ports are announced asynchronously, so wait a little.
func openControlPort() (*os.File, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		ports, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, p := range ports {
			b, err := os.ReadFile(p)
			if err == nil && strings.TrimSpace(string(b)) == controlPortName {
				return os.OpenFile("/dev/"+filepath.Base(filepath.Dir(p)), os.O_RDWR, 0)
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no virtio serial port named %q", controlPortName)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func powerOff() {
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	// Without ACPI power-off returns or halts; a reset ends QEMU too
	// because it runs with -no-reboot.
	unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
	select {}
}

func uptime() string {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0] + "s"
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
