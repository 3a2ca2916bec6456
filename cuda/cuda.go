// Package cuda exports NVIDIA GPU memory as a [devmem.DMABuf], so that a
// NIC can receive TCP payload straight into (or send it from) GPU memory
// with devmem TCP.
//
// The returned DMABuf is used exactly like a udmabuf: pass it to bind-rx or
// bind-tx, read frag offsets relative to it. Frags cannot be read through the
// CPU; copy them with [Memory.CopyToHost] (to validate them in tests) or
// consume them with GPU code.
//
// The package loads libcuda.so.1 at run time (github.com/ebitengine/purego),
// so it builds with CGO_ENABLED=0 and on machines without CUDA. Where the
// library, a GPU or dma-buf export is missing, the functions return errors
// that match errors.Is(err, devmem.ErrNotSupported). Outside linux/amd64 and
// linux/arm64 every function returns such an error.
//
// Export needs the NVIDIA open GPU kernel modules (Turing or newer, the
// default flavour since driver 560) and CUDA 11.7 or later; see
// [Device.DMABufSupported]. Ranges must be aligned to the host page size.
//
// # Threads
//
// A CUDA context is current per OS thread, while goroutines move between
// threads. Every call into the driver therefore locks the goroutine to its
// thread, makes the device's primary context current, and restores the
// thread's previous context afterwards; callers need not manage contexts,
// and cgo code sharing the thread keeps its own.
package cuda

import (
	"fmt"
	"math"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/devmem-go/devmem"
)

// libraryName is the CUDA driver library. The unversioned libcuda.so comes
// only with development packages, so the runtime name is loaded.
const libraryName = "libcuda.so.1"

// Driver API enumerations used here (cuda.h).
const (
	attrDMABufSupported           = 124 // CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED
	pointerAttrContext            = 1   // CU_POINTER_ATTRIBUTE_CONTEXT
	pointerAttrSyncMemops         = 6   // CU_POINTER_ATTRIBUTE_SYNC_MEMOPS
	pointerAttrDeviceOrdinal      = 9   // CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL
	handleTypeDMABufFD            = 1   // CU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD
	rangeFlagDMABufMappingPCIe    = 1   // CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE
	exportOp                      = "cuMemGetHandleForAddressRange"
	deviceNameLength              = 256
	pciBusIDLength                = 32 // "0000:00:00.0" plus room, as cuda.h suggests 13+
	minimumExportDriverVersionMsg = "dma-buf export needs CUDA 11.7 or later"
)

// driver holds the libcuda entry points. The function fields are filled by
// loadDriver; the _v2 symbols are bound where cuda.h maps the plain name to
// them.
type driver struct {
	cuInit                        func(flags uint32) Result
	cuDriverGetVersion            func(version *int32) Result
	cuGetErrorName                func(code Result, name **byte) Result
	cuGetErrorString              func(code Result, text **byte) Result
	cuDeviceGetCount              func(count *int32) Result
	cuDeviceGet                   func(device *int32, ordinal int32) Result
	cuDeviceGetName               func(name *byte, length int32, device int32) Result
	cuDeviceGetPCIBusId           func(busID *byte, length int32, device int32) Result
	cuDeviceGetAttribute          func(value *int32, attribute int32, device int32) Result
	cuDevicePrimaryCtxRetain      func(ctx *uintptr, device int32) Result
	cuDevicePrimaryCtxRelease     func(device int32) Result // _v2
	cuCtxGetCurrent               func(ctx *uintptr) Result
	cuCtxSetCurrent               func(ctx uintptr) Result
	cuMemAlloc                    func(dptr *uintptr, size uintptr) Result                   // _v2
	cuMemFree                     func(dptr uintptr) Result                                  // _v2
	cuMemcpyDtoH                  func(dst unsafe.Pointer, src uintptr, size uintptr) Result // _v2
	cuMemcpyHtoD                  func(dst uintptr, src unsafe.Pointer, size uintptr) Result // _v2
	cuPointerGetAttribute         func(data unsafe.Pointer, attribute int32, ptr uintptr) Result
	cuPointerSetAttribute         func(value unsafe.Pointer, attribute int32, ptr uintptr) Result
	cuMemGetHandleForAddressRange func(handle unsafe.Pointer, dptr uintptr, size uintptr, handleType int32, flags uint64) Result // nil before CUDA 11.7

	// pcieMappingRefused is set once the driver answered the PCIe mapping
	// flag with CUDA_ERROR_NOT_SUPPORTED, so later exports skip the try.
	pcieMappingRefused atomic.Bool
}

