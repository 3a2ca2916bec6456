package devmem

import "github.com/devmem-go/devmem/internal/errs"

// The errnos the OS-neutral code names (syscall's on every GOOS but Plan 9,
// Linux's numbers there).
const (
	_EACCES       = errs.EACCES
	_EBADF        = errs.EBADF
	_EFAULT       = errs.EFAULT
	_EHOSTUNREACH = errs.EHOSTUNREACH
	_EINVAL       = errs.EINVAL
	_ENOBUFS      = errs.ENOBUFS
	_ENODEV       = errs.ENODEV
	_ENOENT       = errs.ENOENT
	_EOPNOTSUPP   = errs.EOPNOTSUPP
	_EPERM        = errs.EPERM
)
