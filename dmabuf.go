package devmem

import (
	"io"
	"sync"
)

// DMABuf is a dma-buf: a file descriptor for a buffer that devices can DMA
// into, such as a udmabuf (system memory) or exported GPU memory. A Binding
// takes its own reference to the buffer, so a DMABuf may be closed after
// bind-rx or bind-tx; keep it (and its mapping) open to read payload.
//
// DMABuf implements io.ReaderAt and io.WriterAt through a CPU mapping of the
// buffer, bracketing every access with DMA_BUF_IOCTL_SYNC so the exporter can
// keep caches coherent with the device.
//
// A DMABuf is safe for concurrent use, Close included: Close waits for the
// ReadAt, WriteAt, Sync and bind calls in progress, and everything after it
// fails with an error matching net.ErrClosed. Only the slice returned by Map
// is outside that protection (see Map).
type DMABuf struct {
	fd       int // -1 once closed; changed only with life held for writing
	size     int64
	exporter string

	// life is read-held by every operation that uses fd or the mapping
	// and write-held by Close, so Close never closes the fd or unmaps
	// under an operation in progress (a reused fd number, or a copy into
	// unmapped memory).
	life   sync.RWMutex
	closed bool // guarded by life

	mu       sync.Mutex // guards the fields below, under life read-held
	name     string
	mem      []byte // mmap of the whole buffer, once Map was called
	readOnly bool   // the mapping is PROT_READ only (the fd was not writable)
}

var (
	_ io.ReaderAt = &DMABuf{}
	_ io.WriterAt = &DMABuf{}
	_ io.Closer   = &DMABuf{}
)

// acquire read-holds b's lifetime and returns its fd, or fails with an error
// matching net.ErrClosed. Every successful acquire needs a release.
func (b *DMABuf) acquire(op string) (int, error) {
	b.life.RLock()
	if b.closed || b.fd < 0 {
		b.life.RUnlock()
		return -1, errClosed(op)
	}
	return b.fd, nil
}

func (b *DMABuf) release() { b.life.RUnlock() }

// FD returns the dma-buf file descriptor. It stays owned by the DMABuf and is
// -1 after Close; a number read before Close may name another file after it.
func (b *DMABuf) FD() int {
	b.life.RLock()
	defer b.life.RUnlock()
	return b.fd
}

// Size returns the size of the buffer in bytes.
func (b *DMABuf) Size() int64 { return b.size }

// Name returns the buffer's debug name (DMA_BUF_SET_NAME), as read from
// /proc/self/fdinfo when the DMABuf was made or as last set by SetName. It is
// empty when the buffer has none.
func (b *DMABuf) Name() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.name
}

// Exporter returns the name of the kernel driver that exported the buffer
// (fdinfo's exp_name), for example "udmabuf". It is empty when
// /proc/self/fdinfo could not be read.
func (b *DMABuf) Exporter() string { return b.exporter }

// dmabufNameMax is the longest name SetName accepts, in bytes: the kernel's
// DMA_BUF_NAME_LEN (32) less the terminating NUL.
const dmabufNameMax = 31

// SetName sets the buffer's debug name, shown in /proc/<pid>/fdinfo and
// /sys/kernel/debug/dma_buf/bufinfo. The name must be at most 31
// bytes (the kernel's DMA_BUF_NAME_LEN less the NUL) and contain no NUL.
func (b *DMABuf) SetName(name string) error {
	if len(name) > dmabufNameMax {
		return &Error{Op: "dma-buf set name", Errno: _EINVAL, Err: _EINVAL,
			Message: "name is " + itoa(uint64(len(name))) + " bytes; at most 31 fit (DMA_BUF_NAME_LEN 32 with the NUL)"}
	}
	for i := 0; i < len(name); i++ {
		if name[i] == 0 {
			return &Error{Op: "dma-buf set name", Errno: _EINVAL, Err: _EINVAL, Message: "name contains a NUL byte"}
		}
	}
	fd, err := b.acquire("dma-buf set name")
	if err != nil {
		return err
	}
	defer b.release()
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := setDMABufName(fd, name); err != nil {
		return err
	}
	b.name = name
	return nil
}

// Close unmaps the buffer and closes its file descriptor, after waiting for
// the ReadAt, WriteAt, Sync and bind calls in progress. Slices returned by Map
// must not be used afterwards. Close is idempotent.
func (b *DMABuf) Close() error {
	b.life.Lock()
	defer b.life.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	return b.close()
}

// SyncFlags are the DMA_BUF_IOCTL_SYNC flags: a direction (SyncRead,
// SyncWrite or both) combined with SyncStart or SyncEnd.
type SyncFlags uint64

const (
	// SyncStart begins CPU access (DMA_BUF_SYNC_START, 0).
	SyncStart SyncFlags = 0
	// SyncRead says the CPU reads the buffer (DMA_BUF_SYNC_READ).
	SyncRead SyncFlags = 1 << 0
	// SyncWrite says the CPU writes the buffer (DMA_BUF_SYNC_WRITE).
	SyncWrite SyncFlags = 1 << 1
	// SyncRW is SyncRead|SyncWrite (DMA_BUF_SYNC_RW).
	SyncRW = SyncRead | SyncWrite
	// SyncEnd ends CPU access (DMA_BUF_SYNC_END).
	SyncEnd SyncFlags = 1 << 2
)

