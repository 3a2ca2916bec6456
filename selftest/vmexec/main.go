//go:build linux

// Command vmexec runs a program inside a throwaway QEMU VM that boots the
// devmem test kernel on a read-only view of the host's root filesystem, with
// two linked netdevsim ports (one in the init netns, one in netns "peer").
//
// It is meant for go test -exec:
//
//	go test -tags vmtest -exec "go run github.com/devmem-go/devmem/selftest/vmexec" ./...
//
// and for running any program directly:
//
//	go run ./selftest/vmexec -- PROGRAM ARGS...
//
// The same binary is the VM's init: when it finds itself running as PID 1 it
// builds the guest environment, runs the program and reports back over a
// virtio serial port. See selftest/README.md.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

func main() {
	if os.Getpid() == 1 {
		guestMain() // never returns
	}
	os.Exit(hostMain(os.Args[1:]))
}

func hostMain(args []string) int {
	fs := flag.NewFlagSet("vmexec", flag.ContinueOnError)
	var opts hostOptions
	fs.StringVar(&opts.kernel, "kernel", "", "`bzImage` (or its directory) to boot; default $DEVMEM_KERNEL, else selftest/kernel/build.sh")
	fs.DurationVar(&opts.timeout, "timeout", 10*time.Minute, "kill the VM after this long (default: go test's -test.timeout plus a margin, else 10m)")
	fs.StringVar(&opts.accel, "accel", "", "QEMU accelerator: kvm, tcg or auto (default $DEVMEM_VM_ACCEL, else auto)")
	fs.IntVar(&opts.smp, "smp", 2, "number of guest CPUs")
	fs.StringVar(&opts.mem, "mem", "2G", "guest memory")
	fs.BoolVar(&opts.verbose, "v", false, "show the kernel console, guest harness messages and the QEMU command")
	fs.BoolVar(&opts.keep, "keep", false, "keep the temporary directory (job, sockets, console.log)")
	fs.BoolVar(&opts.noTopology, "no-topology", false, "skip the netdevsim/netns setup")
	pod := fs.String("pod", "", "also build a container network (`MODE` netns or userns): netkit pair into netns \"pod\", a leased queue, BPF redirects; see selftest.Pod")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: vmexec [flags] [--] PROGRAM [ARGS...]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *pod != "" {
		os.Setenv(podModeEnv, *pod) // the guest reads it from the job's environment
	}
	argv := fs.Args()
	if len(argv) == 0 {
		fs.Usage()
		return 2
	}
	timeoutSet := false
	fs.Visit(func(f *flag.Flag) { timeoutSet = timeoutSet || f.Name == "timeout" })
	if !timeoutSet {
		if d, ok := testTimeout(argv[1:]); ok {
			opts.timeout = d + timeoutMargin
		}
	}
	return runHost(opts, argv)
}

// timeoutMargin covers boot and shutdown on top of the test binary's own
// deadline, and stays under the minute go test waits before killing us.
const timeoutMargin = 30 * time.Second

// testTimeout finds go test's -test.timeout among a test binary's flags, so
// that the test's own timeout panic (with its goroutine dump) fires first.
func testTimeout(args []string) (time.Duration, bool) {
	for i, a := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if name != "test.timeout" || !strings.HasPrefix(a, "-") {
			continue
		}
		if !hasValue {
			if i+1 >= len(args) {
				return 0, false
			}
			value = args[i+1]
		}
		d, err := time.ParseDuration(value)
		if err != nil || d <= 0 {
			return 0, false
		}
		return d, true
	}
	return 0, false
}
