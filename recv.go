package devmem

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// opRecvmsg is the Op of every Receiver error.
const opRecvmsg = "recvmsg"

// DefaultBufferSize is ReceiverConfig.BufferSize's default: ncdevmem's
// per-call budget.
const DefaultBufferSize = 819200

// ErrTooManyOutstanding means a Receiver with MaxOutstanding set holds that
// many unreleased tokens: release some before receiving more.
var ErrTooManyOutstanding = errors.New("too many devmem tokens outstanding")

// ReceiverConfig configures a Receiver. The zero value is usable.
type ReceiverConfig struct {
	// BufferSize is the length of the iovec passed to each recvmsg. The
	// kernel counts linear and dma-buf bytes against it, so it bounds the
	// bytes one Recv consumes, although only linear bytes are written
	// into it. Default DefaultBufferSize (819200).
	BufferSize int

	// ControlSize is the size of the control buffer. The kernel stops
	// filling a call when the next devmem control message would not fit
	// (and fails with ETOOSMALL only when not even one fits), so this
	// trades memory for calls, never data. Default: room for one frag per
	// KiB of BufferSize plus 64, DevmemCmsgSpace bytes each (34560 bytes
	// for the default BufferSize on 64-bit): frags are at most a page
	// (or rx-page-size) and at least one TCP segment's payload apart from
	// the pieces at skb edges.
	ControlSize int

	// Strict makes the receiver refuse data that is not in device memory
	// instead of copying it. The iovec has iov_base NULL (kperf's trick),
	// so the kernel's copy of readable (non-devmem) data faults: recvmsg
	// fails with EFAULT before consuming anything, Recv returns an error
	// matching ErrNotDevmem and syscall.EFAULT, and the bytes stay queued
	// on the socket, readable by a plain Read. Linear bytes of a devmem
	// skb (headers the NIC did not split) fault the same way, also before
	// they are consumed; such a stream can only be drained by a
	// non-strict Receiver. Should a SCM_DEVMEM_LINEAR message arrive
	// anyway, Recv returns ErrNotDevmem with the frags.
	Strict bool

	// DMABufIDs lists the binding ids this receiver expects (Binding IDs
	// from bind-rx). A frag from any other dma-buf makes Recv return an
	// error matching ErrForeignDMABuf, together with all the frags, so
	// their tokens can still be released. Empty: no check.
	DMABufIDs []uint32

	// MaxOutstanding caps the tokens received and not yet released.
	// When reached, Recv returns ErrTooManyOutstanding without reading,
	// so a consumer that falls behind stops taking more of the NIC's
	// buffers; TCP flow control then holds the sender back. Zero: no cap.
	MaxOutstanding int
}

// A Message is what one Recv consumed from the stream.
//
// Frags and Linear alias buffers owned by the Receiver and are valid until
// the next Recv or RecvContext on it. The payload described by FragDMABuf
// frags stays valid until their tokens are released.
type Message struct {
	// Frags are the pieces of payload in stream order. A FragLinear
	// frag's bytes are Linear[Offset:Offset+Size]; a FragDMABuf frag's
	// are in the dma-buf. Release every FragDMABuf frag's token once
	// consumed.
	Frags []Frag
	// Linear is the bytes copied into the receive buffer: the linear
	// parts of devmem skbs, or all of N when Readable.
	Linear []byte
	// N is the number of stream bytes consumed: the sum of the frag
	// sizes.
	N int
	// Readable reports data that the NIC did not put in device memory
	// (a flow-steering miss or a non-devmem queue): the kernel copied it
	// like a plain read, and Frags holds one FragLinear covering Linear.
	// Only a non-strict Receiver returns it.
	Readable bool
}

// A Receiver receives devmem TCP data from one socket: recvmsg with
// MSG_SOCK_DEVMEM through the Go runtime's poller, so a blocked Recv parks
// only its goroutine and honours read deadlines. It keeps track of the
// tokens it handed out until they are released, and releases the rest on
// Close.
//
// Recv and RecvContext may not be called concurrently with each other;
// Release, ReleaseTokens, Outstanding and Close may be called from any
// goroutine. Recv does not allocate once the receiver is warmed up.
type Receiver struct {
	rc        syscall.RawConn
	deadliner interface{ SetReadDeadline(time.Time) error }
	strict    bool
	ids       []uint32
	maxOut    int

	buf   []byte // linear bytes; nil when strict
	oob   []byte
	frags []Frag

	// recvMu serializes receives; Close takes it to wait out one in
	// flight.
	recvMu sync.Mutex
	closed atomic.Bool
	// State of the current recvmsg, shared with the pre-bound read
	// function so RawConn.Read does not allocate a closure.
	sys    recvSys
	n      int
	errno  Errno
	readFn func(fd uintptr) bool

	// mu guards outstanding and is held across each release, so a token
	// the kernel frees and reissues to a concurrent Recv is removed
	// before it is added again.
	mu          sync.Mutex
	outstanding tokenSet
	rel         TokenReleaser
	relTokens   []uint32
	relRanges   []TokenRange
}

