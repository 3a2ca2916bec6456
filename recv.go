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

// opRecvmsg is the Op of every Receiver error from receiving.
const opRecvmsg = "recvmsg"

// opNewReceiver is the Op of NewReceiver's errors.
const opNewReceiver = "NewReceiver"

// DefaultBufferSize is ReceiverConfig.BufferSize's default: ncdevmem's
// per-call budget.
const DefaultBufferSize = 819200

// errnoTooSmall is ETOOSMALL, the kernel-internal errno (525) recvmsg
// returns when the control buffer cannot hold even one devmem control
// message. It has no name in libc or x/sys; errors carry it as Errno
// together with ErrControlTooSmall.
const errnoTooSmall = sysErrno(525)

// ReceiverConfig configures a Receiver. The zero value is usable.
type ReceiverConfig struct {
	// BufferSize is the length of the iovec passed to each recvmsg. The
	// kernel counts linear and dma-buf bytes against it, so it bounds the
	// bytes one Recv consumes, although only linear bytes are written
	// into it. Default DefaultBufferSize (819200).
	BufferSize int

	// ControlSize is the size of the control buffer. The kernel stops
	// filling a call when the next devmem control message would not fit,
	// so this trades memory for calls, never data; it must have room for
	// at least one message (MaxFrags(ControlSize) >= 1), else NewReceiver
	// fails with ErrControlTooSmall. Default: room for one frag per KiB of
	// BufferSize plus 64 (34560 bytes on 64-bit for the default
	// BufferSize): frags are at most a page (or rx-page-size) and at
	// least one TCP segment's payload apart from the pieces at skb and
	// buffer edges.
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

	// Bindings are further RX bindings whose dma-bufs may feed this
	// socket, besides the one given to NewReceiver: a flow steered to
	// queues bound to different dma-bufs. A frag from any other dma-buf
	// makes Recv return an error matching ErrForeignDMABuf, together with
	// the frags, so their tokens can still be released.
	Bindings []*Binding

	// MaxOutstanding caps the tokens received and not yet returned to the
	// kernel (held by the caller, or released with Done and waiting for
	// their batch). It is a hard bound: each recvmsg gets a control buffer
	// with room for no more frags than are left, and with nothing left,
	// Recv first returns the batch waiting, if any, else fails at once
	// with ErrTooManyOutstanding, so a consumer that falls behind stops
	// taking the NIC's buffers and TCP flow control holds the sender
	// back. Zero: no cap.
	MaxOutstanding int

	// ReleaseBatch is how many tokens released with Done wait before one
	// SO_DEVMEM_DONTNEED returns them. Default: a quarter of the buffers
	// the receiver may hold (MaxOutstanding, else the bindings' buffer
	// count), clamped to [1, 1024]; 64 when neither is known. So with 256
	// buffers or more, the receiver makes at most one SO_DEVMEM_DONTNEED
	// per 64 frags, whether the NIC or the consumer sets the pace. See
	// Done for when a batch goes earlier.
	ReleaseBatch int

	// ReleaseDelay bounds how long tokens released with Done wait while
	// the receiver is idle: when a Recv blocks for lack of data with a
	// batch waiting, the batch goes back after this long if nothing was
	// received since. A receiver that kept receiving sends it then only if
	// it holds 64 tokens or more, else looks again after each further
	// delay, and sends it at the latest 8 ReleaseDelays after the first
	// wait: so waits between packets do not make one SO_DEVMEM_DONTNEED
	// per few frags. Default 10ms.
	ReleaseDelay time.Duration

	// BlockThread makes a Recv that finds no data wait in poll(2) on its
	// own OS thread, as a C receiver blocking in recvmsg does, instead of
	// parking the goroutine in the Go runtime's network poller. A few
	// busy flows then pay no park, poller wake-up or thread hand-off per
	// wait; each blocked Recv holds a thread, so it is not for thousands
	// of connections. Close and a cancelled RecvContext interrupt the wait
	// at once (through an eventfd, so RecvContext needs no
	// SetReadDeadline); a read deadline set on the conn, and the conn
	// being closed, are seen within 10ms, and the conn's Close waits
	// that long for a Recv in flight. The ReleaseDelay flush is made by
	// the waiting Recv itself. Since such a receive loop never parks, Recv
	// yields the goroutine's P every 5ms (as runtime.Gosched does, but on
	// its own P and waking no other thread), so that the runtime does not
	// take it for a CPU hog and preempt it or take its P away every 10ms
	// (a receiver whose socket never runs dry does the same in either
	// mode).
	BlockThread bool
}