// loadedDriver loads and initialises libcuda once per process; a failure
// is final too, since neither a missing library nor a missing GPU appears
// while a process runs.
var loadedDriver = sync.OnceValues(func() (*driver, error) {
	drv, err := loadDriver(libraryName)
	if err != nil {
		return nil, err
	}
	if r := drv.cuInit(0); r != ResultSuccess {
		return nil, drv.error("cuInit", r)
	}
	return drv, nil
})

// error builds the Error for a failed driver call, asking the driver for
// the code's name and description.
func (drv *driver) error(op string, r Result) *Error {
	e := &Error{Op: op, Code: r, Name: r.String()}
	var text *byte
	if drv.cuGetErrorName(r, &text) == ResultSuccess {
		e.Name = goString(text)
	}
	if drv.cuGetErrorString(r, &text) == ResultSuccess {
		e.Message = goString(text)
	}
	return e
}

// goString copies a NUL-terminated C string owned by the driver.
func goString(p *byte) string {
	if p == nil {
		return ""
	}
	n := 0
	for *(*byte)(unsafe.Add(unsafe.Pointer(p), n)) != 0 {
		n++
	}
	return string(unsafe.Slice(p, n))
}

// cString returns the text of buf up to its first NUL.
func cString(buf []byte) string {
	for i, c := range buf {
		if c == 0 {
			return string(buf[:i])
		}
	}
	return string(buf)
}

// withContext runs fn on a locked OS thread with ctx current, then makes
// the thread's previous context current again.
func (drv *driver) withContext(ctx uintptr, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var previous uintptr
	if r := drv.cuCtxGetCurrent(&previous); r != ResultSuccess {
		return drv.error("cuCtxGetCurrent", r)
	}
	if previous != ctx {
		if r := drv.cuCtxSetCurrent(ctx); r != ResultSuccess {
			return drv.error("cuCtxSetCurrent", r)
		}
		defer drv.cuCtxSetCurrent(previous)
	}
	return fn()
}

// getHandle asks the driver for a dma-buf fd of [dptr, dptr+size) with the
// given flags, exactly as called; the context must be current.
func (drv *driver) getHandle(dptr uintptr, size int64, flags uint64) (int, Result) {
	fd := int32(-1)
	r := drv.cuMemGetHandleForAddressRange(unsafe.Pointer(&fd), dptr, uintptr(size), handleTypeDMABufFD, flags)
	return int(fd), r
}

// exportFD exports [dptr, dptr+size) as a dma-buf fd. It asks for the PCIe
// (BAR1) mapping first, which platforms with CPU-coherent GPU memory need
// to get a mapping a NIC can reach, and retries with no flags where the
// driver refuses the flag: CUDA_ERROR_NOT_SUPPORTED where the platform
// lacks it, CUDA_ERROR_INVALID_VALUE from drivers that predate it.
func (drv *driver) exportFD(dptr uintptr, size int64) (int, error) {
	if drv.cuMemGetHandleForAddressRange == nil {
		return -1, fmt.Errorf("cuda: %s missing from %s: %s: %w",
			exportOp, libraryName, minimumExportDriverVersionMsg, devmem.ErrNotSupported)
	}
	if !drv.pcieMappingRefused.Load() {
		fd, r := drv.getHandle(dptr, size, rangeFlagDMABufMappingPCIe)
		switch r {
		case ResultSuccess:
			return fd, nil
		case ResultNotSupported:
			drv.pcieMappingRefused.Store(true)
		case ResultInvalidValue:
		default:
			return -1, drv.error(exportOp, r)
		}
	}
	fd, r := drv.getHandle(dptr, size, 0)
	if r != ResultSuccess {
		return -1, drv.error(exportOp, r)
	}
	return fd, nil
}

// DriverVersion returns the CUDA version the installed driver supports,
// as cuda.h encodes it: 1000*major + 10*minor (13000 for CUDA 13.0).
func DriverVersion() (int, error) {
	drv, err := loadedDriver()
	if err != nil {
		return 0, err
	}
	var version int32
	if r := drv.cuDriverGetVersion(&version); r != ResultSuccess {
		return 0, drv.error("cuDriverGetVersion", r)
	}
	return int(version), nil
}

// Device is a CUDA device with its primary context retained. It is safe
// for concurrent use.
type Device struct {
	drv             *driver
	ordinal         int
	handle          int32   // CUdevice
	ctx             uintptr // CUcontext, the device's primary context
	name            string
	pciBusID        string
	dmaBufSupported bool

	mu     sync.Mutex
	closed bool
	live   map[*Memory]struct{}
}

