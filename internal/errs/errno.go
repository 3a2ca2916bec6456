//go:build !plan9

package errs

import "syscall"

// Errno is the type of Error.Errno: syscall.Errno everywhere but Plan 9,
// which has no errnos.
type Errno = syscall.Errno

// The errnos that OS-neutral code names.
const (
	EACCES       = syscall.EACCES
	EBADF        = syscall.EBADF
	EFAULT       = syscall.EFAULT
	EHOSTUNREACH = syscall.EHOSTUNREACH
	EINVAL       = syscall.EINVAL
	ENOBUFS      = syscall.ENOBUFS
	ENODEV       = syscall.ENODEV
	ENOENT       = syscall.ENOENT
	EOPNOTSUPP   = syscall.EOPNOTSUPP
	EPERM        = syscall.EPERM
)
