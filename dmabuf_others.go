//go:build !linux

package devmem

import "runtime"

func newUDMABuf(size int64, cfg UDMABufConfig) (*DMABuf, error) {
	return nil, unsupportedOnOS("udmabuf create")
}

func openDMABuf(fd int) (*DMABuf, error) {
	return nil, unsupportedOnOS("open dma-buf")
}

func setDMABufName(fd int, name string) error { return unsupportedOnOS("dma-buf set name") }

func dmabufSync(fd int, flags SyncFlags) error { return unsupportedOnOS("dma-buf sync") }

func mmapDMABuf(fd int, size int64, exporter string) ([]byte, bool, error) {
	return nil, false, unsupportedOnOS("mmap dma-buf")
}

func (b *DMABuf) close() error { return nil }

// unsupportedOnOS is the error of every dma-buf and transmit entry point
// outside Linux.
func unsupportedOnOS(op string) error {
	return &Error{Op: op, Err: ErrNotSupported, Message: "devmem TCP needs Linux (this is " + runtime.GOOS + "/" + runtime.GOARCH + ")"}
}