// Open initialises the driver and retains the primary context of the
// device with the given ordinal (0 for the first GPU). The primary context
// is the one the CUDA runtime API uses, so memory from cudaMalloc in the
// same process belongs to it too.
func Open(ordinal int) (*Device, error) {
	drv, err := loadedDriver()
	if err != nil {
		return nil, err
	}
	var count int32
	if r := drv.cuDeviceGetCount(&count); r != ResultSuccess {
		return nil, drv.error("cuDeviceGetCount", r)
	}
	if ordinal < 0 || ordinal >= int(count) {
		return nil, fmt.Errorf("cuda: device %d does not exist (%d CUDA devices): %w", ordinal, count, devmem.ErrNotSupported)
	}
	d := &Device{drv: drv, ordinal: ordinal, live: make(map[*Memory]struct{})}
	if r := drv.cuDeviceGet(&d.handle, int32(ordinal)); r != ResultSuccess {
		return nil, drv.error("cuDeviceGet", r)
	}
	name := make([]byte, deviceNameLength)
	if r := drv.cuDeviceGetName(&name[0], int32(len(name)), d.handle); r != ResultSuccess {
		return nil, drv.error("cuDeviceGetName", r)
	}
	d.name = cString(name)
	busID := make([]byte, pciBusIDLength)
	if r := drv.cuDeviceGetPCIBusId(&busID[0], int32(len(busID)), d.handle); r != ResultSuccess {
		return nil, drv.error("cuDeviceGetPCIBusId", r)
	}
	d.pciBusID = cString(busID)
	// Drivers older than CUDA 11.7 do not know the attribute and answer
	// CUDA_ERROR_INVALID_VALUE: they cannot export either.
	var supported int32
	if r := drv.cuDeviceGetAttribute(&supported, attrDMABufSupported, d.handle); r == ResultSuccess {
		d.dmaBufSupported = supported != 0
	}
	if r := drv.cuDevicePrimaryCtxRetain(&d.ctx, d.handle); r != ResultSuccess {
		return nil, drv.error("cuDevicePrimaryCtxRetain", r)
	}
	return d, nil
}

// Ordinal returns the device ordinal given to Open.
func (d *Device) Ordinal() int { return d.ordinal }

// Name returns the device's product name, such as "NVIDIA H100 80GB HBM3".
func (d *Device) Name() string { return d.name }

// PCIBusID returns the device's PCI address (domain:bus:device.function),
// for matching the GPU with a NIC under the same PCIe switch.
func (d *Device) PCIBusID() string { return d.pciBusID }

// DMABufSupported reports whether the device can export its memory as a
// dma-buf (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED). It is false with the
// proprietary kernel modules, before Turing, and with drivers older than
// CUDA 11.7.
func (d *Device) DMABufSupported() (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return false, fmt.Errorf("cuda: device %d: %w", d.ordinal, ErrClosed)
	}
	return d.dmaBufSupported, nil
}

// Close frees the memory still allocated through the device and releases
// its primary context. Exported dma-bufs must be closed and unbound first.
func (d *Device) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	live := d.live
	d.live = nil
	d.mu.Unlock()

	var firstErr error
	for m := range live {
		if err := m.free(); err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if r := d.drv.cuDevicePrimaryCtxRelease(d.handle); r != ResultSuccess && firstErr == nil {
		firstErr = d.drv.error("cuDevicePrimaryCtxRelease_v2", r)
	}
	return firstErr
}