// presizeTokens caps how many tokens a Receiver's token maps are sized for
// at the start (4 bytes + 1 bit each; they grow past it when needed).
const presizeTokens = 8192

// defaultReleaseDelay is ReceiverConfig.ReleaseDelay's default.
const defaultReleaseDelay = 10 * time.Millisecond

// defaultReleaseBatch is ReleaseBatch when the receiver's token budget is
// unknown: the smallest batch that still keeps SO_DEVMEM_DONTNEED calls at
// 1/64 per frag.
const defaultReleaseBatch = 64

// rxBufferSize is the buffer size of a bound RX queue unless rx-page-size
// says otherwise: one page.
const rxBufferSize = 4096

// A Message is what one receive consumed from the stream.
//
// From Recv and RecvContext, Frags and Linear alias buffers owned by the
// Receiver and are valid until the next Recv or RecvContext on it: do not
// hand such a Message to another goroutine. RecvInto fills a Message that
// the caller owns instead: its Frags and Linear stay valid, and the Message
// may travel, until the caller reuses it. The payload described by
// FragDMABuf frags stays valid until their tokens are released.
type Message struct {
	// Frags are the pieces of payload in stream order. A FragLinear
	// frag's bytes are Linear[Offset:Offset+Size]; a FragDMABuf frag's
	// are in the dma-buf. Release every FragDMABuf frag's token once
	// consumed (Release or Done).
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
// only its goroutine and honours read deadlines (with
// ReceiverConfig.BlockThread it waits in poll(2) on its thread instead). It keeps track of the
// tokens it handed out until they are released, refuses to release a frag
// it does not hold (ErrNotOwned), and releases the rest on Close.
//
// Recv, RecvContext and RecvInto may not be called concurrently with each
// other; Release, Done, Flush, Outstanding, Stats and Close may be called
// from any goroutine. Receiving and releasing do not allocate once the
// receiver (and, for RecvInto, the Message) is warmed up.
type Receiver struct {
	rc          syscall.RawConn
	deadliner   interface{ SetReadDeadline(time.Time) error }
	strict      bool
	blockThread bool
	bufSize     int
	maxOut      int
	// bindings keeps every binding reachable for the receiver's life:
	// their ids are what frags are checked against.
	bindings []*Binding
	ids      []uint32

	buf   []byte // Recv's linear bytes; nil when strict
	oob   []byte
	frags []Frag // Recv's frags

	// recvMu serializes receives; Close takes it to wait out one in
	// flight.
	recvMu sync.Mutex
	closed atomic.Bool
	// State of the current recvmsg, shared with the pre-bound read
	// function so RawConn.Read does not allocate a closure.
	sys    recvSys
	ctlLen int // control bytes offered to this call
	n      int
	errno  sysErrno
	readFn func(fd uintptr) bool

	// mu guards everything below and is held across each release, so a
	// token the kernel frees and reissues to a concurrent Recv is removed
	// before it is added again.
	mu sync.Mutex
	// outstanding are the tokens the kernel handed out and not yet got
	// back; held maps each of those the caller may still release to the
	// generation of the receive that returned it (0: not releasable, it
	// is waiting in pending or its release failed). pending are the
	// tokens Done took, waiting for a batch: a set, so that a flush reads
	// them off as sorted ranges instead of sorting them.
	outstanding tokenSet
	held        []uint32
	pending     tokenSet
	batch       int
	budget      int // buffers the receiver may hold: MaxOutstanding, or the bindings' count, or 4*batch
	delay       time.Duration
	idle        *time.Timer // the ReleaseDelay flush; nil with BlockThread, which waits until idleAt
	idleAt      time.Time
	idleArmed   bool
	// idleSince and idleCalls: when the delayed flush was armed, and
	// RecvCalls then (see idleFlushDue).
	idleSince time.Time
	idleCalls uint64
	stats     ReceiverStats
	rel       TokenReleaser
	relTokens tokenSet // Release's claim
	relRanges []TokenRange
}

// recvGen numbers receives process-wide, so a frag names the receive (and
// thereby the Receiver) it came from.
var recvGen atomic.Uint32

func nextGen() uint32 {
	for {
		if g := recvGen.Add(1); g != 0 {
			return g
		}
	}
}

// NewReceiver returns a Receiver for conn, an accepted TCP connection (a
// *net.TCPConn) whose flow is steered to RX queues bound to b's dma-buf
// (and cfg.Bindings'); frags from any other dma-buf are reported as
// ErrForeignDMABuf. b must be an RX binding and stays referenced by the
// Receiver; unbinding it (Binding.Close) while receiving stops devmem
// delivery, it does not invalidate tokens already received.
//
// conn stays owned by the caller and must stay open while the Receiver is
// used; a conn with a SetReadDeadline method (any net.Conn) also enables
// RecvContext and lets Close interrupt a blocked Recv. cfg may be nil.
// Bad arguments (a nil or closed conn, one that is not a connected TCP
// socket, a missing or TX binding, a control buffer too small for one
// message) are *Error values with Op "NewReceiver".
func NewReceiver(conn syscall.Conn, b *Binding, cfg *ReceiverConfig) (*Receiver, error) {
	r, err := newReceiver(b, cfg)
	if err != nil {
		return nil, err
	}
	rc, err := checkStreamConn(opNewReceiver, conn)
	if err != nil {
		return nil, err
	}
	var deadliner interface{ SetReadDeadline(time.Time) error }
	if d, ok := conn.(interface{ SetReadDeadline(time.Time) error }); ok {
		deadliner = d
	}
	if err := r.start(rc, deadliner); err != nil {
		return nil, err
	}
	return r, nil
}

// newReceiver checks the bindings and the configuration and sizes the
// receiver; start attaches it to a socket.
func newReceiver(b *Binding, cfg *ReceiverConfig) (*Receiver, error) {
	var c ReceiverConfig
	if cfg != nil {
		c = *cfg
	}
	r := &Receiver{strict: c.Strict, maxOut: c.MaxOutstanding, blockThread: c.BlockThread}
	var bufBytes int64
	for i, bb := range append([]*Binding{b}, c.Bindings...) {
		if bb == nil {
			what := "nil *Binding"
			if i > 0 {
				what = "nil *Binding in ReceiverConfig.Bindings"
			}
			return nil, &Error{Op: opNewReceiver, Errno: _EINVAL, Err: errors.New(what)}
		}
		if d := bb.Direction(); d != DirectionRX {
			return nil, &Error{Op: opNewReceiver, Errno: _EINVAL, Err: errors.New("binding " + itoa(uint64(bb.ID())) +
				" is a " + d.String() + " binding; a Receiver needs one made by BindRX")}
		}
		if c, ok := any(bb).(interface{ Closed() bool }); ok && c.Closed() {
			return nil, &Error{Op: opNewReceiver, Errno: _EINVAL, Err: errors.New("binding " + itoa(uint64(bb.ID())) +
				" is closed (unbound)")}
		}
		r.bindings = append(r.bindings, bb)
		r.ids = append(r.ids, bb.ID())
		bufBytes += bindingSize(bb)
	}
	if c.MaxOutstanding < 0 || c.BufferSize < 0 || c.ControlSize < 0 || c.ReleaseBatch < 0 || c.ReleaseDelay < 0 {
		return nil, &Error{Op: opNewReceiver, Errno: _EINVAL, Err: errors.New("negative ReceiverConfig field")}
	}
	if c.BufferSize == 0 {
		c.BufferSize = DefaultBufferSize
	}
	if c.ControlSize == 0 {
		c.ControlSize = controlLen(c.BufferSize/1024 + 64)
	}
	if MaxFrags(c.ControlSize) < 1 {
		return nil, &Error{Op: opNewReceiver, Errno: errnoTooSmall, Err: ErrControlTooSmall,
			Message: "ControlSize " + itoa(uint64(c.ControlSize)) + " is below one devmem control message (" +
				itoa(uint64(controlLen(1))) + " bytes)"}
	}

	budget := c.MaxOutstanding
	if budget == 0 {
		budget = int(bufBytes / rxBufferSize)
	}
	switch {
	case c.ReleaseBatch > 0:
		r.batch = c.ReleaseBatch
	case budget > 0:
		r.batch = min(max(budget/4, 1), maxDontneedFrags)
	default:
		r.batch = defaultReleaseBatch
	}
	if c.MaxOutstanding > 0 {
		r.batch = min(r.batch, c.MaxOutstanding)
	}
	r.budget = budget
	if r.budget == 0 {
		r.budget = 4 * r.batch
	}
	r.delay = c.ReleaseDelay
	if r.delay == 0 {
		r.delay = defaultReleaseDelay
	}

	// Tokens are handed out lowest-free, so the highest one stays near
	// the peak outstanding, bounded by the budget: size the token maps
	// for it up front (up to presizeTokens), so that a flow whose peak
	// creeps up does not allocate in steady state.
	presize := min(r.budget, presizeTokens)
	r.growHeld(uint32(presize))
	r.outstanding.reserve(uint32(presize))
	r.pending.reserve(uint32(presize))
	r.relTokens.reserve(uint32(presize))

	r.bufSize = c.BufferSize
	r.oob = make([]byte, c.ControlSize)
	r.frags = make([]Frag, MaxFrags(c.ControlSize))
	if !r.strict {
		r.buf = make([]byte, c.BufferSize)
	}
	return r, nil
}

func (r *Receiver) start(rc syscall.RawConn, deadliner interface{ SetReadDeadline(time.Time) error }) error {
	r.rc = rc
	r.deadliner = deadliner
	r.rel.rc = rc
	r.rel.control = r.rel.dontneed
	r.rel.afterBatch = r.released
	if !r.blockThread {
		r.idle = time.AfterFunc(time.Hour, r.idleFlush)
		r.idle.Stop()
	}
	return r.initSys()
}

// bindingSize is the size of b's dma-buf in bytes, 0 where the Binding
// does not say.
func bindingSize(b *Binding) int64 {
	if s, ok := any(b).(interface{ Size() int64 }); ok {
		return s.Size()
	}
	return 0
}

// Recv receives the next chunk of the stream, blocking until data, EOF
// (io.EOF), an error or the read deadline. The Message aliases the
// Receiver's buffers until the next Recv (see Message; RecvInto fills a
// Message of the caller's). Errors are *Error with Op "recvmsg" and the
// errno; sentinels to expect: ErrNotDevmem (strict), ErrForeignDMABuf,
// ErrControlTooSmall (ETOOSMALL), ErrMalformedControl,
// ErrTooManyOutstanding, net.ErrClosed (after Close), and
// os.ErrDeadlineExceeded. Whenever frags were received, the Message holds
// them, error or not: release their tokens.
func (r *Receiver) Recv() (Message, error) {
	r.recvMu.Lock()
	defer r.recvMu.Unlock()
	return r.recvLocked(r.frags, r.buf)
}

// RecvInto is Recv into a Message the caller owns: m.Frags and m.Linear
// are overwritten, reusing their capacity (grown once to what the receiver
// needs), and stay valid until the caller passes m to RecvInto again. So m
// may go to another goroutine that consumes and releases its frags while
// this one receives into another Message. m's previous frags must have been
// released, or handed to Done, before: their tokens are not returned by
// reusing m. ctx interrupts the receive as for RecvContext
// (context.Background() for none).
func (r *Receiver) RecvInto(ctx context.Context, m *Message) error {
	if m == nil {
		return &Error{Op: opRecvmsg, Err: errors.New("nil *Message")}
	}
	return r.withContext(ctx, func() error {
		r.recvMu.Lock()
		defer r.recvMu.Unlock()
		if cap(m.Frags) < len(r.frags) {
			m.Frags = make([]Frag, len(r.frags))
		}
		if !r.strict && cap(m.Linear) < r.bufSize {
			m.Linear = make([]byte, r.bufSize)
		}
		var err error
		*m, err = r.recvLocked(m.Frags[:len(r.frags)], m.Linear[:cap(m.Linear)])
		return err
	})
}

func (r *Receiver) recvLocked(frags []Frag, buf []byte) (Message, error) {
	if r.closed.Load() {
		return Message{Frags: frags[:0], Linear: buf[:0]}, &Error{Op: opRecvmsg, Err: net.ErrClosed}
	}
	r.ctlLen = len(r.oob)
	if r.maxOut > 0 {
		r.mu.Lock()
		room := r.maxOut - r.outstanding.n
		if room <= 0 && r.pending.n > 0 {
			r.flushLocked()
			room = r.maxOut - r.outstanding.n
		}
		r.mu.Unlock()
		if room <= 0 {
			return Message{Frags: frags[:0], Linear: buf[:0]}, &Error{Op: opRecvmsg, Err: ErrTooManyOutstanding}
		}
		// Room for at most room control messages: one recvmsg cannot
		// take more tokens than are left.
		r.ctlLen = min(r.ctlLen, controlLen(room))
	}
	msg, err := r.recv(frags, buf)
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
	var msg Message
	err := r.withContext(ctx, func() error {
		var err error
		msg, err = r.Recv()
		return err
	})
	return msg, err
}

// withContext runs recv, interrupting it through the read deadline when
// ctx is done.
func (r *Receiver) withContext(ctx context.Context, recv func() error) error {
	if ctx.Done() == nil {
		return recv()
	}
	if err := ctx.Err(); err != nil {
		return &Error{Op: opRecvmsg, Err: context.Cause(ctx)}
	}
	if r.deadliner == nil && !r.blockThread {
		return &Error{Op: opRecvmsg, Err: errors.New("a cancellable context needs a conn with SetReadDeadline")}
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
			r.interrupt()
		}
	})
	err := recv()
	if !stop() {
		mu.Lock()
		done = true
		interrupted := failed
		mu.Unlock()
		if interrupted {
			r.resume()
			if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
				err = &Error{Op: opRecvmsg, Err: context.Cause(ctx)}
			}
		}
	}
	return err
}

