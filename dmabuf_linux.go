//go:build linux

package devmem

import (
	"bufio"
	"bytes"
	"errors"
	"math/bits"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// udmabufDevice is the udmabuf character device (a variable for tests).
var udmabufDevice = "/dev/udmabuf"

// udmabufSizeLimitParam holds the udmabuf module's size limit in MiB (a
// variable for tests).
var udmabufSizeLimitParam = "/sys/module/udmabuf/parameters/size_limit_mb"

// _DMA_BUF_SET_NAME is _IOW('b', 1, const char *): its size field is the
// pointer size, so 32-bit processes use _A and 64-bit ones _B.
const _DMA_BUF_SET_NAME = _DMA_BUF_SET_NAME_A*(1-ptrIs64) + _DMA_BUF_SET_NAME_B*ptrIs64

const ptrIs64 = unsafe.Sizeof(uintptr(0)) / 8

// _UDMABUF_FLAGS_CLOEXEC makes the new dma-buf fd close-on-exec.
const _UDMABUF_FLAGS_CLOEXEC = 0x01

// udmabufCreate is struct udmabuf_create (include/uapi/linux/udmabuf.h).
type udmabufCreate struct {
	Memfd  uint32
	Flags  uint32
	Offset uint64
	Size   uint64
}

// dmaBufSync is struct dma_buf_sync (include/uapi/linux/dma-buf.h).
type dmaBufSync struct {
	Flags uint64
}

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (uintptr, unix.Errno) {
	// Raw syscall: UDMABUF_CREATE returns the new fd, which x/sys's ioctl
	// wrappers discard.
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	return r, errno
}

func newUDMABuf(size int64, cfg UDMABufConfig) (*DMABuf, error) {
	const op = "udmabuf create"
	page := int64(unix.Getpagesize())
	memfdFlags := unix.MFD_ALLOW_SEALING | unix.MFD_CLOEXEC
	if hp := cfg.HugePageSize; hp != 0 && hp != page {
		if hp < page {
			return nil, &Error{Op: op, Errno: unix.EINVAL, Err: unix.EINVAL,
				Message: "HugePageSize " + itoa(uint64(hp)) + " is below the page size " + itoa(uint64(page))}
		}
		page = hp
		memfdFlags |= unix.MFD_HUGETLB | bits.TrailingZeros64(uint64(hp))<<unix.MFD_HUGE_SHIFT
	}
	size, ok := roundUp(size, page)
	if !ok || (unsafe.Sizeof(uintptr(0)) == 4 && size > 1<<31) {
		return nil, &Error{Op: op, Errno: unix.EINVAL, Err: unix.EINVAL, Message: "size too large"}
	}
	if err := checkUDMABufSize(size); err != nil {
		return nil, err
	}

	// Open the device first: its absence is the common failure and the
	// clearest to report.
	dev, err := unix.Open(udmabufDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, udmabufOpenError(err)
	}
	defer unix.Close(dev)

	memfd, err := unix.MemfdCreate("devmem-udmabuf", memfdFlags)
	if err != nil {
		e := &Error{Op: "memfd_create", Err: err}
		e.Errno, _ = err.(unix.Errno)
		if memfdFlags&unix.MFD_HUGETLB != 0 {
			e.Message = "hugetlb memfd of " + itoa(uint64(page)) + "-byte pages; is that page size supported?"
		}
		return nil, e
	}
	defer unix.Close(memfd)

	if err := unix.Ftruncate(memfd, size); err != nil {
		return nil, errnoError("ftruncate memfd", err)
	}
	// udmabuf insists on F_SEAL_SHRINK (and refuses write seals): the pages
	// it pins must not vanish under the device.
	if _, err := unix.FcntlInt(uintptr(memfd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK); err != nil {
		return nil, errnoError("fcntl F_ADD_SEALS", err)
	}

	create := udmabufCreate{
		Memfd: uint32(memfd),
		Flags: _UDMABUF_FLAGS_CLOEXEC,
		Size:  uint64(size),
	}
	r, errno := ioctlPtr(dev, _UDMABUF_CREATE, unsafe.Pointer(&create))
	if errno != 0 {
		return nil, udmabufCreateError(errno, size, memfdFlags&unix.MFD_HUGETLB != 0)
	}
	b := &DMABuf{fd: int(r), size: size}
	b.exporter, b.name = readDMABufFDInfo(b.fd)
	if cfg.Name != "" {
		if err := b.SetName(cfg.Name); err != nil {
			b.Close()
			return nil, err
		}
	}
	return b, nil
}

func udmabufOpenError(err error) error {
	e := &Error{Op: "open " + udmabufDevice, Err: err}
	e.Errno, _ = err.(unix.Errno)
	switch e.Errno {
	case unix.ENOENT, unix.ENODEV, unix.ENXIO:
		e.Message = "load the udmabuf module (modprobe udmabuf) or enable CONFIG_UDMABUF"
	case unix.EACCES, unix.EPERM:
		e.Message = "needs read-write access to " + udmabufDevice + " (root, or a udev rule)"
	}
	return e
}

// udmabufMaxPages is the most pages one udmabuf can describe: the kernel
// keeps two arrays of a pointer per page (init_udmabuf), and an allocation
// above INT_MAX bytes fails with a WARN (kvmalloc) instead of an error.
const udmabufMaxPages = (1<<31 - 1) / 8

// totalRAM returns the machine's memory in bytes (a variable for tests).
var totalRAM = func() (uint64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, err
	}
	return uint64(si.Totalram) * uint64(si.Unit), nil
}

// checkUDMABufSize refuses, before the kernel sees them, sizes UDMABUF_CREATE
// would refuse with a bare EINVAL (size_limit_mb), answer with a kernel WARN
// (more pages than its page arrays can hold) or try to pin until the OOM
// killer steps in (more than the machine's memory).
func checkUDMABufSize(size int64) error {
	const op = "udmabuf create"
	if limit, err := udmabufSizeLimitMiB(); err == nil && limit >= 0 && size > limit<<20 {
		return &Error{Op: op, Errno: unix.EINVAL, Err: unix.EINVAL, Message: sizeLimitMessage(size, limit)}
	}
	if pages := size / int64(unix.Getpagesize()); pages > udmabufMaxPages {
		return &Error{Op: op, Errno: unix.EINVAL, Err: unix.EINVAL,
			Message: "size " + itoa(uint64(size)) + " is " + itoa(uint64(pages)) + " pages; one udmabuf holds at most " +
				itoa(udmabufMaxPages) + " (its page arrays are limited to INT_MAX bytes)"}
	}
	if ram, err := totalRAM(); err == nil && ram > 0 && uint64(size) > ram {
		return &Error{Op: op, Errno: unix.ENOMEM, Err: unix.ENOMEM,
			Message: "size " + itoa(uint64(size)) + " exceeds the machine's memory (" + itoa(ram) + " bytes); udmabuf pins every page"}
	}
	return nil
}

func sizeLimitMessage(size, limit int64) string {
	need := (size + 1<<20 - 1) >> 20
	return "udmabuf size_limit_mb is " + itoa(uint64(limit)) + " MiB; raise it (modprobe udmabuf size_limit_mb=" +
		itoa(uint64(need)) + " / echo " + itoa(uint64(need)) + " > " + udmabufSizeLimitParam +
		", or udmabuf.size_limit_mb=" + itoa(uint64(need)) + " on the command line when built in)"
}

func udmabufCreateError(errno unix.Errno, size int64, huge bool) error {
	e := &Error{Op: "ioctl UDMABUF_CREATE", Errno: errno, Err: errno}
	switch errno {
	case unix.EINVAL:
		limit, err := udmabufSizeLimitMiB()
		if err == nil && size > limit<<20 {
			e.Message = sizeLimitMessage(size, limit)
		} else {
			e.Message = "size " + itoa(uint64(size)) + " refused (not page-aligned, above size_limit_mb, or a memfd with write seals)"
		}
	case unix.ENOMEM:
		if huge {
			e.Message = "not enough hugepages reserved (echo N > /proc/sys/vm/nr_hugepages)"
		}
	}
	return e
}

// udmabufSizeLimitMiB reads the udmabuf size_limit_mb module parameter.
func udmabufSizeLimitMiB() (int64, error) {
	raw, err := os.ReadFile(udmabufSizeLimitParam)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
}

func errnoError(op string, err error) error {
	e := &Error{Op: op, Err: err}
	e.Errno, _ = err.(unix.Errno)
	return e
}

func openDMABuf(fd int) (*DMABuf, error) {
	const op = "open dma-buf"
	var st unix.Statfs_t
	if err := unix.Fstatfs(fd, &st); err != nil {
		return nil, errnoError(op, err)
	}
	if uint32(st.Type) != uint32(unix.DMA_BUF_MAGIC) {
		return nil, &Error{Op: op, Err: ErrNotDMABuf,
			Message: "fd " + itoa(uint64(fd)) + " is on a filesystem with magic 0x" +
				strconv.FormatUint(uint64(uint32(st.Type)), 16) + ", not DMA_BUF_MAGIC 0x444d4142"}
	}
	size, err := unix.Seek(fd, 0, unix.SEEK_END)
	if err != nil {
		return nil, errnoError("lseek dma-buf", err)
	}
	// Leave the file position where we found it, as far as dma-buf allows
	// (it only supports offset 0 with SEEK_SET).
	_, _ = unix.Seek(fd, 0, unix.SEEK_SET)
	b := &DMABuf{fd: fd, size: size}
	b.exporter, b.name = readDMABufFDInfo(fd)
	return b, nil
}

// readDMABufFDInfo reads the exporter and name from /proc/self/fdinfo/<fd>:
//
//	size:	4194304
//	count:	1
//	exp_name:	udmabuf
//	name:	rx
func readDMABufFDInfo(fd int) (exporter, name string) {
	raw, err := os.ReadFile("/proc/self/fdinfo/" + itoa(uint64(fd)))
	if err != nil {
		return "", ""
	}
	return parseDMABufFDInfo(raw)
}

func parseDMABufFDInfo(raw []byte) (exporter, name string) {
	s := bufio.NewScanner(bytes.NewReader(raw))
	for s.Scan() {
		key, value, ok := strings.Cut(s.Text(), ":")
		if !ok {
			continue
		}
		value = strings.TrimLeft(value, " \t")
		switch key {
		case "exp_name":
			exporter = value
		case "name":
			name = value
		}
	}
	return exporter, name
}

func setDMABufName(fd int, name string) error {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return errnoError("dma-buf set name", err)
	}
	if _, errno := ioctlPtr(fd, _DMA_BUF_SET_NAME, unsafe.Pointer(p)); errno != 0 {
		return &Error{Op: "ioctl DMA_BUF_SET_NAME", Errno: errno, Err: errno}
	}
	return nil
}