// NewReceiver returns a Receiver for conn, an accepted *net.TCPConn whose
// flow is steered to RX queues bound with BindRX. conn stays owned by the
// caller and must stay open while the Receiver is used; a conn with a
// SetReadDeadline method (any net.Conn) also enables RecvContext and lets
// Close interrupt a blocked Recv. cfg may be nil.
func NewReceiver(conn syscall.Conn, cfg *ReceiverConfig) (*Receiver, error) {
	var c ReceiverConfig
	if cfg != nil {
		c = *cfg
	}
	if c.BufferSize <= 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.ControlSize <= 0 {
		c.ControlSize = DevmemCmsgSpace * (c.BufferSize/1024 + 64)
	}
	r := &Receiver{
		strict: c.Strict,
		ids:    append([]uint32(nil), c.DMABufIDs...),
		maxOut: c.MaxOutstanding,
		oob:    make([]byte, c.ControlSize),
		frags:  make([]Frag, max(1, MaxFrags(c.ControlSize))),
	}
	if err := r.rel.init(conn); err != nil {
		return nil, err
	}
	r.rc = r.rel.rc
	r.rel.afterBatch = r.released
	if d, ok := conn.(interface{ SetReadDeadline(time.Time) error }); ok {
		r.deadliner = d
	}
	if !r.strict {
		r.buf = make([]byte, c.BufferSize)
	}
	r.initSys(c.BufferSize)
	return r, nil
}

// Recv receives the next chunk of the stream, blocking until data, EOF
// (io.EOF), an error or the read deadline. Errors are *Error with Op
// "recvmsg" and the errno; sentinels to expect: ErrNotDevmem (strict),
// ErrForeignDMABuf, ErrControlTooSmall (ETOOSMALL), ErrMalformedControl,
// ErrTooManyOutstanding, net.ErrClosed (after Close), and
// os.ErrDeadlineExceeded. Whenever frags were received, the Message holds
// them, error or not: release their tokens.
func (r *Receiver) Recv() (Message, error) {
	r.recvMu.Lock()
	defer r.recvMu.Unlock()
	if r.closed.Load() {
		return Message{}, &Error{Op: opRecvmsg, Err: net.ErrClosed}
	}
	if r.maxOut > 0 {
		r.mu.Lock()
		out := r.outstanding.n
		r.mu.Unlock()
		if out >= r.maxOut {
			return Message{}, &Error{Op: opRecvmsg, Err: ErrTooManyOutstanding}
		}
	}
	msg, err := r.recv()
	if err != nil && msg.N == 0 && r.closed.Load() {
		// Close interrupted us through the read deadline.
		err = &Error{Op: opRecvmsg, Err: net.ErrClosed}
	}
	return msg, err
}

// aLongTimeAgo is a deadline in the past, to wake a blocked read.
var aLongTimeAgo = time.Unix(1, 0)

// RecvContext is Recv, interrupted when ctx is done; it then returns an
// error matching ctx's error. The interruption sets a read deadline in the
// past on the conn, and RecvContext clears the read deadline (to none)
// afterwards: don't combine RecvContext with SetReadDeadline on the same
// conn. A cancellable ctx costs a few allocations per call.
func (r *Receiver) RecvContext(ctx context.Context) (Message, error) {
	if ctx.Done() == nil {
		return r.Recv()
	}
	if err := ctx.Err(); err != nil {
		return Message{}, &Error{Op: opRecvmsg, Err: context.Cause(ctx)}
	}
	if r.deadliner == nil {
		return Message{}, &Error{Op: opRecvmsg, Err: errors.New("RecvContext needs a conn with SetReadDeadline")}
	}
	var (
		mu           sync.Mutex
		done, failed bool
	)
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !done {
			failed = true
			r.deadliner.SetReadDeadline(aLongTimeAgo)
		}
	})
	msg, err := r.Recv()
	if !stop() {
		mu.Lock()
		done = true
		interrupted := failed
		mu.Unlock()
		if interrupted {
			r.deadliner.SetReadDeadline(time.Time{})
			if err != nil && msg.N == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				err = &Error{Op: opRecvmsg, Err: context.Cause(ctx)}
			}
		}
	}
	return msg, err
}