// Release returns the tokens of frags (FragDMABuf ones; linear frags carry
// none) to the kernel now, once their payload is consumed, and reports how
// many the kernel freed. A frag this receiver does not hold (released
// before, from another Receiver, or not from a Receiver) is not sent and
// makes the error a *ReleaseError matching ErrNotOwned; the others are
// released all the same. A short count from the kernel is a *ReleaseError
// too. After Close it fails with net.ErrClosed. It does not allocate once
// warmed up.
func (r *Receiver) Release(frags []Frag) (freed int, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return 0, &Error{Op: opDontneed, Err: net.ErrClosed}
	}
	requested, refused := r.claimLocked(frags, &r.relTokens)
	if requested == 0 {
		return 0, nil
	}
	freed, err = r.releaseSetLocked(&r.relTokens, requested-refused)
	if refused > 0 {
		return freed, &ReleaseError{Requested: requested, Freed: freed, NotOwned: refused}
	}
	return freed, err
}

// Done hands frags whose payload is consumed back to the receiver, which
// returns their tokens in batches: one SO_DEVMEM_DONTNEED per ReleaseBatch
// tokens, or sooner when the NIC may need the buffers — when a Recv finds
// MaxOutstanding reached, when a Recv is about to block with half of the
// receiver's buffers (MaxOutstanding, or the bindings' buffer count) out,
// and ReleaseDelay after a Recv blocked with a batch waiting. Ownership is
// checked at once: frags the receiver does not hold are not taken and the
// error matches ErrNotOwned. The error may also be that of a release this
// call made (Stats counts what the kernel freed). After Close it fails
// with net.ErrClosed.
func (r *Receiver) Done(frags []Frag) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return &Error{Op: opDontneed, Err: net.ErrClosed}
	}
	requested, refused := r.claimLocked(frags, &r.pending)
	var err error
	if r.pending.n >= r.batch {
		err = r.flushLocked()
	}
	if refused > 0 {
		return &ReleaseError{Requested: requested, Freed: requested - refused, NotOwned: refused}
	}
	return err
}

