//go:build linux && !android && (amd64 || arm64)

package cuda

import (
	"fmt"
	"syscall"

	"github.com/devmem-go/devmem"
	"github.com/ebitengine/purego"
)

// loadDriver opens the CUDA driver library and binds the entry points. A
// missing library or a missing required symbol means there is no usable
// CUDA here: the error matches devmem.ErrNotSupported.
func loadDriver(name string) (*driver, error) {
	lib, err := purego.Dlopen(name, purego.RTLD_NOW|purego.RTLD_GLOBAL)
	if err != nil {
		return nil, fmt.Errorf("cuda: load %s (NVIDIA driver not installed?): %v: %w", name, err, devmem.ErrNotSupported)
	}
	drv := &driver{}
	required := []struct {
		fptr   any
		symbol string
	}{
		{&drv.cuInit, "cuInit"},
		{&drv.cuDriverGetVersion, "cuDriverGetVersion"},
		{&drv.cuGetErrorName, "cuGetErrorName"},
		{&drv.cuGetErrorString, "cuGetErrorString"},
		{&drv.cuDeviceGetCount, "cuDeviceGetCount"},
		{&drv.cuDeviceGet, "cuDeviceGet"},
		{&drv.cuDeviceGetName, "cuDeviceGetName"},
		{&drv.cuDeviceGetPCIBusId, "cuDeviceGetPCIBusId"},
		{&drv.cuDeviceGetAttribute, "cuDeviceGetAttribute"},
		{&drv.cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain"},
		{&drv.cuDevicePrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2"},
		{&drv.cuCtxGetCurrent, "cuCtxGetCurrent"},
		{&drv.cuCtxSetCurrent, "cuCtxSetCurrent"},
		{&drv.cuMemAlloc, "cuMemAlloc_v2"},
		{&drv.cuMemFree, "cuMemFree_v2"},
		{&drv.cuMemcpyDtoH, "cuMemcpyDtoH_v2"},
		{&drv.cuMemcpyHtoD, "cuMemcpyHtoD_v2"},
		{&drv.cuPointerGetAttribute, "cuPointerGetAttribute"},
		{&drv.cuPointerSetAttribute, "cuPointerSetAttribute"},
	}
	for _, f := range required {
		// RegisterLibFunc panics on a missing symbol; look it up first so
		// that an old or broken driver becomes an error.
		addr, err := purego.Dlsym(lib, f.symbol)
		if err != nil {
			purego.Dlclose(lib)
			return nil, fmt.Errorf("cuda: %s lacks %s (driver too old?): %v: %w", name, f.symbol, err, devmem.ErrNotSupported)
		}
		purego.RegisterFunc(f.fptr, addr)
	}
	// Added in CUDA 11.7; without it Export says so.
	if addr, err := purego.Dlsym(lib, exportOp); err == nil {
		purego.RegisterFunc(&drv.cuMemGetHandleForAddressRange, addr)
	}
	return drv, nil
}

// wrapDMABuf hands a fresh dma-buf fd to a devmem.DMABuf, which owns it
// from then on.
func wrapDMABuf(fd int) (*devmem.DMABuf, error) {
	// The driver's dma_buf_fd call does not promise O_CLOEXEC; a GPU buffer
	// must not leak into child processes.
	syscall.CloseOnExec(fd)
	buf, err := devmem.OpenDMABuf(fd)
	if err != nil {
		// OpenDMABuf leaves fd to us when it fails.
		syscall.Close(fd)
		return nil, err
	}
	return buf, nil
}
