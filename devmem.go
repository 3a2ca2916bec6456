// Package devmem brings Linux device memory TCP (devmem TCP) to Go.
//
// With devmem TCP the NIC writes TCP payload straight into device memory (a
// GPU buffer, or a udmabuf in tests) that was bound to one or more of its RX
// queues; user space only learns where each piece of payload landed. The flow
// is:
//
//  1. Make or import a dma-buf ([NewUDMABuf], or a GPU exporter such as the
//     cuda subpackage).
//  2. Prepare the NIC: header split on, hds-thresh 0, RSS away from the
//     devmem queues, a flow-steering rule to them (see [NIC]).
//  3. Bind the dma-buf to the RX queues with [BindRX]. The [Binding] lives
//     exactly as long as its own netlink socket: Close unbinds.
//  4. Receive with a [Receiver] over the accepted *net.TCPConn. Each call
//     returns the linear bytes (headers the NIC failed to split) and a list of
//     [Frag]s: offset, size and token of payload in the dma-buf.
//  5. Consume the payload in place, then return the tokens ([Receiver.Release]
//     or a [TokenBatcher]) so the NIC can reuse the memory.
//
// Transmit is the mirror image: [BindTX], then a [Sender] that sends offset
// ranges of the dma-buf with MSG_ZEROCOPY and reports when each range may be
// reused.
//
// Every kernel refusal reaches the caller as an [*Error] carrying the kernel's
// own message (netlink extended ack) and matching errors.Is on the errno and
// on os.ErrPermission, os.ErrNotExist and [ErrNotSupported].
//
// Outside Linux every entry point returns [ErrNotSupported].
package devmem

import (
	"errors"
	"os"
	"strings"
)

var (
	// ErrNotSupported is returned when the running kernel, the device or the
	// operating system lacks what an operation needs. Errors that wrap it
	// name the minimum kernel version where one applies.
	ErrNotSupported = errors.New("not supported")

	// ErrControlTooSmall means the control buffer could not hold even one
	// devmem control message (errno 525, ETOOSMALL).
	ErrControlTooSmall = errors.New("control buffer too small for a devmem control message")

	// ErrNotDevmem means data arrived that the NIC did not put in device
	// memory: it was readable (a flow-steering miss) or, with a strict
	// receiver, linear.
	ErrNotDevmem = errors.New("data not in device memory (check flow steering)")

	// ErrForeignDMABuf means a frag carried a dma-buf id that is not one of
	// the receiver's bindings.
	ErrForeignDMABuf = errors.New("frag from a dma-buf that is not bound by this receiver")

	// ErrMalformedControl means a control message was truncated or
	// inconsistent.
	ErrMalformedControl = errors.New("malformed control message")
)

// Error is the error type of every kernel refusal. It carries the operation,
// the errno and, for netlink operations, the kernel's extended-ack message.
type Error struct {
	// Op names the operation: "bind-rx", "recvmsg", "setsockopt
	// SO_DEVMEM_DONTNEED", ...
	Op string
	// Errno is the kernel's error number (0 when Err is not an errno).
	Errno Errno
	// Message is the kernel's extended-ack text, if any.
	Message string
	// Err is the underlying error: a package sentinel, or Errno.
	Err error
}

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
// both (for example ErrControlTooSmall and errno 525, ETOOSMALL).
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
// ErrNotSupported.
func (e *Error) Is(target error) bool {
	switch target {
	case os.ErrPermission:
		return e.Errno == _EPERM || e.Errno == _EACCES
	case os.ErrNotExist:
		return e.Errno == _ENODEV || e.Errno == _ENOENT
	case ErrNotSupported:
		return e.Errno == _EOPNOTSUPP
	}
	return false
}

// errNotSupportedBefore builds the error for a feature the running kernel
// lacks, naming the first kernel that has it.
func errNotSupportedBefore(op, feature, version string) error {
	return &Error{Op: op, Err: ErrNotSupported, Message: feature + " requires Linux " + version + " or later"}
}

func itoa(v uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return string(b[i:])
}