// Flush returns every token waiting from Done now.
func (r *Receiver) Flush() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		return &Error{Op: opDontneed, Err: net.ErrClosed}
	}
	return r.flushLocked()
}

// claimLocked adds to dst the tokens of frags that the caller may release
// and marks them released by the caller; it counts the FragDMABuf frags
// and those refused.
func (r *Receiver) claimLocked(frags []Frag, dst *tokenSet) (requested, refused int) {
	for i := range frags {
		f := &frags[i]
		if f.Kind != FragDMABuf {
			continue
		}
		requested++
		if f.gen == 0 || int(f.Token) >= len(r.held) || r.held[f.Token] != f.gen {
			refused++
			continue
		}
		r.held[f.Token] = 0
		dst.add(f.Token)
	}
	return requested, refused
}

// flushLocked releases the pending tokens.
func (r *Receiver) flushLocked() error {
	if r.idleArmed {
		if r.idle != nil {
			r.idle.Stop()
		}
		r.idleArmed = false
	}
	if r.pending.n == 0 {
		return nil
	}
	_, err := r.releaseSetLocked(&r.pending, r.pending.n)
	return err
}

// idleFlush is the ReleaseDelay timer: the receiver blocked with a batch
// waiting.
func (r *Receiver) idleFlush() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		r.idleArmed = false
		return
	}
	if now := time.Now(); r.pending.n > 0 && !r.idleFlushDue(now) {
		// Still receiving, with a small batch: wait another delay.
		r.rearmIdleLocked(now)
		return
	}
	r.idleArmed = false
	r.flushLocked()
}

