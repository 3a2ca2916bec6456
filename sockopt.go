package devmem

import (
	"errors"
	"reflect"
	"strconv"
	"sync"
	"syscall"
)

// opDontneed is the Op of errors from SO_DEVMEM_DONTNEED.
const opDontneed = "setsockopt SO_DEVMEM_DONTNEED"

// A ReleaseError reports tokens the kernel did not free. SO_DEVMEM_DONTNEED
// silently skips tokens that are not outstanding on the socket (never
// issued, already returned, returned twice in one call, or issued by
// another socket) and returns only the number it freed; a short count
// therefore means the caller returned tokens it did not hold, which is a
// bug worth hearing about: those frags' buffers may still be pinned
// elsewhere, or someone else's buffers were just recycled.
//
// A Receiver checks frags before the kernel sees them: those it did not
// hand out, or that were released already, are counted in NotOwned and
// never sent, and the error then matches ErrNotOwned.
type ReleaseError struct {
	// Requested is the number of tokens handed in.
	Requested int
	// Freed is the number the kernel accepted (for Receiver.Done: the
	// number the receiver took, to be released with their batch).
	Freed int
	// NotOwned is the number of frags a Receiver refused because it does
	// not hold them (ErrNotOwned); they are part of Requested-Freed.
	NotOwned int
}

// Error says how many tokens were refused or not freed, and why.
func (e *ReleaseError) Error() string {
	if e.NotOwned > 0 {
		return "devmem: " + opDontneed + ": " + strconv.Itoa(e.NotOwned) + " of " +
			strconv.Itoa(e.Requested) + " frags refused: " + ErrNotOwned.Error()
	}
	return "devmem: " + opDontneed + ": " + strconv.Itoa(e.Requested-e.Freed) + " of " +
		strconv.Itoa(e.Requested) + " tokens were not freed (not outstanding on this socket)"
}

// Unwrap makes errors.Is match ErrNotOwned when a Receiver refused frags.
func (e *ReleaseError) Unwrap() error {
	if e.NotOwned > 0 {
		return ErrNotOwned
	}
	return nil
}

// A TokenReleaser returns devmem tokens of one TCP socket to the kernel
// with SO_DEVMEM_DONTNEED. It coalesces tokens into ranges and splits them
// into calls of at most 128 ranges and 1024 tokens (the kernel's limits;
// past 1024 it stops silently). It reuses its buffers, so releasing does
// not allocate once warmed up. It is safe for concurrent use.
//
// A *Receiver has one built in; use a TokenReleaser when you receive by
// other means.
type TokenReleaser struct {
	mu     sync.Mutex
	rc     syscall.RawConn
	tokens []uint32
	ranges []TokenRange

	// The current call, shared with the pre-bound control function so
	// that RawConn.Control does not allocate a closure per call.
	batch   [maxDontneedRanges]TokenRange
	batchN  int
	ret     uintptr
	errno   sysErrno
	control func(fd uintptr)

	// afterBatch, when set, sees each batch the kernel accepted.
	afterBatch func(batch []TokenRange)
	// calls counts SO_DEVMEM_DONTNEED calls made.
	calls uint64
}

// NewTokenReleaser returns a TokenReleaser for conn, a connected TCP socket
// such as a *net.TCPConn. The TokenReleaser does not own conn. A nil or
// closed conn, or one that is not a connected TCP socket, is an *Error
// with Op "NewTokenReleaser".
func NewTokenReleaser(conn syscall.Conn) (*TokenReleaser, error) {
	rc, err := checkStreamConn("NewTokenReleaser", conn)
	if err != nil {
		return nil, err
	}
	r := &TokenReleaser{rc: rc}
	r.control = r.dontneed
	return r, nil
}

// checkStreamConn returns conn's RawConn after checking that conn is a
// live, connected TCP socket: nil (also a typed nil such as
// (*net.TCPConn)(nil), whose methods panic), closed, not a socket, not a
// stream, not TCP (SO_TYPE, SO_PROTOCOL) and listening sockets are errors
// built here, for op.
func checkStreamConn(op string, conn syscall.Conn) (syscall.RawConn, error) {
	if !sockoptSupported {
		return nil, &Error{Op: op, Err: ErrNotSupported}
	}
	if isNilConn(conn) {
		return nil, &Error{Op: op, Errno: _EINVAL, Err: errors.New("nil conn")}
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, &Error{Op: op, Err: err}
	}
	if rc == nil {
		return nil, &Error{Op: op, Errno: _EINVAL, Err: errors.New("conn has no raw connection")}
	}
	if err := checkTCPSocket(rc); err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Op = op
			return nil, e
		}
		return nil, &Error{Op: op, Err: err}
	}
	return rc, nil
}

// isNilConn reports a nil interface or one holding a nil pointer, map, slice,
// func or chan.
func isNilConn(c any) bool {
	if c == nil {
		return true
	}
	switch v := reflect.ValueOf(c); v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan, reflect.Interface, reflect.UnsafePointer:
		return v.IsNil()
	}
	return false
}

// ReleaseTokens returns tokens to the kernel and reports how many it freed.
// tokens is not modified. If fewer were freed than given, the error is a
// *ReleaseError; if a call failed, it is an *Error with the errno (EBADF:
// not a TCP socket) and freed counts the calls before it.
func (r *TokenReleaser) ReleaseTokens(tokens []uint32) (freed int, err error) {
	if len(tokens) == 0 {
		return 0, nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.tokens = append(r.tokens[:0], tokens...)
	r.ranges = CoalesceTokens(r.ranges[:0], r.tokens)
	return r.releaseLocked(r.ranges, len(tokens))
}

// ReleaseRanges returns token ranges to the kernel as given (no sorting or
// merging; ranges may wrap at 2^32 like the kernel's arithmetic) and
// reports how many tokens it freed, with errors as for ReleaseTokens.
// ranges is not modified.
func (r *TokenReleaser) ReleaseRanges(ranges []TokenRange) (freed int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ranges = append(r.ranges[:0], ranges...)
	requested := 0
	for _, tr := range ranges {
		requested += int(tr.Count)
	}
	return r.releaseLocked(r.ranges, requested)
}

// releaseLocked issues one SO_DEVMEM_DONTNEED per batch of rs (which it
// consumes) and checks the total against requested.
func (r *TokenReleaser) releaseLocked(rs []TokenRange, requested int) (freed int, err error) {
	for len(rs) > 0 {
		var sent int
		r.batchN, sent, rs = nextBatch(&r.batch, rs)
		if r.batchN == 0 {
			break
		}
		if err := r.rc.Control(r.control); err != nil {
			return freed, &Error{Op: opDontneed, Err: err}
		}
		r.calls++
		if r.errno != 0 {
			return freed, &Error{Op: opDontneed, Errno: r.errno, Err: r.errno}
		}
		freed += min(int(r.ret), sent)
		if r.afterBatch != nil {
			r.afterBatch(r.batch[:r.batchN])
		}
	}
	if freed < requested {
		return freed, &ReleaseError{Requested: requested, Freed: freed}
	}
	return freed, nil
}