// String returns the flags as "start" or "end" followed by the direction
// ("|read", "|write", "|rw"), as in "start|rw"; unknown bits are shown as
// "|unknown(N)".
func (f SyncFlags) String() string {
	s := "start"
	if f&SyncEnd != 0 {
		s = "end"
	}
	switch f & SyncRW {
	case SyncRead:
		s += "|read"
	case SyncWrite:
		s += "|write"
	case SyncRW:
		s += "|rw"
	}
	if f&^(SyncRW|SyncEnd) != 0 {
		s += "|unknown(" + itoa(uint64(f&^(SyncRW|SyncEnd))) + ")"
	}
	return s
}

// validate rejects what the kernel rejects with a bare EINVAL
// (dma-buf.c:555-570): unknown bits, and no direction. ncdevmem's RX path
// passes a bare DMA_BUF_SYNC_START and silently ignores the EINVAL; catching it
// here turns that mistake into a clear error.
func (f SyncFlags) validate() error {
	if f&^(SyncRW|SyncEnd) != 0 {
		return &Error{Op: "dma-buf sync", Errno: _EINVAL, Err: _EINVAL,
			Message: "unknown sync flags " + f.String()}
	}
	if f&SyncRW == 0 {
		return &Error{Op: "dma-buf sync", Errno: _EINVAL, Err: _EINVAL,
			Message: "sync flags need a direction (SyncRead, SyncWrite or SyncRW)"}
	}
	return nil
}

// Sync issues DMA_BUF_IOCTL_SYNC with flags. Use SyncStart|dir before and
// SyncEnd|dir after touching the mapping; the direction bits are mandatory.
func (b *DMABuf) Sync(flags SyncFlags) error {
	if err := flags.validate(); err != nil {
		return err
	}
	fd, err := b.acquire("dma-buf sync")
	if err != nil {
		return err
	}
	defer b.release()
	return dmabufSync(fd, flags)
}

// BeginCPUAccess starts a CPU access bracket in direction dir (SyncRead,
// SyncWrite or SyncRW), for batching many accesses to the mapping under one
// pair of syncs. End it with EndCPUAccess and the same dir.
func (b *DMABuf) BeginCPUAccess(dir SyncFlags) error {
	if dir&^SyncRW != 0 {
		return &Error{Op: "dma-buf sync", Errno: _EINVAL, Err: _EINVAL,
			Message: "BeginCPUAccess takes only a direction (SyncRead, SyncWrite or SyncRW)"}
	}
	return b.Sync(SyncStart | dir)
}

// EndCPUAccess ends a bracket started by BeginCPUAccess(dir).
func (b *DMABuf) EndCPUAccess(dir SyncFlags) error {
	if dir&^SyncRW != 0 {
		return &Error{Op: "dma-buf sync", Errno: _EINVAL, Err: _EINVAL,
			Message: "EndCPUAccess takes only a direction (SyncRead, SyncWrite or SyncRW)"}
	}
	return b.Sync(SyncEnd | dir)
}

// Map maps the whole buffer into memory (MAP_SHARED, read-write, or read-only
// when the file descriptor was opened read-only) and returns the mapping. The
// mapping is made once and cached; Close unmaps it. Bracket accesses with
// BeginCPUAccess/EndCPUAccess, or use ReadAt and WriteAt which do so.
//
// The slice is memory outside the Go heap and lives exactly until Close:
// touching it after Close, or while Close runs in another goroutine, faults
// (SIGSEGV), and Close cannot wait for such accesses as it does for ReadAt
// and WriteAt. Close a DMABuf only once nothing uses its mapping, or use
// ReadAt and WriteAt where accesses and Close may overlap.
//
// Not every exporter supports mmap (GPU memory usually does not); those
// report an error wrapping the kernel's errno.
func (b *DMABuf) Map() ([]byte, error) {
	fd, err := b.acquire("mmap dma-buf")
	if err != nil {
		return nil, err
	}
	defer b.release()
	mem, _, err := b.mapping(fd)
	return mem, err
}

// mapping returns the mapping, making it on first use. The caller holds
// b.life for reading.
func (b *DMABuf) mapping(fd int) (mem []byte, readOnly bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mem == nil {
		if b.mem, b.readOnly, err = mmapDMABuf(fd, b.size, b.exporter); err != nil {
			return nil, false, err
		}
	}
	return b.mem, b.readOnly, nil
}

