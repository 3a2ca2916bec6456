//go:build vmtest

package devmem_test

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/selftest"
	"golang.org/x/sys/unix"
)

// These tests need a kernel with CONFIG_UDMABUF (the test VM); run them with
// go test -tags vmtest -exec vmexec.

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)*31 + seed + byte(i>>12)
	}
	return b
}

func TestVMUDMABuf(t *testing.T) {
	selftest.Require(t)
	before, err := selftest.OpenFDs()
	if err != nil {
		t.Fatal(err)
	}

	const size = 4 << 20
	buf, err := devmem.NewUDMABuf(size)
	if err != nil {
		t.Fatal(err)
	}
	if buf.Size() != size {
		t.Errorf("Size = %d, want %d", buf.Size(), size)
	}
	if buf.Exporter() != "udmabuf" {
		t.Errorf("Exporter = %q, want udmabuf", buf.Exporter())
	}
	if buf.Name() != "" {
		t.Errorf("new buffer has name %q", buf.Name())
	}

	mem, err := buf.Map()
	if err != nil {
		t.Fatal(err)
	}
	if len(mem) != size {
		t.Fatalf("mapped %d bytes", len(mem))
	}

	// Bracketed accessors, at an unaligned offset.
	want := pattern(1<<20+123, 5)
	if n, err := buf.WriteAt(want, 4097); err != nil || n != len(want) {
		t.Fatalf("WriteAt = %d, %v", n, err)
	}
	got := make([]byte, len(want))
	if n, err := buf.ReadAt(got, 4097); err != nil || n != len(got) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("ReadAt does not return what WriteAt wrote")
	}
	// The mapping sees the same bytes, under an explicit bracket.
	if err := buf.BeginCPUAccess(devmem.SyncRead); err != nil {
		t.Fatal(err)
	}
	same := bytes.Equal(mem[4097:4097+len(want)], want)
	if err := buf.EndCPUAccess(devmem.SyncRead); err != nil {
		t.Fatal(err)
	}
	if !same {
		t.Error("the mapping differs from ReadAt")
	}
	// Past the end.
	if n, err := buf.ReadAt(make([]byte, 10), size-4); n != 4 || err == nil {
		t.Errorf("ReadAt across the end = %d, %v", n, err)
	}
	if _, err := buf.WriteAt(make([]byte, 10), size-4); !errors.Is(err, devmem.ErrOutOfRange) {
		t.Errorf("WriteAt across the end: %v", err)
	}
	// Every direction/phase pair the kernel accepts; no direction is
	// refused before the kernel sees it.
	for _, f := range []devmem.SyncFlags{devmem.SyncStart | devmem.SyncRW, devmem.SyncEnd | devmem.SyncRW,
		devmem.SyncStart | devmem.SyncWrite, devmem.SyncEnd | devmem.SyncWrite} {
		if err := buf.Sync(f); err != nil {
			t.Errorf("Sync(%v): %v", f, err)
		}
	}
	if err := buf.Sync(devmem.SyncStart); err == nil {
		t.Error("Sync without a direction accepted")
	}

	// Names show in fdinfo, so a second DMABuf over a dup sees them.
	if err := buf.SetName("devmem-vm-test"); err != nil {
		t.Fatal(err)
	}
	if buf.Name() != "devmem-vm-test" {
		t.Errorf("Name = %q", buf.Name())
	}
	dup, err := unix.FcntlInt(uintptr(buf.FD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	other, err := devmem.OpenDMABuf(dup)
	if err != nil {
		unix.Close(dup)
		t.Fatal(err)
	}
	if other.Name() != "devmem-vm-test" || other.Exporter() != "udmabuf" || other.Size() != size {
		t.Errorf("reopened: name %q exporter %q size %d", other.Name(), other.Exporter(), other.Size())
	}
	// Both map the same pages.
	if n, err := other.ReadAt(got[:100], 4097); err != nil || n != 100 || !bytes.Equal(got[:100], want[:100]) {
		t.Errorf("second DMABuf reads %d, %v", n, err)
	}
	if err := other.Close(); err != nil {
		t.Fatal(err)
	}
	if err := buf.SetName(strings.Repeat("x", 32)); err == nil {
		t.Error("32-byte name accepted")
	}

	if err := buf.Close(); err != nil {
		t.Fatal(err)
	}
	if err := buf.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	after, err := selftest.OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	if after != before {
		t.Errorf("%d fds open before, %d after: a descriptor leaked", before, after)
	}
}

func TestVMUDMABufRoundsToPages(t *testing.T) {
	selftest.Require(t)
	page := int64(os.Getpagesize())
	buf, err := devmem.NewUDMABuf(3*page + 1)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	if buf.Size() != 4*page {
		t.Errorf("Size = %d, want %d", buf.Size(), 4*page)
	}
}

func TestVMUDMABufSizeLimit(t *testing.T) {
	selftest.Require(t)
	raw, err := os.ReadFile("/sys/module/udmabuf/parameters/size_limit_mb")
	if err != nil {
		t.Skip(err)
	}
	limit, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil || limit > 1<<20 {
		t.Skipf("size_limit_mb %q is too large to exceed", raw)
	}
	before, _ := selftest.OpenFDs()
	_, err = devmem.NewUDMABuf((limit + 1) << 20)
	if err == nil {
		t.Fatal("a buffer above size_limit_mb was created")
	}
	want := "udmabuf size_limit_mb is " + strconv.FormatInt(limit, 10) + " MiB"
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "size_limit_mb="+strconv.FormatInt(limit+1, 10)) {
		t.Errorf("error %q does not explain the limit (%q)", err, want)
	}
	if after, _ := selftest.OpenFDs(); after != before {
		t.Errorf("failed create leaked fds: %d -> %d", before, after)
	}
}

func TestVMUDMABufHugePages(t *testing.T) {
	selftest.Require(t)
	raw, err := os.ReadFile("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
	if err != nil {
		t.Skip(err)
	}
	if free, _ := strconv.Atoi(strings.TrimSpace(string(raw))); free < 2 {
		t.Skip("fewer than two free 2 MiB hugepages")
	}
	buf, err := devmem.NewUDMABufConfig(3<<20, devmem.UDMABufConfig{HugePageSize: 2 << 20, Name: "huge"})
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	if buf.Size() != 4<<20 || buf.Name() != "huge" {
		t.Errorf("size %d name %q", buf.Size(), buf.Name())
	}
}

func TestVMOpenDMABufNotDMABuf(t *testing.T) {
	selftest.Require(t)
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := devmem.OpenDMABuf(int(f.Fd())); !errors.Is(err, devmem.ErrNotDMABuf) {
		t.Errorf("OpenDMABuf on a procfs file: %v", err)
	}
}
