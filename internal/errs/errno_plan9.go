package errs

import "strconv"

// Errno is the type of Error.Errno. Plan 9 has no errnos; the packages
// only return ErrNotSupported there, so this type exists to keep Error the
// same on every GOOS.
type Errno uintptr

// Error returns "errno N".
func (e Errno) Error() string { return "errno " + strconv.FormatUint(uint64(e), 10) }

// Linux's numbers, for the OS-neutral code.
const (
	EPERM        Errno = 1
	ENOENT       Errno = 2
	EBADF        Errno = 9
	EACCES       Errno = 13
	EFAULT       Errno = 14
	ENODEV       Errno = 19
	EINVAL       Errno = 22
	ENOBUFS      Errno = 105
	EOPNOTSUPP   Errno = 95
	EHOSTUNREACH Errno = 113
)
