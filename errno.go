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

// Transitional names, for the files of lib-rx and lib-tx until their
// branches (which use sysErrno and an unexported ETOOSMALL) are merged; the
// lead deletes this block at that merge. They are not part of the 1.0 API.
type (
	// Deprecated: use syscall.Errno; Error.Errno is one.
	Errno = sysErrno
)

// Deprecated: internal errno 525; match ErrControlTooSmall instead.
const ETOOSMALL = Errno(525)
