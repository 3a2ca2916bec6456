//go:build linux

package cuda

// Tests on a real GPU. They skip, saying why, where libcuda.so.1 cannot be
// loaded or there is no GPU that can export dma-bufs; set
// DEVMEM_REQUIRE_GPU=1 to make that a failure on the machine meant to run
// them.

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/devmem-go/devmem"
)

const (
	exportTestSize  = 64 << 20
	subRangeOffset  = 64 << 10
	subRangeSize    = 1 << 20
	nvidiaExporter  = "nv_dmabuf"
	requireGPUVar   = "DEVMEM_REQUIRE_GPU"
	misalignedOff   = 100
	misalignedBytes = 5000
)

// openTestDevice opens GPU 0 or skips the test with the reason.
func openTestDevice(t *testing.T) *Device {
	t.Helper()
	skip := t.Skipf
	if os.Getenv(requireGPUVar) != "" {
		skip = t.Fatalf
	}
	dev, err := Open(0)
	if err != nil {
		if errors.Is(err, devmem.ErrNotSupported) {
			skip("no usable CUDA GPU (%s=1 makes this fatal): %v", requireGPUVar, err)
		}
		t.Fatalf("Open(0): %v", err)
	}
	t.Cleanup(func() {
		if err := dev.Close(); err != nil {
			t.Errorf("Device.Close: %v", err)
		}
	})
	supported, err := dev.DMABufSupported()
	if err != nil {
		t.Fatal(err)
	}
	if !supported {
		skip("GPU 0 (%s) has CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED=0: needs the NVIDIA open kernel modules", dev.Name())
	}
	return dev
}

func allocTestMemory(t *testing.T, dev *Device, size int64) *Memory {
	t.Helper()
	mem, err := dev.Alloc(size)
	if err != nil {
		t.Fatalf("Alloc(%d): %v", size, err)
	}
	t.Cleanup(func() {
		if err := mem.Free(); err != nil {
			t.Errorf("Memory.Free: %v", err)
		}
	})
	return mem
}

// countFDs returns how many file descriptors the process has open.
func countFDs(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(entries)
}

// warmUpExport exports one page of mem and closes it, before a test counts
// fds. The driver opens descriptors of its own on the first export of a
// process and keeps them (two on an H200: "37 before export, 39 after
// close" when a test ran first, while a second run passed), which is no leak
// of ours; counting from after a first export measures only what Export and
// Close themselves open and close.
func warmUpExport(t *testing.T, mem *Memory) {
	t.Helper()
	buf, err := mem.Export(0, int64(os.Getpagesize()))
	if err != nil {
		t.Fatalf("warm-up Export(0, one page): %v", err)
	}
	if err := buf.Close(); err != nil {
		t.Fatalf("warm-up export Close: %v", err)
	}
}

// fdinfo returns /proc/self/fdinfo/fd and its size: and exp_name: fields,
// read independently of devmem.OpenDMABuf.
func fdinfo(t *testing.T, fd int) (text string, size int64, exporter string) {
	t.Helper()
	raw, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatalf("read fdinfo: %v", err)
	}
	size = -1
	for line := range strings.Lines(string(raw)) {
		key, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		value = strings.TrimSpace(value)
		switch key {
		case "size":
			if size, err = strconv.ParseInt(value, 10, 64); err != nil {
				t.Fatalf("fdinfo size %q: %v", value, err)
			}
		case "exp_name":
			exporter = value
		}
	}
	return string(raw), size, exporter
}

// checkExported verifies a dma-buf's size and exporter, both as the DMABuf
// reports them and as fdinfo shows them.
func checkExported(t *testing.T, buf *devmem.DMABuf, wantSize int64) {
	t.Helper()
	text, size, exporter := fdinfo(t, buf.FD())
	t.Logf("/proc/self/fdinfo/%d:\n%s", buf.FD(), text)
	if size != wantSize || exporter != nvidiaExporter {
		t.Errorf("fdinfo says size %d exp_name %q, want %d %q", size, exporter, wantSize, nvidiaExporter)
	}
	if buf.Size() != wantSize || buf.Exporter() != nvidiaExporter {
		t.Errorf("DMABuf says Size %d Exporter %q, want %d %q", buf.Size(), buf.Exporter(), wantSize, nvidiaExporter)
	}
	flags, err := fcntl(buf.FD(), syscall.F_GETFD)
	if err != nil || flags&syscall.FD_CLOEXEC == 0 {
		t.Errorf("dma-buf fd flags %#x, %v: want FD_CLOEXEC", flags, err)
	}
}

