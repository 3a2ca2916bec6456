package cuda

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/devmem-go/devmem"
)

func TestResultString(t *testing.T) {
	for _, tc := range []struct {
		code Result
		want string
	}{
		{ResultSuccess, "CUDA_SUCCESS"},
		{ResultInvalidValue, "CUDA_ERROR_INVALID_VALUE"},
		{ResultNotSupported, "CUDA_ERROR_NOT_SUPPORTED"},
		{Result(12345), "CUresult(12345)"},
	} {
		if got := tc.code.String(); got != tc.want {
			t.Errorf("Result(%d).String() = %q, want %q", int(tc.code), got, tc.want)
		}
	}
}

func TestErrorIsNotSupported(t *testing.T) {
	for _, tc := range []struct {
		code         Result
		notSupported bool
	}{
		{ResultNotSupported, true},
		{ResultNoDevice, true},
		{ResultInsufficientDriver, true},
		{ResultStubLibrary, true},
		{ResultInvalidValue, false},
		{ResultOutOfMemory, false},
		{ResultInvalidContext, false},
	} {
		var err error = &Error{Op: exportOp, Code: tc.code}
		if got := errors.Is(err, devmem.ErrNotSupported); got != tc.notSupported {
			t.Errorf("errors.Is(%v, devmem.ErrNotSupported) = %v, want %v", err, got, tc.notSupported)
		}
	}
}

func TestErrorText(t *testing.T) {
	err := &Error{Op: exportOp, Code: ResultNotSupported, Message: "operation not supported", Detail: "with CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE"}
	want := "cuda: cuMemGetHandleForAddressRange: CUDA_ERROR_NOT_SUPPORTED (801): operation not supported: with CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE"
	if got := err.Error(); got != want {
		t.Errorf("Error() = %q\nwant      %q", got, want)
	}
	named := &Error{Op: "cuInit", Code: Result(222), Name: "CUDA_ERROR_UNSUPPORTED_PTX_VERSION"}
	if got, want := named.Error(), "cuda: cuInit: CUDA_ERROR_UNSUPPORTED_PTX_VERSION (222)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestCheckExportRange(t *testing.T) {
	const (
		page  = 4096
		base  = 0x20200000 // 2 MiB aligned, like cuMemAlloc's large allocations
		limit = 64 << 20
	)
	for _, tc := range []struct {
		name      string
		addr      uintptr
		off, size int64
		want      error  // nil, ErrUnaligned or ErrOutOfRange
		mention   string // the number the message must name
	}{
		{"whole", base, 0, limit, nil, ""},
		{"aligned sub-range", base, 64 << 10, 1 << 20, nil, ""},
		{"last page", base, limit - page, page, nil, ""},
		{"offset 100", base, 100, 1 << 20, ErrUnaligned, "offset 100"},
		{"length 5000", base, 0, 5000, ErrUnaligned, "length 5000"},
		{"unaligned base", base + 512, 0, page, ErrUnaligned, "0x20200200"},
		{"past the end", base, limit - page, 2 * page, ErrOutOfRange, "offset 67104768"},
		{"offset beyond", base, limit + page, page, ErrOutOfRange, ""},
		{"negative offset", base, -page, page, ErrOutOfRange, ""},
		{"empty", base, 0, 0, ErrOutOfRange, ""},
		{"overflowing", base, page, 1<<63 - 1, ErrOutOfRange, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkExportRange(tc.addr, tc.off, tc.size, limit, page)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("checkExportRange(%#x, %d, %d) = %v, want nil", tc.addr, tc.off, tc.size, err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("checkExportRange(%#x, %d, %d) = %v, want %v", tc.addr, tc.off, tc.size, err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.mention) || !strings.HasPrefix(err.Error(), "cuda: ") {
				t.Errorf("error %q does not start with \"cuda: \" or does not mention %q", err, tc.mention)
			}
		})
	}
}

func TestCheckCopyRange(t *testing.T) {
	const size = 8192
	for _, tc := range []struct {
		off  int64
		n    int
		fits bool
	}{
		{0, size, true},
		{100, 5000, true},
		{size, 0, true},
		{size - 1, 2, false},
		{-1, 1, false},
		{size + 1, 0, false},
		{1, math.MaxInt, false},
	} {
		err := checkCopyRange(tc.off, tc.n, size)
		if fits := err == nil; fits != tc.fits {
			t.Errorf("checkCopyRange(%d, %d, %d) = %v, want fits=%v", tc.off, tc.n, size, err, tc.fits)
		}
		if err != nil && !errors.Is(err, ErrOutOfRange) {
			t.Errorf("checkCopyRange(%d, %d, %d) = %v, want ErrOutOfRange", tc.off, tc.n, size, err)
		}
	}
}

// Copies check their range before touching the device, so a Memory with no
// device behind it must refuse a bad range with ErrOutOfRange rather than
// crash.
func TestCopyRangeCheckedFirst(t *testing.T) {
	m := &Memory{size: 8192}
	if err := m.CopyToHost(make([]byte, 10), 8190); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("CopyToHost past the end = %v, want ErrOutOfRange", err)
	}
	if err := m.CopyFromHost(-1, []byte{1}); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("CopyFromHost at -1 = %v, want ErrOutOfRange", err)
	}
	if _, err := m.Export(100, 4096); !errors.Is(err, ErrUnaligned) {
		t.Errorf("Export(100, 4096) = %v, want ErrUnaligned", err)
	}
}

func TestAlignUp(t *testing.T) {
	for _, tc := range []struct{ v, align, want int64 }{
		{0, 4096, 0}, {1, 4096, 4096}, {4096, 4096, 4096}, {5000, 4096, 8192}, {64 << 20, 2 << 20, 64 << 20},
	} {
		if got := alignUp(tc.v, tc.align); got != tc.want {
			t.Errorf("alignUp(%d, %d) = %d, want %d", tc.v, tc.align, got, tc.want)
		}
	}
}

func TestLoadMissingLibrary(t *testing.T) {
	const name = "libcuda-devmem-test-missing.so.1"
	_, err := loadDriver(name)
	if !errors.Is(err, devmem.ErrNotSupported) {
		t.Fatalf("loadDriver(%q) = %v, want an error matching devmem.ErrNotSupported", name, err)
	}
	if !strings.Contains(err.Error(), name) {
		t.Errorf("error %q does not name the library", err)
	}
}

// On a machine without libcuda (CI) every entry point must say "not
// supported" rather than fail some other way.
func TestWithoutCUDA(t *testing.T) {
	if _, err := loadedDriver(); err == nil {
		t.Skip("libcuda.so.1 loaded and initialised: this machine has CUDA; gpu_test.go covers it")
	}
	if _, err := Open(0); !errors.Is(err, devmem.ErrNotSupported) {
		t.Errorf("Open(0) = %v, want an error matching devmem.ErrNotSupported", err)
	}
	if _, err := DriverVersion(); !errors.Is(err, devmem.ErrNotSupported) {
		t.Errorf("DriverVersion() = %v, want an error matching devmem.ErrNotSupported", err)
	}
	if _, err := ExportRange(0x20200000, 1<<20); !errors.Is(err, devmem.ErrNotSupported) {
		t.Errorf("ExportRange = %v, want an error matching devmem.ErrNotSupported", err)
	}
}
