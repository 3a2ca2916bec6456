// Command ncdevmem is a Go counterpart of the Linux kernel's devmem TCP
// selftest tool (tools/testing/selftests/drivers/net/hw/ncdevmem.c), built
// on the github.com/devmem-go/devmem library. It takes the same flags with
// the same defaults:
//
//	ncdevmem -l -f eth0 -s 192.168.1.4 -p 5201 -v 7   # receive and validate
//	ncdevmem -f eth0 -s 192.168.1.4 -p 5201 < file    # send stdin from a TX dma-buf
//	ncdevmem -f eth0                                   # probe the NIC's devmem support
//
// Every change made to the NIC is undone on exit, also on SIGINT/SIGTERM.
// Exit status: 0 ok, 1 data or validation error, 2 usage or setup error.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal, a second one kills at once (the default
	// action), in case restoring hangs.
	context.AfterFunc(ctx, stop)
	os.Exit(run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is the whole program, minus process-level signal handling.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	o, err := parseArgs(args)
	if o != nil && o.Help {
		fmt.Fprint(stdout, usage())
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ncdevmem: %v\n", err)
		fmt.Fprintf(stderr, "run 'ncdevmem --help' for usage\n")
		return exitSetup
	}
	env := &runEnv{opts: o, stdin: stdin, stdout: stdout, stderr: stderr,
		sum: &summary{Mode: o.Mode.String(), IfName: o.IfName, Validation: "off"}}
	env.progress = isTerminal(stderr)
	start := time.Now()
	err = runMode(ctx, env)
	if err == nil && ctx.Err() != nil {
		err = &dataError{fmt.Errorf("interrupted: %w", context.Cause(ctx))}
	}
	env.sum.finish(time.Since(start), err)
	if o.JSON {
		env.sum.writeJSON(stdout)
	} else {
		env.sum.writeText(stderr)
	}
	return env.sum.Exit
}

// runEnv is what the modes share.
type runEnv struct {
	opts           *options
	stdin          io.Reader
	stdout, stderr io.Writer
	progress       bool // stderr is a terminal: draw a live status line
	sum            *summary
}

func (e *runEnv) logf(format string, args ...any) {
	fmt.Fprintf(e.stderr, format+"\n", args...)
}
