package devmem

import (
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
type ReleaseError struct {
	// Requested is the number of tokens handed in.
	Requested int
	// Freed is the number the kernel (or, for a *Receiver, the
	// receiver's own accounting) accepted.
	Freed int
}

func (e *ReleaseError) Error() string {
	return "devmem: " + opDontneed + ": " + strconv.Itoa(e.Requested-e.Freed) + " of " +
		strconv.Itoa(e.Requested) + " tokens were not freed (not outstanding on this socket)"
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
	errno   Errno
	control func(fd uintptr)

	// afterBatch, when set, sees each batch the kernel accepted.
	afterBatch func(batch []TokenRange)
}

// NewTokenReleaser returns a TokenReleaser for conn, a TCP socket such as
// a *net.TCPConn. The TokenReleaser does not own conn.
func NewTokenReleaser(conn syscall.Conn) (*TokenReleaser, error) {
	r := &TokenReleaser{}
	if err := r.init(conn); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *TokenReleaser) init(conn syscall.Conn) error {
	if !sockoptSupported {
		return ErrNotSupported
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	r.rc = rc
	r.control = r.dontneed
	return nil
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