// ReadAt copies len(p) bytes at offset off out of the buffer, bracketed by
// SyncStart|SyncRead and SyncEnd|SyncRead. Like any io.ReaderAt it returns
// io.EOF when the buffer ends before p is full. Close waits for it.
func (b *DMABuf) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &Error{Op: "dma-buf read", Errno: _EINVAL, Err: _EINVAL, Message: "negative offset"}
	}
	fd, err := b.acquire("dma-buf read")
	if err != nil {
		return 0, err
	}
	defer b.release()
	mem, _, err := b.mapping(fd)
	if err != nil {
		return 0, err
	}
	if off >= int64(len(mem)) {
		return 0, io.EOF
	}
	if err := dmabufSync(fd, SyncStart|SyncRead); err != nil {
		return 0, err
	}
	n := copy(p, mem[off:])
	if err := dmabufSync(fd, SyncEnd|SyncRead); err != nil {
		return n, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt copies p into the buffer at offset off, bracketed by
// SyncStart|SyncWrite and SyncEnd|SyncWrite. Bytes that do not fit are not
// written and the error wraps ErrOutOfRange. Close waits for it.
func (b *DMABuf) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, &Error{Op: "dma-buf write", Errno: _EINVAL, Err: _EINVAL, Message: "negative offset"}
	}
	fd, err := b.acquire("dma-buf write")
	if err != nil {
		return 0, err
	}
	defer b.release()
	mem, readOnly, err := b.mapping(fd)
	if err != nil {
		return 0, err
	}
	if readOnly {
		return 0, &Error{Op: "dma-buf write", Errno: _EBADF, Err: _EBADF, Message: "the dma-buf fd is read-only"}
	}
	if off > int64(len(mem)) {
		return 0, &Error{Op: "dma-buf write", Err: ErrOutOfRange}
	}
	if err := dmabufSync(fd, SyncStart|SyncWrite); err != nil {
		return 0, err
	}
	n := copy(mem[off:], p)
	if err := dmabufSync(fd, SyncEnd|SyncWrite); err != nil {
		return n, err
	}
	if n < len(p) {
		return n, &Error{Op: "dma-buf write", Err: ErrOutOfRange,
			Message: itoa(uint64(len(p)-n)) + " bytes past the end of a " + itoa(uint64(len(mem))) + "-byte buffer"}
	}
	return n, nil
}

// UDMABufConfig holds the options of NewUDMABuf.
type UDMABufConfig struct {
	// HugePageSize, when non-zero, backs the buffer with hugetlbfs pages of
	// this size (a power of two, for example 2 MiB), as bind-rx with an
	// rx-page-size above the base page size needs: the kernel wants each
	// scatter-gather entry aligned to the rx-page-size. The size is then
	// rounded up to a multiple of HugePageSize, and the pages must have been
	// reserved (/proc/sys/vm/nr_hugepages or
	// /sys/kernel/mm/hugepages/hugepages-<size>kB/nr_hugepages).
	HugePageSize int64
	// Name, when set, is given to the buffer with SetName.
	Name string
}

// NewUDMABuf allocates size bytes of system memory as a udmabuf: a memfd
// sealed against shrinking, turned into a dma-buf by /dev/udmabuf. The size
// is rounded up to a multiple of the page size; Size reports the result. cfg
// may be nil.
//
// Sizes the kernel cannot serve are refused before it is asked, with EINVAL
// (above the udmabuf size_limit_mb module parameter, with how to raise it, or
// above the page count one udmabuf can describe) or ENOMEM (above the
// machine's memory). Errors match os.ErrNotExist when /dev/udmabuf is missing
// (load the udmabuf module or enable CONFIG_UDMABUF) and os.ErrPermission
// when it is not accessible.
func NewUDMABuf(size int64, cfg *UDMABufConfig) (*DMABuf, error) {
	var c UDMABufConfig
	if cfg != nil {
		c = *cfg
	}
	if size <= 0 {
		return nil, &Error{Op: "udmabuf create", Errno: _EINVAL, Err: _EINVAL,
			Message: "size must be positive"}
	}
	if hp := c.HugePageSize; hp != 0 && (hp < 0 || hp&(hp-1) != 0) {
		return nil, &Error{Op: "udmabuf create", Errno: _EINVAL, Err: _EINVAL,
			Message: "HugePageSize " + itoa(uint64(hp)) + " is not a power of two"}
	}
	if len(c.Name) > dmabufNameMax {
		return nil, &Error{Op: "udmabuf create", Errno: _EINVAL, Err: _EINVAL,
			Message: "name longer than 31 bytes"}
	}
	return newUDMABuf(size, c)
}

// OpenDMABuf wraps an existing dma-buf file descriptor, for example one
// exported by a GPU driver. The DMABuf takes ownership of fd and closes it on
// Close; on error fd is left open and stays the caller's. It fails with an
// error wrapping ErrNotDMABuf when fd is not a dma-buf.
func OpenDMABuf(fd int) (*DMABuf, error) {
	if fd < 0 {
		return nil, &Error{Op: "open dma-buf", Errno: _EBADF, Err: _EBADF}
	}
	return openDMABuf(fd)
}

// roundUp rounds n up to a multiple of align (a power of two), reporting
// overflow.
func roundUp(n, align int64) (int64, bool) {
	r := (n + align - 1) &^ (align - 1)
	return r, r >= n
}