// rearmIdleLocked schedules the ReleaseDelay flush a delay after now: the
// timer's, or idleAt with BlockThread.
func (r *Receiver) rearmIdleLocked(now time.Time) {
	if r.idle != nil {
		r.idle.Reset(r.delay)
	} else {
		r.idleAt = now.Add(r.delay)
	}
}

// minDelayedBatch and maxHoldDelays shape the ReleaseDelay flush of a
// receiver that is not idle, only waiting between packets: a batch that
// small waits up to maxHoldDelays delays for more tokens. Flushing every
// ReleaseDelay whatever the batch would make a flow that waits now and
// then return its tokens 1/ReleaseDelay times a second however few they
// are: at 32 KiB frags and 85 MB/s that is one SO_DEVMEM_DONTNEED per 26
// frags (the bench measured 1/62 at 128 MiB), past the 1/64 a batch
// policy is meant to keep.
const (
	minDelayedBatch = 64
	maxHoldDelays   = 8
)

// idleFlushDue says whether the batch goes back now that ReleaseDelay
// has passed since the receiver first waited with it: when nothing was
// received since (the receiver is idle), when it has minDelayedBatch
// tokens, or when it has waited maxHoldDelays delays.
func (r *Receiver) idleFlushDue(now time.Time) bool {
	return r.stats.RecvCalls == r.idleCalls || r.pending.n >= minDelayedBatch ||
		now.Sub(r.idleSince) >= maxHoldDelays*r.delay
}

