package cuda

import (
	"errors"
	"strconv"
	"strings"

	"github.com/devmem-go/devmem"
)

// Result is a CUDA driver API status code (CUresult).
type Result int32

// The status codes this package looks at or that commonly reach callers.
const (
	ResultSuccess                    Result = 0
	ResultInvalidValue               Result = 1
	ResultOutOfMemory                Result = 2
	ResultNotInitialized             Result = 3
	ResultDeinitialized              Result = 4
	ResultStubLibrary                Result = 34
	ResultInsufficientDriver         Result = 35
	ResultNoDevice                   Result = 100
	ResultInvalidDevice              Result = 101
	ResultDeviceNotLicensed          Result = 102
	ResultInvalidContext             Result = 201
	ResultNotFound                   Result = 500
	ResultNotSupported               Result = 801
	ResultSystemDriverMismatch       Result = 803
	ResultCompatNotSupportedOnDevice Result = 804
	ResultUnknown                    Result = 999
)

// resultNames spells the codes the way cuda.h does, for hosts where
// cuGetErrorName is not available (no libcuda) and for the tests.
var resultNames = map[Result]string{
	ResultSuccess:                    "CUDA_SUCCESS",
	ResultInvalidValue:               "CUDA_ERROR_INVALID_VALUE",
	ResultOutOfMemory:                "CUDA_ERROR_OUT_OF_MEMORY",
	ResultNotInitialized:             "CUDA_ERROR_NOT_INITIALIZED",
	ResultDeinitialized:              "CUDA_ERROR_DEINITIALIZED",
	ResultStubLibrary:                "CUDA_ERROR_STUB_LIBRARY",
	ResultInsufficientDriver:         "CUDA_ERROR_INSUFFICIENT_DRIVER",
	ResultNoDevice:                   "CUDA_ERROR_NO_DEVICE",
	ResultInvalidDevice:              "CUDA_ERROR_INVALID_DEVICE",
	ResultDeviceNotLicensed:          "CUDA_ERROR_DEVICE_NOT_LICENSED",
	ResultInvalidContext:             "CUDA_ERROR_INVALID_CONTEXT",
	ResultNotFound:                   "CUDA_ERROR_NOT_FOUND",
	ResultNotSupported:               "CUDA_ERROR_NOT_SUPPORTED",
	ResultSystemDriverMismatch:       "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
	ResultCompatNotSupportedOnDevice: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
	ResultUnknown:                    "CUDA_ERROR_UNKNOWN",
}

// String returns the driver's name for r, such as "CUDA_ERROR_NOT_SUPPORTED",
// or "CUresult(N)" for a code the package does not know.
func (r Result) String() string {
	if name, ok := resultNames[r]; ok {
		return name
	}
	return "CUresult(" + strconv.Itoa(int(r)) + ")"
}

// meansNotSupported reports whether r says that this machine cannot do what
// was asked at all (no GPU, a driver too old or a stub library, an operation
// the platform lacks), as opposed to a bad argument or a transient failure.
func (r Result) meansNotSupported() bool {
	switch r {
	case ResultStubLibrary, ResultInsufficientDriver, ResultNoDevice,
		ResultNotSupported, ResultSystemDriverMismatch, ResultCompatNotSupportedOnDevice:
		return true
	}
	return false
}

// Error is a failure reported by the CUDA driver.
//
// errors.Is(err, devmem.ErrNotSupported) holds when the code says the
// machine cannot do the operation at all: CUDA_ERROR_NO_DEVICE,
// CUDA_ERROR_NOT_SUPPORTED, CUDA_ERROR_INSUFFICIENT_DRIVER,
// CUDA_ERROR_STUB_LIBRARY and the driver/compat mismatch codes.
type Error struct {
	// Op is the driver function that failed, such as
	// "cuMemGetHandleForAddressRange".
	Op string
	// Code is the status the driver returned.
	Code Result
	// Name is the driver's name for Code (cuGetErrorName), such as
	// "CUDA_ERROR_NOT_SUPPORTED".
	Name string
	// Message is the driver's description of Code (cuGetErrorString).
	Message string
	// Detail, if set, says what the package was doing or what the caller
	// can do about it.
	Detail string
}

// Error returns "cuda: Op: " followed by the driver's name and message for
// the code and, when set, Detail.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("cuda: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	if e.Name != "" {
		b.WriteString(e.Name)
	} else {
		b.WriteString(e.Code.String())
	}
	b.WriteString(" (")
	b.WriteString(strconv.Itoa(int(e.Code)))
	b.WriteString(")")
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	return b.String()
}

// Is maps the codes that mean "this machine cannot do it" to
// devmem.ErrNotSupported.
func (e *Error) Is(target error) bool {
	return target == devmem.ErrNotSupported && e.Code.meansNotSupported()
}

var (
	// ErrUnaligned means a dma-buf export range does not start or end on a
	// host page boundary. The driver refuses such ranges
	// (CUDA_ERROR_INVALID_VALUE) and devmem needs page-aligned scatterlist
	// entries, so the package checks before asking the driver.
	ErrUnaligned = errors.New("range not aligned to the host page size")

	// ErrOutOfRange means an offset and length do not lie inside the
	// allocation (or are negative or empty where that is not allowed).
	ErrOutOfRange = errors.New("range outside the allocation")

	// ErrClosed means the Memory was freed or its Device closed.
	ErrClosed = errors.New("use of freed GPU memory or closed device")
)
