package devmem

import "strconv"

// Errno is the type of the kernel error numbers in Error. Plan 9 has no
// errnos; the package only returns ErrNotSupported there, so this type
// exists to keep the API the same on every GOOS.
type Errno uintptr

func (e Errno) Error() string { return "errno " + strconv.FormatUint(uint64(e), 10) }

// Linux's numbers, for the OS-neutral code.
const (
	_EPERM        Errno = 1
	_ENOENT       Errno = 2
	_EBADF        Errno = 9
	_EACCES       Errno = 13
	_EFAULT       Errno = 14
	_ENODEV       Errno = 19
	_EINVAL       Errno = 22
	_ENOBUFS      Errno = 105
	_EOPNOTSUPP   Errno = 95
	_EHOSTUNREACH Errno = 113
)