// beforeBlock runs when recvmsg found no data, before the goroutine parks:
// the batch waiting goes back now if the NIC may run short of buffers,
// else after ReleaseDelay unless something else sends it first. With
// BlockThread there is no timer: it reports how long the wait may last
// before the caller calls idleFlush (armed).
func (r *Receiver) beforeBlock() (flushIn time.Duration, armed bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.pending.n == 0 {
		return 0, false
	}
	if 2*r.outstanding.n >= r.budget {
		r.flushLocked()
		return 0, false
	}
	if !r.idleArmed {
		r.idleArmed = true
		r.idleSince, r.idleCalls = time.Now(), r.stats.RecvCalls
		r.rearmIdleLocked(r.idleSince)
	}
	if r.idle != nil {
		return 0, false
	}
	return time.Until(r.idleAt), true
}

// interrupt wakes a blocked Recv: through the waker with BlockThread, else
// with a read deadline in the past (none without a deadliner).
func (r *Receiver) interrupt() {
	if r.sys.wake() {
		return
	}
	if r.deadliner != nil {
		r.deadliner.SetReadDeadline(aLongTimeAgo)
	}
}

// resume undoes interrupt once the Recv it was for has returned.
func (r *Receiver) resume() {
	if r.sys.unwake() {
		return
	}
	if r.deadliner != nil {
		r.deadliner.SetReadDeadline(time.Time{})
	}
}

// releaseSetLocked returns the tokens of set to the kernel and empties
// it, with requested the count the caller expects freed.
func (r *Receiver) releaseSetLocked(set *tokenSet, requested int) (int, error) {
	if set.n == 0 {
		return 0, nil
	}
	r.relRanges = set.appendRanges(r.relRanges[:0])
	set.clear()
	return r.releaseRangesLocked(r.relRanges, requested)
}

// releaseRangesLocked returns token ranges to the kernel, counting the
// calls and what they freed in the stats.
func (r *Receiver) releaseRangesLocked(rs []TokenRange, requested int) (int, error) {
	r.rel.mu.Lock()
	defer r.rel.mu.Unlock()
	calls := r.rel.calls
	freed, err := r.rel.releaseLocked(rs, requested)
	r.stats.DontneedCalls += r.rel.calls - calls
	r.stats.TokensFreed += uint64(max(freed, 0))
	return freed, err
}

