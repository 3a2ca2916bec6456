//go:build !linux

package main

// vmexec boots Linux VMs with Linux host tools (QEMU with 9p, netns);
// elsewhere it only says so.

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "vmexec: needs a Linux host (QEMU, 9p, netns)")
	os.Exit(125)
}
