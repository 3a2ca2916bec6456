//go:build linux

package devmem

import (
	"errors"
	"go/ast"
	"go/build/constraint"
	"go/constant"
	"go/parser"
	"go/token"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestNewUDMABufMissingDevice(t *testing.T) {
	if _, err := os.Stat("/dev/udmabuf"); err == nil {
		// Also check the real device path when it is absent (this host);
		// with it present, the override below still covers the message.
		t.Log("/dev/udmabuf exists; testing the missing case through an override")
	}
	old := udmabufDevice
	udmabufDevice = filepath.Join(t.TempDir(), "udmabuf")
	defer func() { udmabufDevice = old }()

	b, err := NewUDMABuf(4<<20, nil)
	if err == nil {
		b.Close()
		t.Fatal("NewUDMABuf succeeded without a device")
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%v does not match os.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "modprobe udmabuf") || !strings.Contains(err.Error(), "CONFIG_UDMABUF") {
		t.Errorf("error does not say how to get the device: %v", err)
	}
}

func TestNewUDMABufHostDevice(t *testing.T) {
	if _, err := os.Stat("/dev/udmabuf"); err == nil {
		t.Skip("/dev/udmabuf exists; the vmtest suite covers it")
	}
	_, err := NewUDMABuf(1, nil)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "modprobe udmabuf") {
		t.Fatalf("NewUDMABuf on a host without udmabuf: %v", err)
	}
}

