//go:build linux

package devmem

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

const sockoptSupported = true

// dontneed runs setsockopt(fd, SOL_SOCKET, SO_DEVMEM_DONTNEED, batch) as a
// raw system call because the kernel returns the number of frags freed as
// the (positive) return value, which x/sys's Setsockopt* helpers drop.
//
// SYS_SETSOCKOPT is the direct system call on every architecture,
// including 386 and s390x where x/sys multiplexes setsockopt through
// socketcall(2): both got direct socket calls in Linux 4.3, long before
// devmem TCP (6.12).
func (r *TokenReleaser) dontneed(fd uintptr) {
	r1, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, fd, unix.SOL_SOCKET, unix.SO_DEVMEM_DONTNEED,
		uintptr(unsafe.Pointer(&r.batch[0])), uintptr(r.batchN)*unsafe.Sizeof(r.batch[0]), 0)
	r.ret, r.errno = r1, errno
}