func fcntl(fd, cmd int) (int, error) {
	r, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(fd), uintptr(cmd), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func TestGPUInfo(t *testing.T) {
	dev := openTestDevice(t)
	version, err := DriverVersion()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("GPU 0: %s at PCI %s, CUDA driver version %d.%d, DMA_BUF_SUPPORTED=true, host page size %d, GOOS/GOARCH %s/%s",
		dev.Name(), dev.PCIBusID(), version/1000, version%1000/10, os.Getpagesize(), runtime.GOOS, runtime.GOARCH)
	if dev.Name() == "" || !strings.Contains(dev.PCIBusID(), ":") {
		t.Errorf("device name %q / PCI bus id %q look wrong", dev.Name(), dev.PCIBusID())
	}
	if version < 11070 {
		t.Errorf("driver version %d exports dma-bufs but is older than CUDA 11.7", version)
	}
}

func TestGPUExportWhole(t *testing.T) {
	dev := openTestDevice(t)
	mem := allocTestMemory(t, dev, exportTestSize)
	if mem.Size() != exportTestSize || mem.Ptr()%uintptr(os.Getpagesize()) != 0 {
		t.Fatalf("Alloc(%d): size %d at %#x, want that size page aligned", exportTestSize, mem.Size(), mem.Ptr())
	}
	warmUpExport(t, mem)
	before := countFDs(t)
	buf, err := mem.Export(0, exportTestSize)
	if err != nil {
		t.Fatalf("Export(0, 64 MiB): %v", err)
	}
	if open := countFDs(t); open != before+1 {
		t.Errorf("%d fds open with the dma-buf, want %d", open, before+1)
	}
	checkExported(t, buf, exportTestSize)
	t.Logf("PCIe mapping flag refused by the driver (fell back to flags 0): %v", dev.drv.pcieMappingRefused.Load())
	if err := buf.Close(); err != nil {
		t.Fatalf("DMABuf.Close: %v", err)
	}
	if after := countFDs(t); after != before {
		t.Errorf("%d fds open after Close, want %d as before the export", after, before)
	}
	t.Logf("fds: %d before export, %d after close", before, countFDs(t))
}

func TestGPUExportSubRange(t *testing.T) {
	dev := openTestDevice(t)
	mem := allocTestMemory(t, dev, exportTestSize)
	warmUpExport(t, mem)
	before := countFDs(t)
	buf, err := mem.Export(subRangeOffset, subRangeSize)
	if err != nil {
		t.Fatalf("Export(64 KiB, 1 MiB): %v", err)
	}
	checkExported(t, buf, subRangeSize)
	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	if after := countFDs(t); after != before {
		t.Errorf("%d fds open after Close, want %d", after, before)
	}
}

// Misaligned ranges are refused by the package before the driver is asked;
// the test also records what the driver itself answers.
func TestGPUExportMisaligned(t *testing.T) {
	dev := openTestDevice(t)
	mem := allocTestMemory(t, dev, exportTestSize)
	warmUpExport(t, mem)
	before := countFDs(t)
	for _, tc := range []struct{ off, size int64 }{
		{misalignedOff, subRangeSize},
		{0, misalignedBytes},
	} {
		_, err := mem.Export(tc.off, tc.size)
		var driverErr *Error
		if !errors.Is(err, ErrUnaligned) || errors.As(err, &driverErr) {
			t.Errorf("Export(%d, %d) = %v, want ErrUnaligned from the package's own check", tc.off, tc.size, err)
		}
		t.Logf("Export(%d, %d): %v", tc.off, tc.size, err)

		var fd int
		var code Result
		err = dev.drv.withContext(dev.ctx, func() error {
			fd, code = dev.drv.getHandle(mem.Ptr()+uintptr(tc.off), tc.size, 0)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if code == ResultSuccess {
			syscall.Close(fd)
			t.Errorf("the driver exported [%d, +%d) itself: the package's check is stricter than needed", tc.off, tc.size)
		}
		t.Logf("raw cuMemGetHandleForAddressRange(ptr+%d, %d, DMA_BUF_FD, 0) = %s", tc.off, tc.size, dev.drv.error(exportOp, code))
	}
	// Past the end of the allocation, also refused by the package.
	if _, err := mem.Export(exportTestSize-subRangeSize, 2*subRangeSize); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("Export past the end = %v, want ErrOutOfRange", err)
	}
	if after := countFDs(t); after != before {
		t.Errorf("%d fds open after the refused exports, want %d", after, before)
	}
}

// The driver's answer to the PCIe mapping flag, recorded for the README.
func TestGPUPCIeMappingFlag(t *testing.T) {
	dev := openTestDevice(t)
	mem := allocTestMemory(t, dev, exportTestSize)
	var fd int
	var code Result
	if err := dev.drv.withContext(dev.ctx, func() error {
		fd, code = dev.drv.getHandle(mem.Ptr(), exportTestSize, rangeFlagDMABufMappingPCIe)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	switch code {
	case ResultSuccess:
		text, _, _ := fdinfo(t, fd)
		syscall.Close(fd)
		t.Logf("raw export with CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE: fd %d\n%s", fd, text)
	case ResultNotSupported, ResultInvalidValue:
		t.Logf("raw export with CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE: %s (Export falls back to flags 0)", dev.drv.error(exportOp, code))
	default:
		t.Errorf("raw export with CU_MEM_RANGE_FLAG_DMA_BUF_MAPPING_TYPE_PCIE: %s, which Export does not fall back from", dev.drv.error(exportOp, code))
	}
}

// pattern returns n bytes that differ at every offset within 2^24 bytes
// and between runs with a different seed.
func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i) ^ byte(i>>8)*31 ^ byte(i>>16)*7 ^ seed
	}
	return p
}

func TestGPUCopyRoundTrip(t *testing.T) {
	dev := openTestDevice(t)
	mem := allocTestMemory(t, dev, exportTestSize)
	want := pattern(exportTestSize, 0x5a)
	if err := mem.CopyFromHost(0, want); err != nil {
		t.Fatalf("CopyFromHost: %v", err)
	}
	got := make([]byte, exportTestSize)
	if err := mem.CopyToHost(got, 0); err != nil {
		t.Fatalf("CopyToHost: %v", err)
	}
	if i := firstDifference(got, want); i >= 0 {
		t.Fatalf("copy-back differs at offset %d: got %#x want %#x", i, got[i], want[i])
	}
	// Frag-like pieces at unaligned offsets, as a receiver validates them.
	for _, frag := range []struct{ off, size int64 }{{0, 1}, {misalignedOff, misalignedBytes}, {subRangeOffset + 4095, 8193}, {exportTestSize - 3, 3}} {
		piece := make([]byte, frag.size)
		if err := mem.CopyToHost(piece, frag.off); err != nil {
			t.Fatalf("CopyToHost at %d: %v", frag.off, err)
		}
		if !bytes.Equal(piece, want[frag.off:frag.off+frag.size]) {
			t.Errorf("CopyToHost of %d bytes at %d differs from the pattern", frag.size, frag.off)
		}
	}
	// An unaligned write lands exactly where asked.
	patch := pattern(misalignedBytes, 0xa5)
	if err := mem.CopyFromHost(misalignedOff, patch); err != nil {
		t.Fatalf("CopyFromHost at %d: %v", misalignedOff, err)
	}
	copy(want[misalignedOff:], patch)
	if err := mem.CopyToHost(got[:subRangeOffset], 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDifference(got[:subRangeOffset], want[:subRangeOffset]); i >= 0 {
		t.Errorf("after patching %d bytes at %d, offset %d: got %#x want %#x", misalignedBytes, misalignedOff, i, got[i], want[i])
	}
	if err := mem.CopyToHost(got[:2], exportTestSize-1); !errors.Is(err, ErrOutOfRange) {
		t.Errorf("CopyToHost past the end = %v, want ErrOutOfRange", err)
	}
	t.Logf("64 MiB pattern written and read back; frag-sized reads and an unaligned patch matched")
}

func firstDifference(a, b []byte) int {
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

// ExportRange takes a bare device pointer and must find its context itself,
// from a thread that has no context current, and leave the thread so.
func TestGPUExportRange(t *testing.T) {
	dev := openTestDevice(t)
	mem := allocTestMemory(t, dev, exportTestSize)
	warmUpExport(t, mem)
	before := countFDs(t)
	type result struct {
		buf        *devmem.DMABuf
		err        error
		ctxBefore  uintptr
		ctxAfter   uintptr
		ctxAnswers [2]Result
	}
	done := make(chan result)
	go func() {
		// Not unlocked: the goroutine's thread ends with it, so no other
		// test sees whatever context it was left with.
		runtime.LockOSThread()
		var r result
		r.ctxAnswers[0] = dev.drv.cuCtxGetCurrent(&r.ctxBefore)
		r.buf, r.err = ExportRange(mem.Ptr()+subRangeOffset, subRangeSize)
		r.ctxAnswers[1] = dev.drv.cuCtxGetCurrent(&r.ctxAfter)
		done <- r
	}()
	r := <-done
	if r.err != nil {
		t.Fatalf("ExportRange(ptr+64 KiB, 1 MiB): %v", r.err)
	}
	if r.ctxAnswers != [2]Result{} || r.ctxBefore != 0 || r.ctxAfter != 0 {
		t.Errorf("current context on the thread before/after ExportRange: %#x/%#x (%v), want none both times", r.ctxBefore, r.ctxAfter, r.ctxAnswers)
	}
	checkExported(t, r.buf, subRangeSize)
	if err := r.buf.Close(); err != nil {
		t.Fatal(err)
	}
	if after := countFDs(t); after != before {
		t.Errorf("%d fds open after Close, want %d", after, before)
	}
	if _, err := ExportRange(mem.Ptr()+misalignedOff, subRangeSize); !errors.Is(err, ErrUnaligned) {
		t.Errorf("ExportRange(ptr+100) = %v, want ErrUnaligned", err)
	}
}

// The CPU cannot map GPU memory through nv_dmabuf on every system; record
// what this one does, since devmem's DMABuf.Map would use it.
func TestGPUMapExported(t *testing.T) {
	dev := openTestDevice(t)
	mem := allocTestMemory(t, dev, exportTestSize)
	buf, err := mem.Export(0, subRangeSize)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	m, err := syscall.Mmap(buf.FD(), 0, subRangeSize, syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Logf("mmap of an nv_dmabuf dma-buf: %v (payload must be read with CopyToHost)", err)
		return
	}
	defer syscall.Munmap(m)
	want := pattern(64, 1)
	if err := mem.CopyFromHost(0, want); err != nil {
		t.Fatal(err)
	}
	t.Logf("mmap of an nv_dmabuf dma-buf works; first bytes %x, written %x", m[:8], want[:8])
}

func TestGPUFreeAndClose(t *testing.T) {
	dev := openTestDevice(t)
	mem, err := dev.Alloc(5000)
	if err != nil {
		t.Fatal(err)
	}
	if page := int64(os.Getpagesize()); mem.Size() != alignUp(5000, page) || int64(mem.Ptr())%page != 0 {
		t.Errorf("Alloc(5000): %d bytes at %#x, want %d page aligned", mem.Size(), mem.Ptr(), alignUp(5000, page))
	}
	if err := mem.Free(); err != nil {
		t.Fatalf("Free: %v", err)
	}
	if err := mem.Free(); err != nil {
		t.Errorf("second Free: %v", err)
	}
	if err := mem.CopyFromHost(0, []byte{1}); !errors.Is(err, ErrClosed) {
		t.Errorf("CopyFromHost after Free = %v, want ErrClosed", err)
	}
	if _, err := mem.Export(0, int64(os.Getpagesize())); !errors.Is(err, ErrClosed) {
		t.Errorf("Export after Free = %v, want ErrClosed", err)
	}
	// Close frees what is still allocated.
	second, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	leftover, err := second.Alloc(exportTestSize)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Close(); err != nil {
		t.Fatalf("Close with memory allocated: %v", err)
	}
	if err := leftover.CopyFromHost(0, []byte{1}); !errors.Is(err, ErrClosed) {
		t.Errorf("CopyFromHost after Device.Close = %v, want ErrClosed", err)
	}
	if _, err := second.Alloc(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Alloc after Close = %v, want ErrClosed", err)
	}
}
