// Package errs holds the error types that the devmem package and its nic
// subpackage share, so that both return the very same *devmem.Error without
// nic importing the root package. The root package re-exports them under
// their public names; see there for the documentation users read.
package errs

import (
	"errors"
	"os"
	"strings"
)

// notSupported is the type of ErrNotSupported: a sentinel that is also
// errors.ErrUnsupported to errors.Is.
type notSupported struct{}

func (notSupported) Error() string { return "not supported" }

func (notSupported) Is(target error) bool { return target == errors.ErrUnsupported }

// ErrNotSupported is devmem.ErrNotSupported.
var ErrNotSupported error = notSupported{}

// Error is devmem.Error.
type Error struct {
	// Op names the operation: "bind-rx", "recvmsg", "setsockopt
	// SO_DEVMEM_DONTNEED", "ethtool SRXCLSRLINS", ...
	Op string
	// Errno is the kernel's error number, a syscall.Errno (0 when the
	// failure is not an errno). Plan 9 has none: it is always 0 there.
	Errno Errno
	// Message is the kernel's extended-ack text, or a hint of ours, if any.
	Message string
	// Err is the underlying error: a package sentinel, or the errno.
	Err error
}

// Error reads "devmem: OP: ERR[ (ERRNO)][: MESSAGE]".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("devmem: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	switch {
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	case e.Errno != 0:
		b.WriteString(e.Errno.Error())
	default:
		b.WriteString("unknown error")
	}
	if e.Errno != 0 && e.Err != nil && !errors.Is(e.Err, e.Errno) {
		b.WriteString(" (")
		b.WriteString(e.Errno.Error())
		b.WriteString(")")
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	return b.String()
}

// Unwrap returns the underlying error and the errno, so errors.Is matches
// both.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Errno != 0 {
		errs = append(errs, e.Errno)
	}
	return errs
}

// Is maps errnos to the portable sentinels: EPERM and EACCES to
// os.ErrPermission, ENODEV and ENOENT to os.ErrNotExist, EOPNOTSUPP to
// ErrNotSupported (and so errors.ErrUnsupported).
func (e *Error) Is(target error) bool {
	switch target {
	case os.ErrPermission:
		return e.Errno == EPERM || e.Errno == EACCES
	case os.ErrNotExist:
		return e.Errno == ENODEV || e.Errno == ENOENT
	case ErrNotSupported, errors.ErrUnsupported:
		return e.Errno == EOPNOTSUPP
	}
	return false
}

// NotSupportedError is devmem.NotSupportedError.
type NotSupportedError struct {
	// Op names the operation that needed the feature ("bind-rx", "open
	// nic", ...).
	Op string
	// Feature says what is missing: "rx-page-size", "generic netlink family
	// ethtool", "devmem TCP on windows/amd64", ...
	Feature string
	// MinKernel is the first Linux version that has Feature ("6.12"), or ""
	// when no kernel version brings it (another OS, a driver that lacks it).
	MinKernel string
	// Err is the refusal that revealed the lack (an *Error with the errno
	// and the kernel's message), or nil.
	Err error
}

// Error says what is missing; the package returns it inside an *Error,
// which adds the "devmem: OP: " prefix.
func (e *NotSupportedError) Error() string {
	var b strings.Builder
	b.WriteString("not supported: ")
	b.WriteString(e.Feature)
	if e.MinKernel != "" {
		b.WriteString(" requires Linux ")
		b.WriteString(e.MinKernel)
		b.WriteString(" or later")
	}
	if e.Err != nil {
		b.WriteString(" (")
		b.WriteString(e.Err.Error())
		b.WriteString(")")
	}
	return b.String()
}

// Is reports whether target is ErrNotSupported or errors.ErrUnsupported.
func (e *NotSupportedError) Is(target error) bool {
	return target == ErrNotSupported || target == errors.ErrUnsupported
}

// Unwrap returns the refusal that revealed the lack, if any.
func (e *NotSupportedError) Unwrap() error { return e.Err }

// NotSupportedBefore builds the error for a feature the running kernel
// lacks, naming the first kernel that has it.
// It is an *Error wrapping a *NotSupportedError, so errors.As finds either.
func NotSupportedBefore(op, feature, version string) error {
	return &Error{Op: op, Err: &NotSupportedError{Op: op, Feature: feature, MinKernel: version}}
}

// NotSupportedOS builds the error every entry point returns outside Linux.
func NotSupportedOS(op, goos, goarch string) error {
	return &Error{Op: op, Err: &NotSupportedError{Op: op, Feature: "devmem TCP on " + goos + "/" + goarch + " (it needs Linux)"}}
}