// Release returns the tokens of frags (FragDMABuf ones; linear frags carry
// none) once their payload is consumed, and reports how many the kernel
// freed. Tokens this receiver does not hold outstanding are not sent and
// make the error a *ReleaseError, as does a short count from the kernel.
// It does not allocate once warmed up.
func (r *Receiver) Release(frags []Frag) (freed int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.relTokens = r.relTokens[:0]
	requested := 0
	for i := range frags {
		if frags[i].Kind == FragDMABuf {
			requested++
			if r.outstanding.has(frags[i].Token) {
				r.relTokens = append(r.relTokens, frags[i].Token)
			}
		}
	}
	return r.releaseLocked(requested)
}

// ReleaseTokens is Release for bare tokens; it makes *Receiver a Releaser
// for a TokenBatcher.
func (r *Receiver) ReleaseTokens(tokens []uint32) (freed int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.relTokens = r.relTokens[:0]
	for _, t := range tokens {
		if r.outstanding.has(t) {
			r.relTokens = append(r.relTokens, t)
		}
	}
	return r.releaseLocked(len(tokens))
}

func (r *Receiver) releaseLocked(requested int) (int, error) {
	if requested == 0 {
		return 0, nil
	}
	r.relRanges = CoalesceTokens(r.relRanges[:0], r.relTokens)
	r.rel.mu.Lock()
	defer r.rel.mu.Unlock()
	return r.rel.releaseLocked(r.relRanges, requested)
}

// released forgets a batch the kernel accepted (TokenReleaser.afterBatch;
// r.mu is held).
func (r *Receiver) released(batch []TokenRange) {
	for _, b := range batch {
		for i := uint32(0); i < b.Count; i++ {
			r.outstanding.remove(b.Start + i)
		}
	}
}

// Outstanding returns the number of tokens received and not yet released.
func (r *Receiver) Outstanding() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.outstanding.n
}

// Close stops the receiver and returns every token still outstanding to
// the kernel. A Recv blocked in another goroutine is interrupted (through
// a read deadline, which Close clears afterwards) if the conn has
// SetReadDeadline; otherwise Close waits for it. Close does not close the
// conn. If the conn was closed already, the kernel released the tokens with
// the socket and Close reports success.
func (r *Receiver) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	if r.deadliner != nil {
		r.deadliner.SetReadDeadline(aLongTimeAgo)
	}
	r.recvMu.Lock()
	if r.deadliner != nil {
		r.deadliner.SetReadDeadline(time.Time{})
	}
	r.recvMu.Unlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	requested := r.outstanding.n
	if requested == 0 {
		return nil
	}
	r.relRanges = r.outstanding.appendRanges(r.relRanges[:0])
	r.rel.mu.Lock()
	defer r.rel.mu.Unlock()
	_, err := r.rel.releaseLocked(r.relRanges, requested)
	if errors.Is(err, net.ErrClosed) {
		r.outstanding = tokenSet{}
		return nil
	}
	return err
}

// finish builds the Message for n bytes whose control data parsed into
// nf frags, and applies the receiver's checks. Tokens are recorded first:
// whatever the error, the frags are returned so none is lost.
func (r *Receiver) finish(n, nf int, perr error) (Message, error) {
	msg := Message{Frags: r.frags[:nf], N: n}
	linear, total := 0, 0
	foreign := false
	r.mu.Lock()
	for i := range msg.Frags {
		f := &msg.Frags[i]
		total += int(f.Size)
		if f.Kind == FragLinear {
			linear += int(f.Size)
			continue
		}
		r.outstanding.add(f.Token)
		if len(r.ids) > 0 && !containsID(r.ids, f.DMABufID) {
			foreign = true
		}
	}
	r.mu.Unlock()
	if perr != nil {
		return msg, &Error{Op: opRecvmsg, Err: perr}
	}
	if nf == 0 {
		if r.strict {
			// Cannot happen: the copy faults first.
			return msg, &Error{Op: opRecvmsg, Err: ErrNotDevmem, Message: "readable data copied by a strict receiver"}
		}
		// No devmem control message: the kernel copied readable data.
		r.frags[0] = Frag{Kind: FragLinear, Size: uint32(n)}
		msg.Frags = r.frags[:1]
		msg.Linear = r.buf[:n]
		msg.Readable = true
		return msg, nil
	}
	if r.strict && linear > 0 {
		return msg, &Error{Op: opRecvmsg, Err: ErrNotDevmem, Message: "linear bytes received by a strict receiver"}
	}
	if linear > len(r.buf) || total != n {
		return msg, &Error{Op: opRecvmsg, Err: &controlError{reason: "frag sizes sum to " + itoa(uint64(total)) +
			" (" + itoa(uint64(linear)) + " linear), recvmsg returned " + itoa(uint64(n))}}
	}
	msg.Linear = r.buf[:linear]
	if foreign {
		return msg, &Error{Op: opRecvmsg, Err: ErrForeignDMABuf}
	}
	return msg, nil
}

func containsID(ids []uint32, id uint32) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}
