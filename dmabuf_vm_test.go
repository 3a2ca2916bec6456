//go:build vmtest

package devmem_test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

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
	buf, err := devmem.NewUDMABuf(size, nil)
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
	buf, err := devmem.NewUDMABuf(3*page+1, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	if buf.Size() != 4*page {
		t.Errorf("Size = %d, want %d", buf.Size(), 4*page)
	}
}

// TestVMUDMABufSizeLimit lowers the udmabuf size_limit_mb module parameter
// and asks for more: the error says what the limit is and how to raise it,
// and the kernel is not asked.
func TestVMUDMABufSizeLimit(t *testing.T) {
	selftest.Require(t)
	const param = "/sys/module/udmabuf/parameters/size_limit_mb"
	raw, err := os.ReadFile(param)
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(param, raw, 0o644); err != nil {
			t.Errorf("restore size_limit_mb: %v", err)
		}
	})
	const limit = 16
	if err := os.WriteFile(param, []byte(strconv.Itoa(limit)), 0o644); err != nil {
		t.Skip(err)
	}
	before, _ := selftest.OpenFDs()
	_, err = devmem.NewUDMABuf((limit+1)<<20, nil)
	if err == nil {
		t.Fatal("a buffer above size_limit_mb was created")
	}
	want := "udmabuf size_limit_mb is " + strconv.Itoa(limit) + " MiB"
	if !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "size_limit_mb="+strconv.Itoa(limit+1)) {
		t.Errorf("error %q does not explain the limit (%q)", err, want)
	}
	if after, _ := selftest.OpenFDs(); after != before {
		t.Errorf("failed create leaked fds: %d -> %d", before, after)
	}
	// At the limit it works.
	buf, err := devmem.NewUDMABuf(limit<<20, nil)
	if err != nil {
		t.Fatalf("a buffer of size_limit_mb: %v", err)
	}
	buf.Close()
}

// TestVMUDMABufHuge asks for sizes below the default size_limit_mb (INT_MAX
// MiB) that the kernel cannot serve: 1 PiB made kvmalloc WARN (the run fails
// on any kernel WARN). They are refused before the kernel with a clear error.
func TestVMUDMABufHuge(t *testing.T) {
	selftest.Require(t)
	for _, size := range []int64{1 << 50, 1 << 42, 64 << 30} {
		buf, err := devmem.NewUDMABuf(size, nil)
		if err == nil {
			buf.Close()
			t.Errorf("NewUDMABuf(%d) succeeded in a VM of %s", size, "2 GiB")
			continue
		}
		if !errors.Is(err, unix.ENOMEM) && !errors.Is(err, unix.EINVAL) || !strings.Contains(err.Error(), "size") {
			t.Errorf("NewUDMABuf(%d): %v", size, err)
		}
		t.Logf("NewUDMABuf(%d): %v", size, err)
	}
}

// TestVMDMABufCloseRaces closes a mapped udmabuf while goroutines copy
// through ReadAt and WriteAt and sync it: run with -race. The copies used to
// run outside the lock Close unmaps under (a fault, or a race report), and
// Sync read the fd unlocked (an ioctl on a reused fd number). Every call
// either completes with the right bytes or fails matching net.ErrClosed.
func TestVMDMABufCloseRaces(t *testing.T) {
	selftest.Require(t)
	const size = 1 << 20
	src := pattern(64<<10, 3)
	for round := range 20 {
		buf, err := devmem.NewUDMABuf(size, nil)
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < size; off += int64(len(src)) {
			if _, err := buf.WriteAt(src, off); err != nil {
				t.Fatal(err)
			}
		}
		errs := make(chan error, 16)
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, len(src))
				for i := 0; ; i++ {
					off := int64((g*7+i)%16) * int64(len(src))
					var err error
					switch (g + i) % 3 {
					case 0:
						_, err = buf.ReadAt(p, off)
						if err == nil && !bytes.Equal(p, src) {
							err = errors.New("ReadAt returned other bytes")
						}
					case 1:
						_, err = buf.WriteAt(src, off)
					case 2:
						if err = buf.Sync(devmem.SyncStart | devmem.SyncRW); err == nil {
							err = buf.Sync(devmem.SyncEnd | devmem.SyncRW)
						}
					}
					if err != nil {
						if !errors.Is(err, net.ErrClosed) {
							errs <- err
						}
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(1+round%5) * time.Millisecond)
		if err := buf.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("round %d: %v", round, err)
		}
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
	buf, err := devmem.NewUDMABuf(3<<20, &devmem.UDMABufConfig{HugePageSize: 2 << 20, Name: "huge"})
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

// TestVMDMABufAllocs: ReadAt, WriteAt and Sync on a mapped udmabuf allocate
// nothing.
func TestVMDMABufAllocs(t *testing.T) {
	selftest.Require(t)
	buf, err := devmem.NewUDMABuf(1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	p := make([]byte, 4096)
	if _, err := buf.WriteAt(p, 0); err != nil { // maps
		t.Fatal(err)
	}
	for name, fn := range map[string]func() error{
		"ReadAt":  func() error { _, err := buf.ReadAt(p, 8192); return err },
		"WriteAt": func() error { _, err := buf.WriteAt(p, 8192); return err },
		"Sync":    func() error { return buf.Sync(devmem.SyncStart | devmem.SyncRead) },
	} {
		var ferr error
		allocs := testing.AllocsPerRun(100, func() {
			if err := fn(); err != nil {
				ferr = err
			}
		})
		if ferr != nil {
			t.Fatalf("%s: %v", name, ferr)
		}
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per call, want 0", name, allocs)
		}
	}
}