// released forgets a batch the kernel accepted (TokenReleaser.afterBatch;
// r.mu is held). Their held entries are 0 already: a token is released
// only after claimLocked or Close cleared it, and no receive can reissue
// it in between, under r.mu.
func (r *Receiver) released(batch []TokenRange) {
	for _, b := range batch {
		r.outstanding.removeRange(b.Start, b.Count)
	}
}

// Outstanding returns the number of tokens received and not yet returned
// to the kernel (including those waiting from Done).
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
// the socket and Close reports success. Later calls return nil.
func (r *Receiver) Close() error {
	if r.closed.Swap(true) {
		return nil
	}
	r.interrupt()
	r.recvMu.Lock()
	r.resume()
	r.sys.closeWaker()
	r.recvMu.Unlock()

	r.mu.Lock()
	defer r.mu.Unlock()
	if r.idle != nil {
		r.idle.Stop()
	}
	r.idleArmed = false
	r.pending.clear()
	clear(r.held)
	requested := r.outstanding.n
	if requested == 0 {
		return nil
	}
	r.relRanges = r.outstanding.appendRanges(r.relRanges[:0])
	_, err := r.releaseRangesLocked(r.relRanges, requested)
	if errors.Is(err, net.ErrClosed) {
		r.outstanding = tokenSet{}
		return nil
	}
	return err
}

// finish builds the Message for n bytes whose control data parsed into
// frags[:nf], with buf the linear bytes, and applies the receiver's checks.
// Tokens are recorded first: whatever the error, the frags are returned so
// none is lost.
func (r *Receiver) finish(frags []Frag, buf []byte, n, nf int, perr error) (Message, error) {
	msg := Message{Frags: frags[:nf], N: n, Linear: buf[:0]}
	linear, total, tokens := 0, 0, 0
	foreign := false
	gen := nextGen()
	r.mu.Lock()
	for i := range msg.Frags {
		f := &msg.Frags[i]
		f.gen = gen
		total += int(f.Size)
		if f.Kind == FragLinear {
			linear += int(f.Size)
			continue
		}
		tokens++
		r.outstanding.add(f.Token)
		if int(f.Token) >= len(r.held) {
			r.growHeld(f.Token)
		}
		r.held[f.Token] = gen
		if !r.ownID(f.DMABufID) {
			foreign = true
		}
	}
	r.stats.RecvCalls++
	r.stats.Bytes += uint64(n)
	r.stats.Frags += uint64(tokens)
	r.stats.LinearBytes += uint64(linear)
	if r.outstanding.n > r.stats.PeakOutstanding {
		r.stats.PeakOutstanding = r.outstanding.n
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
		frags[0] = Frag{Kind: FragLinear, gen: gen, Size: uint32(n)}
		msg.Frags = frags[:1]
		msg.Linear = buf[:n]
		msg.Readable = true
		r.mu.Lock()
		r.stats.ReadableBytes += uint64(n)
		r.mu.Unlock()
		return msg, nil
	}
	if r.strict && linear > 0 {
		return msg, &Error{Op: opRecvmsg, Err: ErrNotDevmem, Message: "linear bytes received by a strict receiver"}
	}
	if linear > len(buf) || total != n {
		return msg, &Error{Op: opRecvmsg, Err: &controlError{reason: "frag sizes sum to " + itoa(uint64(total)) +
			" (" + itoa(uint64(linear)) + " linear), recvmsg returned " + itoa(uint64(n))}}
	}
	msg.Linear = buf[:linear]
	if foreign {
		return msg, &Error{Op: opRecvmsg, Err: ErrForeignDMABuf}
	}
	return msg, nil
}

// growHeld makes r.held cover token t, like tokenSet: the kernel hands out
// tokens lowest-free, so the slice stays near the peak outstanding.
func (r *Receiver) growHeld(t uint32) {
	r.held = append(r.held, make([]uint32, int(t)+1-len(r.held))...)
	r.held = r.held[:cap(r.held)]
}

func (r *Receiver) ownID(id uint32) bool {
	for _, x := range r.ids {
		if x == id {
			return true
		}
	}
	return false
}
