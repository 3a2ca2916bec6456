//go:build !plan9

package devmem

import "syscall"

// Errno is the type of the kernel error numbers in Error: syscall.Errno
// everywhere but Plan 9, which has none.
type Errno = syscall.Errno

// The errnos the OS-neutral code names, as syscall spells them.
const (
	_EACCES       = syscall.EACCES
	_EBADF        = syscall.EBADF
	_EFAULT       = syscall.EFAULT
	_EHOSTUNREACH = syscall.EHOSTUNREACH
	_EINVAL       = syscall.EINVAL
	_ENOBUFS      = syscall.ENOBUFS
	_ENODEV       = syscall.ENODEV
	_ENOENT       = syscall.ENOENT
	_EOPNOTSUPP   = syscall.EOPNOTSUPP
	_EPERM        = syscall.EPERM
)