func dmabufSync(fd int, flags SyncFlags) error {
	arg := dmaBufSync{Flags: uint64(flags)}
	for {
		_, errno := ioctlPtr(fd, _DMA_BUF_IOCTL_SYNC, unsafe.Pointer(&arg))
		switch errno {
		case 0:
			return nil
		case unix.EINTR, unix.EAGAIN:
			// dma_buf_begin_cpu_access waits on fences interruptibly.
			continue
		}
		e := &Error{Op: "ioctl DMA_BUF_IOCTL_SYNC " + flags.String(), Errno: errno, Err: errno}
		if errno == unix.ENOTTY {
			e.Message = "fd is not a dma-buf"
		}
		return e
	}
}

func mmapDMABuf(fd int, size int64, exporter string) (mem []byte, readOnly bool, err error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, false, &Error{Op: "mmap dma-buf", Errno: unix.EINVAL, Err: unix.EINVAL, Message: "size " + itoa(uint64(size)) + " cannot be mapped"}
	}
	mem, err = unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if errors.Is(err, unix.EACCES) {
		// A read-only fd (an importer that only reads) still maps for reading.
		mem, err = unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
		readOnly = err == nil
	}
	if err != nil {
		e := errnoError("mmap dma-buf", err).(*Error)
		if e.Errno == unix.ENODEV || e.Errno == unix.EINVAL {
			e.Message = "the exporter (" + exporter + ") does not support mmap"
		}
		return nil, false, e
	}
	return mem, readOnly, nil
}

// close unmaps and closes; the caller holds b.life for writing.
func (b *DMABuf) close() error {
	var errs []error
	if b.mem != nil {
		if err := unix.Munmap(b.mem); err != nil {
			errs = append(errs, errnoError("munmap dma-buf", err))
		}
		b.mem = nil
	}
	if b.fd >= 0 {
		if err := unix.Close(b.fd); err != nil {
			errs = append(errs, errnoError("close dma-buf", err))
		}
		b.fd = -1
	}
	return errors.Join(errs...)
}