func TestUDMABufSizeLimitMessage(t *testing.T) {
	dir := t.TempDir()
	old := udmabufSizeLimitParam
	udmabufSizeLimitParam = filepath.Join(dir, "size_limit_mb")
	defer func() { udmabufSizeLimitParam = old }()
	if err := os.WriteFile(udmabufSizeLimitParam, []byte("64\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	err := udmabufCreateError(unix.EINVAL, 128<<20, false)
	for _, want := range []string{
		"udmabuf size_limit_mb is 64 MiB",
		"modprobe udmabuf size_limit_mb=128",
		"echo 128 > " + udmabufSizeLimitParam,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	if !errors.Is(err, unix.EINVAL) {
		t.Errorf("%v does not match EINVAL", err)
	}

	// Within the limit the EINVAL has another cause; don't blame the limit.
	err = udmabufCreateError(unix.EINVAL, 32<<20, false)
	if strings.Contains(err.Error(), "size_limit_mb is") {
		t.Errorf("blames the size limit for a size within it: %v", err)
	}
	// A fractional MiB rounds the suggestion up.
	err = udmabufCreateError(unix.EINVAL, 64<<20+4096, false)
	if !strings.Contains(err.Error(), "size_limit_mb=65") {
		t.Errorf("suggestion not rounded up: %v", err)
	}
}

func TestOpenDMABufRejectsOtherFiles(t *testing.T) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	defer unix.Close(p[1])
	memfd, err := unix.MemfdCreate("not-a-dmabuf", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(memfd)

	for name, fd := range map[string]int{"pipe": p[0], "memfd": memfd} {
		t.Run(name, func(t *testing.T) {
			b, err := OpenDMABuf(fd)
			if err == nil {
				b.Close()
				t.Fatal("accepted")
			}
			if !errors.Is(err, ErrNotDMABuf) || !strings.Contains(err.Error(), "DMA_BUF_MAGIC") {
				t.Errorf("unclear error: %v", err)
			}
			// On error the fd stays the caller's and open.
			if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil {
				t.Errorf("fd closed on error: %v", err)
			}
		})
	}
	if _, err := OpenDMABuf(-1); !errors.Is(err, syscall.EBADF) {
		t.Errorf("OpenDMABuf(-1) = %v", err)
	}
}

func TestSyncOnNonDMABuf(t *testing.T) {
	memfd, err := unix.MemfdCreate("not-a-dmabuf", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	b := &DMABuf{fd: memfd, size: 4096}
	defer b.Close()
	err = b.Sync(SyncStart | SyncRead)
	if !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("Sync on a memfd = %v, want ENOTTY", err)
	}
	if err := b.SetName("x"); !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("SetName on a memfd = %v, want ENOTTY", err)
	}
}

func TestDMABufCloseIdempotent(t *testing.T) {
	memfd, err := unix.MemfdCreate("buf", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Ftruncate(memfd, 8192); err != nil {
		t.Fatal(err)
	}
	b := &DMABuf{fd: memfd, size: 8192}
	mem, err := b.Map()
	if err != nil {
		t.Fatal(err)
	}
	if len(mem) != 8192 {
		t.Fatalf("mapped %d bytes", len(mem))
	}
	if again, _ := b.Map(); &again[0] != &mem[0] {
		t.Error("Map did not cache the mapping")
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if b.FD() != -1 {
		t.Errorf("FD after Close = %d", b.FD())
	}
	if _, err := unix.FcntlInt(uintptr(memfd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
		t.Errorf("fd still open after Close: %v", err)
	}
}

func TestParseDMABufFDInfo(t *testing.T) {
	raw := []byte("pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1042\nsize:\t4194304\ncount:\t1\nexp_name:\tudmabuf\nname:\tdevmem rx\n")
	exp, name := parseDMABufFDInfo(raw)
	if exp != "udmabuf" || name != "devmem rx" {
		t.Errorf("got exporter %q name %q", exp, name)
	}
	exp, name = parseDMABufFDInfo([]byte("size:\t4096\nexp_name:\tnvidia\n"))
	if exp != "nvidia" || name != "" {
		t.Errorf("unnamed: got exporter %q name %q", exp, name)
	}
}

func TestUDMABufCreateLayout(t *testing.T) {
	if got := unsafe.Sizeof(udmabufCreate{}); got != 24 {
		t.Errorf("sizeof(struct udmabuf_create) = %d, want 24", got)
	}
	if got := unsafe.Sizeof(dmaBufSync{}); got != 8 {
		t.Errorf("sizeof(struct dma_buf_sync) = %d, want 8", got)
	}
}

// TestIoctlNumbersPerArch evaluates the build constraints of the
// zioctl_linux*.go files for every Linux GOARCH and checks that exactly one
// file applies and that its numbers follow the _IOW formula of that
// architecture's asm/ioctl.h.
func TestIoctlNumbersPerArch(t *testing.T) {
	files, err := filepath.Glob("zioctl_linux*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no zioctl files: %v", err)
	}
	type parsed struct {
		expr   constraint.Expr
		consts map[string]uint64
	}
	var all []parsed
	fset := token.NewFileSet()
	for _, f := range files {
		af, err := parser.ParseFile(fset, f, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		var expr constraint.Expr
		for _, cg := range af.Comments {
			for _, c := range cg.List {
				if constraint.IsGoBuild(c.Text) {
					if expr, err = constraint.Parse(c.Text); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		if expr == nil {
			t.Fatalf("%s has no //go:build line", f)
		}
		p := parsed{expr: expr, consts: map[string]uint64{}}
		for _, d := range af.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					lit := vs.Values[i].(*ast.BasicLit)
					v, _ := constant.Uint64Val(constant.MakeFromLiteral(lit.Value, lit.Kind, 0))
					p.consts[n.Name] = v
				}
			}
		}
		all = append(all, p)
	}

	iow := func(bit31 bool, typ byte, nr byte, size uint64) uint64 {
		dir := uint64(1) << 30
		if bit31 {
			dir = 1 << 31
		}
		return dir | size<<16 | uint64(typ)<<8 | uint64(nr)
	}
	for _, arch := range []string{"386", "amd64", "arm", "arm64", "loong64", "mips", "mips64", "mips64le", "mipsle",
		"ppc", "ppc64", "ppc64le", "riscv64", "s390x", "sparc64"} {
		bit31 := strings.HasPrefix(arch, "mips") || strings.HasPrefix(arch, "ppc") || arch == "sparc64"
		var match []parsed
		for _, p := range all {
			if p.expr.Eval(func(tag string) bool { return tag == "linux" || tag == arch }) {
				match = append(match, p)
			}
		}
		if len(match) != 1 {
			t.Errorf("%s: %d zioctl files apply, want 1", arch, len(match))
			continue
		}
		want := map[string]uint64{
			"_UDMABUF_CREATE":     iow(bit31, 'u', 0x42, 24),
			"_DMA_BUF_IOCTL_SYNC": iow(bit31, 'b', 0, 8),
			"_DMA_BUF_SET_NAME_A": iow(bit31, 'b', 1, 4),
			"_DMA_BUF_SET_NAME_B": iow(bit31, 'b', 1, 8),
		}
		for name, v := range want {
			if got, ok := match[0].consts[name]; !ok || got != v {
				t.Errorf("%s: %s = %#x, want %#x", arch, name, got, v)
			}
		}
	}
	// The documented values anchor the formula.
	if iow(false, 'u', 0x42, 24) != 0x40187542 || iow(true, 'u', 0x42, 24) != 0x80187542 ||
		iow(false, 'b', 0, 8) != 0x40086200 || iow(true, 'b', 1, 8) != 0x80086201 {
		t.Fatal("formula does not reproduce the uapi values")
	}
	// This build picks the pointer-sized DMA_BUF_SET_NAME.
	if want := uint64(_DMA_BUF_SET_NAME_B); unsafe.Sizeof(uintptr(0)) == 4 && uint64(_DMA_BUF_SET_NAME) != _DMA_BUF_SET_NAME_A ||
		unsafe.Sizeof(uintptr(0)) == 8 && uint64(_DMA_BUF_SET_NAME) != want {
		t.Errorf("_DMA_BUF_SET_NAME = %#x on a %d-byte-pointer build", uint64(_DMA_BUF_SET_NAME), unsafe.Sizeof(uintptr(0)))
	}
}

// TestDMABufCloseRaces runs every DMABuf method from several goroutines while
// Close runs: under -race it flagged Sync reading the fd, and ReadAt/WriteAt
// reading the mapping, without the lock Close writes them under. A memfd
// stands in for the dma-buf (its syncs fail with ENOTTY; the VM test
// TestVMDMABufCloseRaces copies through a real udmabuf). Every error is the
// memfd's ENOTTY or matches net.ErrClosed.
func TestDMABufCloseRaces(t *testing.T) {
	for range 20 {
		memfd, err := unix.MemfdCreate("buf", unix.MFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.Ftruncate(memfd, 1<<16); err != nil {
			t.Fatal(err)
		}
		b := &DMABuf{fd: memfd, size: 1 << 16}
		if _, err := b.Map(); err != nil {
			t.Fatal(err)
		}
		ok := func(err error) bool {
			return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, unix.ENOTTY)
		}
		errs := make(chan error, 64)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				p := make([]byte, 512)
				for i := 0; i < 200; i++ {
					var err error
					switch (g + i) % 6 {
					case 0:
						err = b.Sync(SyncStart | SyncRead)
					case 1:
						_, err = b.ReadAt(p, int64(i*64))
					case 2:
						_, err = b.WriteAt(p, int64(i*64))
					case 3:
						_, err = b.Map()
					case 4:
						err = b.SetName("x")
						_ = b.Name()
					case 5:
						_ = b.FD()
						err = b.EndCPUAccess(SyncWrite)
					}
					if !ok(err) {
						errs <- err
						return
					}
				}
			}()
		}
		close(start)
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("during Close: %v", err)
		}
		if _, err := unix.FcntlInt(uintptr(memfd), unix.F_GETFD, 0); !errors.Is(err, unix.EBADF) {
			// The number may have been reused by another test's fd;
			// only a still-open memfd of ours would be a leak.
			if l, _ := os.Readlink("/proc/self/fd/" + itoa(uint64(memfd))); strings.Contains(l, "memfd:buf") {
				t.Errorf("fd %d still open after Close: %s", memfd, l)
			}
		}
	}
}
