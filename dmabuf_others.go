//go:build !linux

package devmem

func newUDMABuf(size int64, cfg UDMABufConfig) (*DMABuf, error) {
	return nil, errNotSupportedOS("udmabuf create")
}

func openDMABuf(fd int) (*DMABuf, error) {
	return nil, errNotSupportedOS("open dma-buf")
}

func setDMABufName(fd int, name string) error { return errNotSupportedOS("dma-buf set name") }

func dmabufSync(fd int, flags SyncFlags) error { return errNotSupportedOS("dma-buf sync") }

func mmapDMABuf(fd int, size int64, exporter string) ([]byte, bool, error) {
	return nil, false, errNotSupportedOS("mmap dma-buf")
}

func (b *DMABuf) close() error { return nil }