// Alloc allocates device memory for at least size bytes. The size is
// rounded up to a multiple of the host page size and the start is page
// aligned, so that the whole allocation and any page-aligned part of it can
// be exported. The memory is not zeroed.
//
// The allocation has CU_POINTER_ATTRIBUTE_SYNC_MEMOPS set, as GPUDirect
// RDMA users do, so that copies to and from it are complete when they
// return, even with respect to a NIC's DMA.
func (d *Device) Alloc(size int64) (*Memory, error) {
	pageSize := int64(os.Getpagesize())
	if size <= 0 || size > math.MaxInt64-2*pageSize {
		return nil, fmt.Errorf("cuda: alloc of %d bytes: %w", size, ErrOutOfRange)
	}
	rounded := alignUp(size, pageSize)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("cuda: device %d: %w", d.ordinal, ErrClosed)
	}
	m := &Memory{dev: d, size: rounded}
	err := d.drv.withContext(d.ctx, func() error {
		if r := d.drv.cuMemAlloc(&m.allocation, uintptr(rounded)); r != ResultSuccess {
			return d.drv.error("cuMemAlloc_v2", r)
		}
		// The driver aligns large allocations to 2 MiB, but small ones may
		// be carved out of a shared pool at a finer alignment: take one
		// more page and start at its boundary then.
		if m.allocation%uintptr(pageSize) != 0 {
			if r := d.drv.cuMemFree(m.allocation); r != ResultSuccess {
				return d.drv.error("cuMemFree_v2", r)
			}
			m.allocation = 0
			if r := d.drv.cuMemAlloc(&m.allocation, uintptr(rounded+pageSize)); r != ResultSuccess {
				return d.drv.error("cuMemAlloc_v2", r)
			}
		}
		m.ptr = uintptr(alignUp(int64(m.allocation), pageSize))
		one := uint32(1)
		if r := d.drv.cuPointerSetAttribute(unsafe.Pointer(&one), pointerAttrSyncMemops, m.allocation); r != ResultSuccess {
			d.drv.cuMemFree(m.allocation)
			return d.drv.error("cuPointerSetAttribute(CU_POINTER_ATTRIBUTE_SYNC_MEMOPS)", r)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	d.live[m] = struct{}{}
	return m, nil
}

// Memory is an allocation of device memory made by [Device.Alloc]. Its
// methods are safe for concurrent use.
type Memory struct {
	dev        *Device
	allocation uintptr // what cuMemAlloc returned, for cuMemFree
	ptr        uintptr // first page-aligned address in the allocation
	size       int64

	mu    sync.RWMutex
	freed bool
}

// Ptr returns the device address (CUdeviceptr) of the memory, for GPU
// code that consumes received payload.
func (m *Memory) Ptr() uintptr { return m.ptr }

// Size returns the usable size: the size given to Alloc rounded up to the
// host page size.
func (m *Memory) Size() int64 { return m.size }

// Export returns [off, off+size) of the memory as a dma-buf. Both must be
// multiples of the host page size (os.Getpagesize), otherwise Export
// returns an error matching [ErrUnaligned] without asking the driver (which
// would say CUDA_ERROR_INVALID_VALUE). Offsets in the dma-buf, such as
// devmem frag offsets, start at off in the memory.
//
// The DMABuf owns its own fd and may be closed at any time; the memory
// must stay allocated while the dma-buf is bound to a NIC.
func (m *Memory) Export(off, size int64) (*devmem.DMABuf, error) {
	if err := checkExportRange(m.ptr, off, size, m.size, int64(os.Getpagesize())); err != nil {
		return nil, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.freed {
		return nil, fmt.Errorf("cuda: export: %w", ErrClosed)
	}
	if !m.dev.dmaBufSupported {
		return nil, m.dev.errNoDMABuf()
	}
	var fd int
	err := m.dev.drv.withContext(m.dev.ctx, func() (err error) {
		fd, err = m.dev.drv.exportFD(m.ptr+uintptr(off), size)
		return err
	})
	if err != nil {
		return nil, err
	}
	return wrapDMABuf(fd)
}

func (d *Device) errNoDMABuf() error {
	return fmt.Errorf("cuda: device %d (%s) cannot export dma-bufs (CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED is 0; "+
		"it needs the NVIDIA open kernel modules, a Turing or newer GPU and CUDA 11.7): %w",
		d.ordinal, d.name, devmem.ErrNotSupported)
}

// CopyToHost copies len(dst) bytes starting at off in the memory into dst,
// for example a received frag at its offset. off need not be aligned.
func (m *Memory) CopyToHost(dst []byte, off int64) error {
	if err := checkCopyRange(off, len(dst), m.size); err != nil {
		return fmt.Errorf("cuda: copy to host: %w", err)
	}
	if len(dst) == 0 {
		return nil
	}
	return m.use(func(drv *driver) error {
		if r := drv.cuMemcpyDtoH(unsafe.Pointer(&dst[0]), m.ptr+uintptr(off), uintptr(len(dst))); r != ResultSuccess {
			return drv.error("cuMemcpyDtoH_v2", r)
		}
		return nil
	})
}

// CopyFromHost copies src into the memory starting at off, for example a
// pattern to transmit with bind-tx. off need not be aligned.
func (m *Memory) CopyFromHost(off int64, src []byte) error {
	if err := checkCopyRange(off, len(src), m.size); err != nil {
		return fmt.Errorf("cuda: copy from host: %w", err)
	}
	if len(src) == 0 {
		return nil
	}
	return m.use(func(drv *driver) error {
		if r := drv.cuMemcpyHtoD(m.ptr+uintptr(off), unsafe.Pointer(&src[0]), uintptr(len(src))); r != ResultSuccess {
			return drv.error("cuMemcpyHtoD_v2", r)
		}
		return nil
	})
}

// use runs fn with the memory's context current, unless it was freed.
func (m *Memory) use(fn func(drv *driver) error) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.freed {
		return ErrClosed
	}
	return m.dev.drv.withContext(m.dev.ctx, func() error { return fn(m.dev.drv) })
}

// Free releases the memory. Dma-bufs exported from it must be closed and
// unbound first. Freeing twice is harmless.
func (m *Memory) Free() error {
	m.dev.mu.Lock()
	delete(m.dev.live, m)
	m.dev.mu.Unlock()
	return m.free()
}

func (m *Memory) free() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.freed {
		return nil
	}
	m.freed = true
	return m.dev.drv.withContext(m.dev.ctx, func() error {
		if r := m.dev.drv.cuMemFree(m.allocation); r != ResultSuccess {
			return m.dev.drv.error("cuMemFree_v2", r)
		}
		return nil
	})
}

// ExportRange exports [dptr, dptr+size) of device memory allocated by
// other code (cudaMalloc, cuMemAlloc) as a dma-buf. dptr and size must be
// multiples of the host page size, otherwise ExportRange returns an error
// matching [ErrUnaligned] without asking the driver. The range is exported
// in the context that owns dptr, or the device's primary context where the
// driver reports none.
func ExportRange(dptr uintptr, size int64) (*devmem.DMABuf, error) {
	if err := checkExportRange(dptr, 0, size, math.MaxInt64, int64(os.Getpagesize())); err != nil {
		return nil, err
	}
	drv, err := loadedDriver()
	if err != nil {
		return nil, err
	}
	var ctx uintptr
	if r := drv.cuPointerGetAttribute(unsafe.Pointer(&ctx), pointerAttrContext, dptr); r != ResultSuccess {
		e := drv.error("cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_CONTEXT)", r)
		e.Detail = fmt.Sprintf("%#x is not a device pointer", dptr)
		return nil, e
	}
	if ctx == 0 {
		// Virtual memory management allocations (cuMemCreate/cuMemMap)
		// belong to no context.
		var ordinal, device int32
		if r := drv.cuPointerGetAttribute(unsafe.Pointer(&ordinal), pointerAttrDeviceOrdinal, dptr); r != ResultSuccess {
			return nil, drv.error("cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL)", r)
		}
		if r := drv.cuDeviceGet(&device, ordinal); r != ResultSuccess {
			return nil, drv.error("cuDeviceGet", r)
		}
		if r := drv.cuDevicePrimaryCtxRetain(&ctx, device); r != ResultSuccess {
			return nil, drv.error("cuDevicePrimaryCtxRetain", r)
		}
		defer drv.cuDevicePrimaryCtxRelease(device)
	}
	var fd int
	err = drv.withContext(ctx, func() (err error) {
		fd, err = drv.exportFD(dptr, size)
		return err
	})
	if err != nil {
		return nil, err
	}
	return wrapDMABuf(fd)
}

// checkExportRange reports why [addr+off, addr+off+size) cannot be exported
// from an allocation of limit bytes at addr, before the driver is asked.
func checkExportRange(addr uintptr, off, size, limit, pageSize int64) error {
	switch {
	case off < 0 || size <= 0 || off > limit || size > limit-off:
		return fmt.Errorf("cuda: export of %d bytes at offset %d of a %d-byte allocation: %w", size, off, limit, ErrOutOfRange)
	case off%pageSize != 0:
		return fmt.Errorf("cuda: export offset %d is not a multiple of the host page size %d: %w", off, pageSize, ErrUnaligned)
	case size%pageSize != 0:
		return fmt.Errorf("cuda: export length %d is not a multiple of the host page size %d: %w", size, pageSize, ErrUnaligned)
	case (int64(addr)+off)%pageSize != 0:
		return fmt.Errorf("cuda: export address %#x is not a multiple of the host page size %d: %w", int64(addr)+off, pageSize, ErrUnaligned)
	}
	return nil
}

// checkCopyRange reports why n bytes at off do not fit in size bytes.
func checkCopyRange(off int64, n int, size int64) error {
	if off < 0 || off > size || int64(n) > size-off {
		return fmt.Errorf("%d bytes at offset %d of a %d-byte allocation: %w", n, off, size, ErrOutOfRange)
	}
	return nil
}

// alignUp rounds v up to a multiple of align, a power of two.
func alignUp(v, align int64) int64 {
	return (v + align - 1) &^ (align - 1)
}
