//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Exit statuses of vmexec itself, chosen to stay clear of ordinary test
// failures (1) and of the program's own codes where possible.
const (
	exitTimeout = 124 // the run exceeded -timeout
	exitHarness = 125 // the VM could not run the program or did not report
)

type hostOptions struct {
	kernel     string
	timeout    time.Duration
	accel      string
	smp        int
	mem        string
	verbose    bool
	keep       bool
	noTopology bool
}

// vmRun is one boot: the QEMU process and what came back from it.
type vmRun struct {
	opts     hostOptions
	klog     kernelLog
	guestLog bytes.Buffer // harness messages from the guest
	result   *result
	qemuErr  bytes.Buffer
}

func runHost(opts hostOptions, argv []string) int {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT)
	defer signal.Stop(signals)

	kernel, err := findKernel(ctx, opts.kernel, opts.verbose)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmexec: %v\n", err)
		return exitHarness
	}
	dir, err := os.MkdirTemp("", "vmexec-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmexec: %v\n", err)
		return exitHarness
	}
	if opts.keep {
		fmt.Fprintf(os.Stderr, "vmexec: keeping %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	r := &vmRun{opts: opts}
	status, err := r.boot(ctx, kernel, dir, argv, signals)
	if err != nil {
		fmt.Fprintf(os.Stderr, "vmexec: %v\n", err)
		r.report()
	}
	return status
}

func (r *vmRun) boot(ctx context.Context, kernel, dir string, argv []string, signals <-chan os.Signal) (int, error) {
	self, err := os.Executable()
	if err != nil {
		return exitHarness, err
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return exitHarness, err
	}
	cwd, err := os.Getwd()
	if err != nil {
		return exitHarness, err
	}
	if strings.Contains(argv[0], "/") && !filepath.IsAbs(argv[0]) {
		argv[0] = filepath.Join(cwd, argv[0])
	}
	accel := pickAccel(r.opts.accel, kernel)
	j := &job{
		Argv: argv,
		// The program learns which accelerator runs it: a TCG guest's
		// timings are an emulator's.
		Env:       append(os.Environ(), accelUsedEnv+"="+accel),
		Dir:       cwd,
		Topology:  !r.opts.noTopology,
		KernelDir: filepath.Dir(kernel),
		Verbose:   r.opts.verbose,
	}
	cfg := vmConfig{
		Kernel:      kernel,
		Init:        self,
		JobPath:     filepath.Join(dir, "job"),
		ConsoleSock: filepath.Join(dir, "console.sock"),
		ControlSock: filepath.Join(dir, "control.sock"),
		Accel:       accel,
		SMP:         r.opts.smp,
		Mem:         r.opts.mem,
	}
	if err := writeJob(cfg.JobPath, j); err != nil {
		return exitHarness, err
	}
	if r.klog.file, err = os.Create(filepath.Join(dir, "console.log")); err != nil {
		return exitHarness, err
	}
	defer r.klog.file.Close()
	if r.opts.verbose {
		r.klog.echo = os.Stderr
	}
	consoleLn, err := net.Listen("unix", cfg.ConsoleSock)
	if err != nil {
		return exitHarness, err
	}
	defer consoleLn.Close()
	controlLn, err := net.Listen("unix", cfg.ControlSock)
	if err != nil {
		return exitHarness, err
	}
	defer controlLn.Close()

	args, err := qemuArgs(cfg)
	if err != nil {
		return exitHarness, err
	}
	qemu := exec.CommandContext(ctx, qemuBinary(), args...)
	qemu.Stdin = nil
	qemu.Stdout = &r.qemuErr
	qemu.Stderr = &r.qemuErr
	if r.opts.verbose {
		fmt.Fprintf(os.Stderr, "vmexec: %s %s\n", qemu.Path, shellQuote(args))
		qemu.Stderr = io.MultiWriter(&r.qemuErr, os.Stderr)
	}
	// QEMU must not outlive vmexec, however vmexec dies (go test kills -exec
	// programs that overrun its own timeout).
	qemu.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	if err := qemu.Start(); err != nil {
		return exitHarness, err
	}
	qemuDone := make(chan error, 1)
	go func() { qemuDone <- qemu.Wait() }()

	consoleDone := make(chan struct{})
	go func() {
		defer close(consoleDone)
		if c, err := consoleLn.Accept(); err == nil {
			r.klog.consume(c)
			c.Close()
		}
	}()
	framesDone := make(chan error, 1)
	go func() {
		c, err := controlLn.Accept()
		if err != nil {
			framesDone <- err
			return
		}
		defer c.Close()
		framesDone <- r.readFrames(c, start)
	}()

	timeout := time.NewTimer(r.opts.timeout)
	defer timeout.Stop()
	var qemuExit error
	qemuExited := false
	select {
	case <-framesDone:
		// The exit frame (or a broken channel): give the guest a moment
		// to power off by itself before QEMU is stopped for it.
		select {
		case qemuExit = <-qemuDone:
		case <-time.After(15 * time.Second):
			qemu.Process.Kill()
			qemuExit = <-qemuDone
		}
		qemuExited = true
	case qemuExit = <-qemuDone:
		qemuExited = true
		select {
		case <-framesDone:
		case <-time.After(2 * time.Second):
		}
	case <-timeout.C:
		qemu.Process.Kill()
		<-qemuDone
		waitBriefly(consoleDone)
		return exitTimeout, fmt.Errorf("timed out after %v; killed the VM", r.opts.timeout)
	case sig := <-signals:
		qemu.Process.Kill()
		<-qemuDone
		waitBriefly(consoleDone)
		return exitHarness, fmt.Errorf("received %v; killed the VM", sig)
	}
	waitBriefly(consoleDone)
	if r.opts.verbose {
		fmt.Fprintf(os.Stderr, "vmexec: VM ran for %v (accel %s)\n", time.Since(start).Round(time.Millisecond), cfg.Accel)
	}
	return r.verdict(qemuExited, qemuExit)
}

func waitBriefly(done <-chan struct{}) {
	select {
	case <-done:
	case <-time.After(2 * time.Second):
	}
}

// readFrames streams the program's output to vmexec's own stdout and stderr
// until the exit frame arrives or the channel closes.
func (r *vmRun) readFrames(c io.Reader, start time.Time) error {
	for {
		kind, payload, err := readFrame(c)
		if err != nil {
			return err
		}
		switch kind {
		case frameStdout:
			os.Stdout.Write(payload)
		case frameStderr:
			os.Stderr.Write(payload)
		case frameLog:
			line := fmt.Sprintf("[guest +%.3fs] %s", time.Since(start).Seconds(), bytes.TrimRight(payload, "\n"))
			r.guestLog.WriteString(line + "\n")
			if r.opts.verbose {
				fmt.Fprintln(os.Stderr, line)
			}
		case frameExit:
			var res result
			if err := json.Unmarshal(payload, &res); err != nil {
				return fmt.Errorf("bad exit frame: %w", err)
			}
			r.result = &res
			return nil
		default:
			return fmt.Errorf("unknown frame kind %q", kind)
		}
	}
}

// verdict turns what came back into vmexec's exit status. The program's
// status counts only if the guest reported it and the kernel stayed clean.
func (r *vmRun) verdict(qemuExited bool, qemuExit error) (int, error) {
	res := r.result
	if res == nil {
		reason := "the VM stopped without reporting the program's exit status"
		if p := r.klog.firstProblem(); p != "" {
			reason += "; kernel: " + p
		}
		if qemuExit != nil {
			reason += fmt.Sprintf(" (qemu: %v)", qemuExit)
		}
		return exitHarness, errors.New(reason)
	}
	if res.Error != "" {
		return exitHarness, fmt.Errorf("guest: %s", res.Error)
	}
	problem := r.klog.firstProblem()
	if problem == "" && res.TaintAfter != res.TaintBefore {
		problem = fmt.Sprintf("kernel taint changed from %d to %d", res.TaintBefore, res.TaintAfter)
	}
	if problem != "" {
		status := res.ExitStatus
		if status == 0 {
			status = 1
		}
		return status, fmt.Errorf("kernel reported a problem during the run: %s", problem)
	}
	return res.ExitStatus, nil
}

// report prints what helps explain a failed run: guest harness messages,
// QEMU's own output and the tail of the kernel console.
func (r *vmRun) report() {
	if r.guestLog.Len() > 0 && !r.opts.verbose {
		fmt.Fprintf(os.Stderr, "--- vmexec guest log ---\n%s", r.guestLog.String())
	}
	if r.qemuErr.Len() > 0 && !r.opts.verbose {
		fmt.Fprintf(os.Stderr, "--- qemu output ---\n%s\n", bytes.TrimSpace(r.qemuErr.Bytes()))
	}
	if !r.opts.verbose {
		lines := r.klog.lastLines()
		fmt.Fprintf(os.Stderr, "--- kernel console (last %d lines) ---\n%s\n", len(lines), strings.Join(lines, "\n"))
	}
}

func qemuBinary() string {
	if q := os.Getenv("DEVMEM_QEMU"); q != "" {
		return q
	}
	return "qemu-system-x86_64"
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if strings.ContainsAny(a, " \t\"'$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
