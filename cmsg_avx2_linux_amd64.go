//go:build linux

package devmem

import (
	"unsafe"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// The assembly hard-codes the header it expects and the frag kind it
// writes; these fail the build if the constants ever differ.
var (
	_ = [1]struct{}{}[dmabufLevelType-0x4f00000001]
	_ = [1]struct{}{}[FragDMABuf-2]
	_ = [1]struct{}{}[unix.SOL_SOCKET-1]
)

//go:noescape
func dmabufRunAVX2(src, dst unsafe.Pointer, n int) int

func init() {
	if cpu.X86.HasAVX2 {
		dmabufRun = dmabufRunAVX2
	}
}
