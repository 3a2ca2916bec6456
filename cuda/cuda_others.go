//go:build !linux || android || !(amd64 || arm64)

package cuda

import (
	"fmt"
	"runtime"

	"github.com/devmem-go/devmem"
)

// loadDriver fails: dma-buf export is a Linux feature, and purego loads
// libraries without cgo only on linux/amd64 and linux/arm64 (where the
// NVIDIA driver exists).
func loadDriver(name string) (*driver, error) {
	return nil, fmt.Errorf("cuda: %s: dma-buf export is not available on %s/%s: %w",
		name, runtime.GOOS, runtime.GOARCH, devmem.ErrNotSupported)
}

func wrapDMABuf(fd int) (*devmem.DMABuf, error) {
	return nil, fmt.Errorf("cuda: dma-buf fd %d: %w", fd, devmem.ErrNotSupported)
}
