package errs

import (
	"errors"
	"syscall"

	"github.com/mdlayher/netlink"
)

// FromNetlink turns the error of a netlink request into an *Error carrying
// the errno and the kernel's extended-ack message; an *Error passes through.
// Both the root package and nic use it, so a refusal reads the same from
// either.
func FromNetlink(op string, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	out := &Error{Op: op, Err: err}
	// netlink.Conn may wrap the kernel's OpError in its own; the message is
	// on the innermost one that has it.
	for inner := err; inner != nil; {
		var oe *netlink.OpError
		if !errors.As(inner, &oe) {
			break
		}
		if oe.Message != "" {
			out.Message = oe.Message
			break
		}
		inner = oe.Err
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		out.Errno = errno
		out.Err = errno
	}
	return out
}
