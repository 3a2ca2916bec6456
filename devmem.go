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
//     devmem queues, a flow-steering rule to them (package
//     github.com/devmem-go/devmem/nic does this and undoes exactly its own
//     changes afterwards).
//  3. Bind the dma-buf to the RX queues with [BindRX]. The [Binding] lives
//     exactly as long as its own netlink socket: Close unbinds.
//  4. Receive with a [Receiver] over the accepted *net.TCPConn. Each call
//     returns the linear bytes (headers the NIC failed to split) and a list of
//     [Frag]s: offset, size and token of payload in the dma-buf.
//  5. Consume the payload in place, then return the tokens
//     ([Receiver.Done], which batches them, or [Receiver.Release]) so the
//     NIC can reuse the memory.
//
// Transmit is the mirror image: [BindTX], then a [Sender] that sends offset
// ranges of the dma-buf with MSG_ZEROCOPY and reports when each range may be
// reused.
//
// Every kernel refusal reaches the caller as an [*Error] carrying the kernel's
// own message (netlink extended ack) and matching errors.Is on the errno and
// on os.ErrPermission, os.ErrNotExist and [ErrNotSupported].
//
// Outside Linux every entry point returns a [*NotSupportedError] (in an
// [*Error]), which
// matches [ErrNotSupported] and errors.ErrUnsupported.
package devmem

import (
	"errors"
	"net"

	"github.com/devmem-go/devmem/internal/errs"
)

var (
	// ErrNotSupported is returned, wrapped, when the running kernel, the
	// device or the operating system lacks what an operation needs. It
	// matches errors.ErrUnsupported too. The errors that carry it are
	// usually a [*NotSupportedError], which names the missing feature and
	// the first kernel that has it, or an [*Error] with errno EOPNOTSUPP.
	ErrNotSupported = errs.ErrNotSupported

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

	// ErrTooManyOutstanding means a Receiver with MaxOutstanding set holds
	// that many tokens that the caller has not released: release some
	// before receiving more.
	ErrTooManyOutstanding = errors.New("too many devmem tokens outstanding")

	// ErrNotOwned means a frag handed to Release or Done is not
	// outstanding on that Receiver: it was released already (its message
	// is stale: the kernel may have reissued the token to another frag),
	// it came from another Receiver, or it did not come from a Receiver
	// at all. Its token is not sent to the kernel.
	ErrNotOwned = errors.New("frag not held from this receiver (already released, or received elsewhere)")

	// ErrTooManyFrags means the control data described more frags than the
	// []Frag passed to ParseControl can hold. The frags that fit were filled in;
	// parse again with a larger slice (see MaxFrags) so no token is lost.
	ErrTooManyFrags = errors.New("more devmem control messages than frags")

	// ErrNotDMABuf means a file descriptor is not a dma-buf.
	ErrNotDMABuf = errors.New("not a dma-buf")

	// ErrOutOfRange is returned by WriteAt for bytes that would fall past the end
	// of the buffer.
	ErrOutOfRange = errors.New("range exceeds the dma-buf")

	// ErrSendsPending is reported by Close when sends had not completed yet.
	ErrSendsPending = errors.New("sends still waiting for zerocopy completion")
)

// Error is the error type of every kernel refusal, here and in the nic
// subpackage. Its fields:
//
//	Op      string  // the operation: "bind-rx", "recvmsg", "ethtool SRXCLSRLINS", ...
//	Errno   syscall.Errno // the kernel's error number; 0 when the failure is not an errno
//	Message string  // the kernel's extended-ack text (netlink), or a hint of ours
//	Err     error   // the underlying error: a package sentinel, or the errno
//
// errors.Is matches the errno, Err, and the portable sentinels: EPERM and
// EACCES match os.ErrPermission, ENODEV and ENOENT os.ErrNotExist,
// EOPNOTSUPP [ErrNotSupported] and errors.ErrUnsupported. (The type is
// defined in an internal package so that package nic returns it without
// importing this one.)
type Error = errs.Error

// NotSupportedError says that the running kernel, the device or the
// operating system lacks a feature an operation needs. The package returns
// it inside an [*Error] (for the "devmem: OP: " prefix). Its fields:
//
//	Op        string // the operation that needed it: "bind-rx", "open nic", ...
//	Feature   string // what is missing: "rx-page-size", "generic netlink family ethtool", ...
//	MinKernel string // the first Linux version that has Feature ("6.12"); "" when none does
//	Err       error  // the refusal that revealed the lack, or nil
//
// It matches [ErrNotSupported] and errors.ErrUnsupported with errors.Is,
// so callers that only want to know "unsupported?" need not name it;
// errors.As gets the version:
//
//	var nse *devmem.NotSupportedError
//	if errors.As(err, &nse) && nse.MinKernel != "" {
//		log.Printf("%s needs Linux %s", nse.Feature, nse.MinKernel)
//	}
type NotSupportedError = errs.NotSupportedError

// sysErrno is the type of Error.Errno: syscall.Errno, or a number type on
// Plan 9, which has no errnos. OS-neutral code names errnos with it.
type sysErrno = errs.Errno

// errNotSupportedBefore builds the error for a feature the running kernel
// lacks, naming the first kernel that has it.
func errNotSupportedBefore(op, feature, version string) error {
	return errs.NotSupportedBefore(op, feature, version)
}

// errClosed builds the error of an operation on a closed Receiver, Sender,
// Binding, TokenReleaser, DMABuf or Netdev: it matches net.ErrClosed.
func errClosed(op string) error { return &Error{Op: op, Err: net.ErrClosed} }

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
