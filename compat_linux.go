//go:build linux

package devmem

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// compatKernel reports a 32-bit program running on a 64-bit kernel, which
// serves it through the compat syscall layer: control messages come in the
// 32-bit layout, but put_cmsg_notrunc checks room for a devmem control
// message against the kernel's native CMSG_LEN (see devmemCmsgNeed).
var compatKernel = unsafe.Sizeof(uintptr(0)) == 4 && is64BitMachine(unameMachine())

// compatCmsgNeed is the 64-bit kernel's CMSG_LEN(sizeof(struct dmabuf_cmsg)):
// a 16-byte struct cmsghdr and the 24-byte payload.
const compatCmsgNeed = 16 + dmabufCmsgLen

func init() {
	if compatKernel {
		devmemCmsgNeed = compatCmsgNeed
	}
}

func unameMachine() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Machine[:])
}

// is64BitMachine reports whether uname's machine names a 64-bit kernel.
// A 32-bit task normally sees the kernel's own machine; under the
// PER_LINUX32 personality (linux32, setarch) arm64 reports "armv8l" (also
// listed) and x86_64 reports "i686", which is then indistinguishable from a
// 32-bit kernel: such a program gets the 32-bit kernel's sizing, whose
// one-message minimum (36 bytes) an x86_64 kernel refuses with ETOOSMALL.
// Default control buffers hold hundreds of messages and lose at most one
// frag per call to the difference.
func is64BitMachine(m string) bool {
	switch m {
	case "x86_64", "aarch64", "aarch64_be", "armv8l", "armv8b",
		"ppc64", "ppc64le", "s390x", "mips64", "mips64el", "sparc64",
		"parisc64", "riscv64", "loongarch64":
		return true
	}
	return false
}
