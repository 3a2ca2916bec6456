package devmem

// DMABuf is a dma-buf: a file descriptor for a buffer that devices can DMA
// into, such as a udmabuf (system memory) or exported GPU memory. A Binding
// takes its own reference to the buffer, so a DMABuf may be closed after
// bind-rx or bind-tx; keep it (and its mapping) open to read payload.
type DMABuf struct {
	fd   int
	size int64
	name string
	mem  []byte // mmap of the whole buffer, once Map was called
}

// FD returns the dma-buf file descriptor. It stays owned by the DMABuf.
func (b *DMABuf) FD() int { return b.fd }

// Size returns the size of the buffer in bytes.
func (b *DMABuf) Size() int64 { return b.size }
