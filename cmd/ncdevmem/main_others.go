//go:build !linux

package main

import (
	"context"
	"io"
)

func isTerminal(io.Writer) bool { return false }

func runMode(context.Context, *runEnv) error {
	return setupf("devmem TCP needs Linux")
}
