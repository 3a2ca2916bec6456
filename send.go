package devmem

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"reflect"
	"sort"
	"sync"
	"syscall"
	"time"
)

// SenderConfig tunes a Sender. The zero value (or a nil *SenderConfig) sends
// each range with as few sendmsg calls as the kernel allows.
type SenderConfig struct {
	// ChunkSize, when positive, splits every range into iovecs of at most
	// this many bytes (ncdevmem's -z). The kernel splits at page boundaries
	// on its own, so this only matters to exercise multi-iovec sends.
	ChunkSize int64
	// MaxIOVs caps the iovecs of one sendmsg call; 0 or anything above
	// UIO_MAXIOV (1024) means 1024.
	MaxIOVs int
}

// uioMaxIOV is UIO_MAXIOV: sendmsg refuses more iovecs with EMSGSIZE.
const uioMaxIOV = 1024

// maxSendmsgBytes bounds one sendmsg call. The kernel clamps a call to
// MAX_RW_COUNT (INT_MAX rounded down to a page) anyway; staying well below
// keeps sizes valid in a 32-bit size_t.
const maxSendmsgBytes = 1 << 30

// Completion reports that the kernel is done with the dma-buf range of one
// Send: the device has read it and the range may be rewritten.
//
// (The kernel also flags zerocopy sends it fell back to copying,
// SO_EE_CODE_ZEROCOPY_COPIED. It cannot copy device memory, so for a devmem
// Sender the flag carries no information and is not reported.)
type Completion struct {
	// Seq is the value Send returned.
	Seq uint32
	// Offset and Length are the dma-buf range that was queued (Length is
	// shorter than asked when Send failed part way, see PartialSendError).
	Offset, Length int64
}

// PartialSendError is returned by Send when it queued part of a range and
// then failed. The queued part is tracked under Seq like any other Send: wait
// for it before reusing the range.
type PartialSendError struct {
	// Seq is the sequence number the queued part is tracked under.
	Seq uint32
	// Queued is the number of bytes, from the start of the range, that
	// were queued before the failure.
	Queued int64
	// Err is the failure that stopped the Send, an *Error (a cancelled
	// context's error inside one).
	Err error
}

// Error returns Err's text followed by what was queued and under which
// sequence number.
func (e *PartialSendError) Error() string {
	return e.Err.Error() + " (after queuing " + itoa(uint64(e.Queued)) + " bytes as send " + itoa(uint64(e.Seq)) + ")"
}

// Unwrap returns Err, so errors.Is and errors.As see the failure.
func (e *PartialSendError) Unwrap() error { return e.Err }

// A Sender transmits ranges of a dma-buf bound for transmit (bind-tx) over a
// TCP socket: sendmsg with MSG_ZEROCOPY and an SCM_DEVMEM_DMABUF control
// message naming the binding, where each iovec holds an offset into the
// dma-buf instead of a pointer. The device reads the payload straight out of
// the dma-buf, so a range must not be rewritten until its completion arrives
// on the socket's error queue; the Sender maps those completions back to the
// Sends that queued them.
//
// The Sender must be the only MSG_ZEROCOPY user of the socket from the first
// send on: the kernel numbers zerocopy sendmsg calls per socket and the
// Sender relies on seeing all of them.
//
// A Sender is safe for concurrent use. Sends are serialized with each other
// but not with the completion waits (WaitComplete, Completions, Flush): the
// usual MSG_ZEROCOPY design, one goroutine sending and another reaping, runs
// in parallel. Waits never touch the connection's read or write side (they
// sleep on an epoll instance of their own that watches the socket's error
// queue), so they delay neither Sends nor reads of the connection.
// Cancellation is per call: a context ends only the call it was passed to.
type Sender struct {
	rc       syscall.RawConn
	dl       writeDeadliner // nil when the conn has no deadlines
	binding  *Binding       // nil only in tests of the completion machinery
	dmabufID uint32
	chunk    int64
	maxIOVs  int

	// iovBase is added to every offset: 0 for device memory, the address
	// of an ordinary buffer in tests of the completion machinery (which
	// then sends no SCM_DEVMEM_DMABUF).
	iovBase uintptr

	// sendTok is held (a value in it) by the Send in progress: Sends'
	// sendmsg calls number in order. A channel rather than a mutex so a
	// Send waiting its turn can give up on its context.
	sendTok chan struct{}
	iovs    []iovec // guarded by sendTok
	control []byte  // the SCM_DEVMEM_DMABUF cmsg, built once
	sys     sendSys // per-OS state of the sendmsg in progress; guarded by sendTok

	// dlMu orders changes of the connection's write deadline: the one set
	// with SetWriteDeadline, a Send's wake-up on cancellation and its
	// restoration.
	dlMu     sync.Mutex
	deadline time.Time
	sendWoke chan struct{} // a Send's cancellation wake-up has run

	// reapTok is held by the one waiter that sleeps on the error queue and
	// reaps for everyone; the others sleep on changed.
	reapTok chan struct{}
	reap    reapSys // per-OS state of the reaper; guarded by reapTok

	mu          sync.Mutex
	nextSeq     uint32
	nextCounter uint64        // the kernel's next zerocopy id, extended to 64 bits
	pending     []sendRecord  // by counter; the last one may still be open
	stream      bool          // Completions was called: queue completions for it
	done        []Completion  // reaped but not yet returned by Completions
	changed     chan struct{} // closed when the ledger changes; nil until a waiter needs it
	closed      bool
	reapBuf     []byte
}

type writeDeadliner interface {
	SetWriteDeadline(t time.Time) error
}

// sendRecord follows one Send through the kernel's zerocopy ids.
type sendRecord struct {
	seq         uint32
	off, n      int64
	first, last uint64 // kernel zerocopy ids of the Send's sendmsg calls
	remaining   uint64 // ids not yet completed
	open        bool   // the Send is still issuing sendmsg calls
}

// NewSender prepares the socket of conn (a *net.TCPConn, connected or about
// to be) to send from the dma-buf of b, a binding made by BindTX: it turns
// SO_ZEROCOPY on. Bind the socket to the bound device too (SO_BINDTODEVICE:
// unix.BindToDevice in a net.Dialer Control function, before it connects), or
// the kernel refuses routes that leave through another device with ENODEV.
// cfg may be nil.
//
// The Sender keeps b (reachable, too) and fails its Sends with an error
// matching net.ErrClosed once b is closed. A nil, closed or non-TCP conn, an
// RX binding and a closed binding are refused with a clear error.
func NewSender(conn syscall.Conn, b *Binding, cfg *SenderConfig) (*Sender, error) {
	const op = "new sender"
	switch {
	case b == nil:
		return nil, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: "nil *Binding"}
	case b.Direction() != DirectionTX:
		return nil, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL,
			Message: "binding " + itoa(uint64(b.ID())) + " is a " + b.Direction().String() + " binding; sending needs one made by BindTX"}
	case b.Closed():
		return nil, &Error{Op: op, Err: net.ErrClosed, Message: "binding " + itoa(uint64(b.ID())) + " is closed"}
	case b.ID() == 0:
		return nil, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL,
			Message: "dma-buf id 0 is not a binding (the kernel reads 0 as \"not devmem\")"}
	}
	s, err := newSender(conn, b.ID(), cfg, 0)
	if err != nil {
		return nil, err
	}
	s.binding = b
	return s, nil
}

// isNil reports whether c is nil or a nil pointer (a typed nil in an
// interface), on which SyscallConn would panic or misbehave.
func isNil(c syscall.Conn) bool {
	if c == nil {
		return true
	}
	v := reflect.ValueOf(c)
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		return v.IsNil()
	}
	return false
}

func newSender(c syscall.Conn, dmabufID uint32, cfg *SenderConfig, iovBase uintptr) (*Sender, error) {
	const op = "new sender"
	var conf SenderConfig
	if cfg != nil {
		conf = *cfg
	}
	if conf.ChunkSize < 0 {
		return nil, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: "negative ChunkSize"}
	}
	if isNil(c) {
		return nil, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: "nil connection"}
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, connError(op, err)
	}
	s := &Sender{
		rc:       rc,
		dmabufID: dmabufID,
		chunk:    conf.ChunkSize,
		maxIOVs:  conf.MaxIOVs,
		iovBase:  iovBase,
		sendTok:  make(chan struct{}, 1),
		reapTok:  make(chan struct{}, 1),
		sendWoke: make(chan struct{}, 1),
	}
	if s.maxIOVs <= 0 || s.maxIOVs > uioMaxIOV {
		s.maxIOVs = uioMaxIOV
	}
	s.dl, _ = c.(writeDeadliner)
	if dmabufID != 0 {
		s.control = nativeTxABI.dmabufCmsg(dmabufID)
	}
	if err := s.init(); err != nil {
		return nil, err
	}
	return s, nil
}

// connError is the error of an operation on the connection itself: it
// matches net.ErrClosed when the connection is closed.
func connError(op string, err error) error {
	e := &Error{Op: op, Err: err}
	if errors.Is(err, net.ErrClosed) {
		e.Message = "the connection is closed"
	}
	return e
}

// errBindingClosed is the error of a Send after the Sender's binding was
// closed: errClosed's, saying which of the two was closed.
func errBindingClosed(op string, id uint32) error {
	e := errClosed(op).(*Error)
	e.Message = "binding " + itoa(uint64(id)) + " is closed"
	return e
}

// Binding returns the TX binding the Sender sends from (nil only for the
// package's own tests).
func (s *Sender) Binding() *Binding { return s.binding }

// Send queues the dma-buf range [off, off+n) on the socket, issuing as many
// sendmsg calls as it takes (TCP may accept less than asked per call), and
// returns the sequence number that Completions and WaitComplete report for
// it. It blocks while the send buffer is full, up to the write deadline set
// with SetWriteDeadline. It allocates nothing.
//
// Failing part way it returns a *PartialSendError carrying the sequence
// number of the part that was queued. The kernel refuses with EINVAL a dma-buf
// id that is no TX binding and, before Linux 6.16, any devmem send; with
// ENODEV a route through another device than the bound one; with EFAULT an
// offset beyond the dma-buf.
func (s *Sender) Send(off, n int64) (seq uint32, err error) {
	return s.SendContext(context.Background(), off, n)
}

// SendContext is Send, giving up when ctx is done: while waiting for an
// earlier Send to finish, or for room in the send buffer. Only this call
// gives up; the connection's deadline is restored before it returns.
func (s *Sender) SendContext(ctx context.Context, off, n int64) (seq uint32, err error) {
	const op = "sendmsg"
	if off < 0 || n <= 0 || off+n < off || uint64(off+n) > uint64(^uintptr(0)-s.iovBase) {
		return 0, &Error{Op: op, Errno: _EINVAL, Err: _EINVAL,
			Message: "bad range: offset " + itoaInt64(off) + " length " + itoaInt64(n)}
	}
	if s.binding != nil && s.binding.Closed() {
		return 0, errBindingClosed(op, s.dmabufID)
	}
	if err := ctx.Err(); err != nil {
		return 0, &Error{Op: op, Err: err}
	}
	select {
	case s.sendTok <- struct{}{}:
	default:
		select {
		case s.sendTok <- struct{}{}:
		case <-ctx.Done():
			return 0, &Error{Op: op, Err: ctx.Err()}
		}
	}
	defer func() { <-s.sendTok }()

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, errClosed(op)
	}
	seq = s.nextSeq
	s.mu.Unlock()

	queued, err := s.sendRange(ctx, seq, off, n)
	if queued > 0 {
		s.mu.Lock()
		s.nextSeq++
		r := &s.pending[len(s.pending)-1]
		r.open = false
		if r.remaining == 0 {
			// Completed while still open (all its calls' completions
			// came before it returned): nothing on the error queue
			// will wake the waiters for it.
			s.compact()
			s.notifyLocked()
			s.wakeReaper()
		}
		s.mu.Unlock()
	}
	switch {
	case err == nil:
		return seq, nil
	case queued > 0:
		return seq, &PartialSendError{Seq: seq, Queued: queued, Err: err}
	}
	return 0, err
}

func itoaInt64(v int64) string {
	if v < 0 {
		return "-" + itoa(uint64(-v))
	}
	return itoa(uint64(v))
}

// beginCall records, before a sendmsg call of Send seq, that it may use the
// kernel's next zerocopy id, so that a reaper running in parallel can match a
// completion that arrives before the call has even returned. endCall settles
// it. Both take s.mu; beginCall fails once the Sender is closed.
func (s *Sender) beginCall(seq uint32, off int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errClosed("sendmsg")
	}
	id := s.nextCounter
	s.nextCounter++
	if k := len(s.pending); k > 0 && s.pending[k-1].open && s.pending[k-1].seq == seq {
		r := &s.pending[k-1]
		r.last = id
		r.remaining++
		return nil
	}
	s.pending = append(s.pending, sendRecord{seq: seq, off: off, first: id, last: id, remaining: 1, open: true})
	return nil
}

// endCall settles the call begun by beginCall: written bytes went out under
// the id, or (written 0) the kernel did not use it, as it does not when
// sendmsg fails without sending (it takes the id back).
func (s *Sender) endCall(written int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &s.pending[len(s.pending)-1]
	if written > 0 {
		r.n += written
		return
	}
	s.nextCounter--
	r.remaining -= min(r.remaining, 1)
	if r.first == r.last {
		s.pending[len(s.pending)-1] = sendRecord{}
		s.pending = s.pending[:len(s.pending)-1]
		return
	}
	r.last--
}

// noteSent records one sendmsg call of Send seq that used the next id (the
// ledger tests' shorthand for beginCall and endCall).
func (s *Sender) noteSent(seq uint32, off int64, written int64) {
	_ = s.beginCall(seq, off)
	s.endCall(written)
}

// complete applies one zerocopy notification: kernel ids lo..hi (inclusive,
// 32 bits, possibly several sendmsg calls coalesced) are done. The caller
// holds s.mu.
func (s *Sender) complete(lo, hi uint32) {
	if len(s.pending) == 0 {
		return
	}
	// Extend the 32-bit ids to 64 bits relative to the oldest outstanding
	// id: every id the kernel reports is at or after it.
	base := s.pending[0].first
	lo64 := base + uint64(lo-uint32(base))
	hi64 := lo64 + uint64(hi-lo)
	i := sort.Search(len(s.pending), func(i int) bool { return s.pending[i].last >= lo64 })
	for ; i < len(s.pending) && s.pending[i].first <= hi64; i++ {
		r := &s.pending[i]
		ov := min(r.last, hi64) - max(r.first, lo64) + 1
		r.remaining -= min(ov, r.remaining)
	}
	s.compact()
	s.notifyLocked()
}

// compact drops finished records, queuing them for Completions once it has
// been called. The caller holds s.mu.
func (s *Sender) compact() {
	j := 0
	for _, r := range s.pending {
		if r.remaining == 0 && !r.open {
			if s.stream {
				s.done = append(s.done, Completion{Seq: r.seq, Offset: r.off, Length: r.n})
			}
			continue
		}
		s.pending[j] = r
		j++
	}
	clear(s.pending[j:])
	s.pending = s.pending[:j]
}

// notifyLocked wakes the waiters sleeping on changed. The caller holds s.mu.
func (s *Sender) notifyLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// Pending returns the number of Sends whose completion has not been reaped
// yet.
func (s *Sender) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pending)
}

// isPending reports whether Send seq is still waiting for completion, and
// whether seq was ever returned by Send.
func (s *Sender) isPending(seq uint32) (pending, issued bool) {
	if int32(seq-s.nextSeq) >= 0 {
		return false, false
	}
	for _, r := range s.pending {
		if r.seq == seq {
			return true, true
		}
	}
	return false, true
}

// Completions waits until at least one Send completes and returns the
// completions reaped, appended to dst. It returns at once, with nothing, when
// no Send is pending. Each completion is reported once. From the first call
// on, every completion is queued for Completions, whoever reaps it (a
// WaitComplete or Flush too), so keep calling it; completions reaped before
// the first call are not reported.
func (s *Sender) Completions(ctx context.Context, dst []Completion) ([]Completion, error) {
	s.mu.Lock()
	s.stream = true
	ready := len(s.done) > 0 || len(s.pending) == 0
	s.mu.Unlock()
	var err error
	if !ready {
		err = s.wait(ctx, func() bool { return len(s.done) > 0 || len(s.pending) == 0 })
	}
	s.mu.Lock()
	dst = append(dst, s.done...)
	s.done = s.done[:0]
	s.mu.Unlock()
	return dst, err
}

// WaitComplete waits until Send seq has completed, so its range may be
// rewritten. It returns nil at once for a Send already complete.
func (s *Sender) WaitComplete(ctx context.Context, seq uint32) error {
	s.mu.Lock()
	pending, issued := s.isPending(seq)
	s.mu.Unlock()
	if !issued {
		return &Error{Op: "wait completion", Errno: _EINVAL, Err: _EINVAL,
			Message: "send " + itoa(uint64(seq)) + " was never issued"}
	}
	if !pending {
		return nil
	}
	return s.wait(ctx, func() bool { p, _ := s.isPending(seq); return !p })
}

// Flush waits until every Send so far has completed.
func (s *Sender) Flush(ctx context.Context) error {
	if s.Pending() == 0 {
		return nil
	}
	return s.wait(ctx, func() bool { return len(s.pending) == 0 })
}

// wait returns once cond, called with s.mu held, holds. One waiter at a time
// (the holder of reapTok) sleeps on the socket's error queue and reaps for
// all; the others sleep until the ledger changes or the reaper leaves, when
// one of them takes over. A waiter whose ctx ends leaves alone.
func (s *Sender) wait(ctx context.Context, cond func() bool) error {
	const op = "wait completion"
	for {
		s.mu.Lock()
		if cond() {
			s.mu.Unlock()
			return nil
		}
		if s.closed {
			s.mu.Unlock()
			return errClosed(op)
		}
		if err := ctx.Err(); err != nil {
			s.mu.Unlock()
			return &Error{Op: op, Err: err}
		}
		// Reap if nobody does; else sleep until the ledger changes.
		select {
		case s.reapTok <- struct{}{}:
			s.mu.Unlock()
			if err := s.lead(ctx, cond); err != nil {
				return err
			}
			continue
		default:
		}
		if s.changed == nil {
			s.changed = make(chan struct{})
		}
		changed := s.changed
		s.mu.Unlock()
		select {
		case s.reapTok <- struct{}{}:
			if err := s.lead(ctx, cond); err != nil {
				return err
			}
		case <-changed:
		case <-ctx.Done():
			return &Error{Op: op, Err: ctx.Err()}
		}
	}
}

// lead reaps for every waiter until cond holds (or the wait ends), then
// hands the role on. The caller took s.reapTok.
func (s *Sender) lead(ctx context.Context, cond func() bool) error {
	err := s.reapWait(ctx, cond)
	<-s.reapTok
	// Let a waiter that sleeps on changed take over.
	s.mu.Lock()
	s.notifyLocked()
	s.mu.Unlock()
	return err
}

// SetWriteDeadline sets the write deadline of the connection, which bounds
// Send. Set it here rather than on the connection, so that a cancelled
// SendContext restores it. Completion waits are bounded by their context
// only.
func (s *Sender) SetWriteDeadline(t time.Time) error {
	if s.dl == nil {
		return &Error{Op: "set write deadline", Err: ErrNotSupported, Message: "the connection has no deadlines"}
	}
	s.dlMu.Lock()
	defer s.dlMu.Unlock()
	s.deadline = t
	return s.dl.SetWriteDeadline(t)
}

// Close ends the Sender: it wakes a Send blocked on a full send buffer and
// waits for the Send in progress to return, ends the completion waits (with
// an error matching net.ErrClosed), reaps the completions already queued and
// reports, as an error wrapping ErrSendsPending, Sends still in flight: their
// ranges must not be reused until the socket is closed (which frees them once
// the data is acknowledged or dropped). Call Flush first to wait for them.
// Close does not close the connection; call it before closing the
// connection. Later calls return nil.
func (s *Sender) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.notifyLocked()
	s.mu.Unlock()

	// Wake a Send blocked in the poller, wait for it, put the deadline
	// back.
	if s.dl != nil {
		s.dlMu.Lock()
		_ = s.dl.SetWriteDeadline(txWakeDeadline)
		s.dlMu.Unlock()
	}
	s.sendTok <- struct{}{}
	if s.dl != nil {
		s.dlMu.Lock()
		_ = s.dl.SetWriteDeadline(s.deadline)
		s.dlMu.Unlock()
	}
	<-s.sendTok

	s.stopReaper()
	err := s.reapNow()
	s.mu.Lock()
	n := len(s.pending)
	s.mu.Unlock()
	if err == nil && n > 0 {
		err = &Error{Op: "close sender", Err: ErrSendsPending, Message: itoa(uint64(n)) + " sends in flight"}
	}
	return err
}

// txWakeDeadline is a deadline in the past, to wake a blocked Send.
var txWakeDeadline = time.Unix(1, 0)

// wakeSend runs when a blocked Send's context ends: it wakes the Send through
// the write deadline, which only that Send waits on (Sends are serialized and
// no wait uses the write side). The Send restores the deadline.
func (s *Sender) wakeSend() {
	s.dlMu.Lock()
	_ = s.dl.SetWriteDeadline(txWakeDeadline)
	s.dlMu.Unlock()
	s.sendWoke <- struct{}{}
}

// restoreDeadline undoes wakeSend once the Send it woke is done.
func (s *Sender) restoreDeadline() {
	<-s.sendWoke
	s.dlMu.Lock()
	_ = s.dl.SetWriteDeadline(s.deadline)
	s.dlMu.Unlock()
}

// ctxWaitError turns the deadline error of a wait that ctx cut short into
// ctx's error.
func ctxWaitError(ctx context.Context, err error) error {
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) && ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// sendErrnoHint explains the sendmsg errnos that devmem TX adds
// (net/ipv4/tcp.c, net/core/devmem.c, net/core/datagram.c).
func sendErrnoHint(errno sysErrno, id uint32) string {
	switch errno {
	case _EINVAL:
		return "dma-buf id " + itoa(uint64(id)) + " is not a TX binding (bind-tx), SO_ZEROCOPY is off, the route lacks scatter-gather, or the kernel lacks devmem TX (Linux 6.16)"
	case _ENODEV:
		return "the route to the peer leaves through another device than the bound one; bind the socket to it (SO_BINDTODEVICE)"
	case _EFAULT:
		return "an offset lies beyond the end of the dma-buf"
	case _EHOSTUNREACH:
		return "no route to the peer for the binding's device"
	case _ENOBUFS:
		return "could not allocate zerocopy state (optmem_max or RLIMIT_MEMLOCK)"
	}
	return ""
}

// iovec is struct iovec with the base as an integer: for devmem TX it is an
// offset into the dma-buf, not a pointer, and must not be seen by the garbage
// collector as one. Its layout matches unix.Iovec on every architecture.
type iovec struct {
	base uintptr
	len  uintptr
}

// appendIovecs splits [off, off+n) into iovecs of at most chunk bytes (no
// limit when chunk is 0), stopping at maxIOVs iovecs or maxBytes bytes, and
// returns them appended to dst with the number of bytes they cover.
func appendIovecs(dst []iovec, base uintptr, off, n, chunk int64, maxIOVs int, maxBytes int64) ([]iovec, int64) {
	var covered int64
	for k := 0; k < maxIOVs && n > 0 && covered < maxBytes; k++ {
		l := min(n, maxBytes-covered)
		if chunk > 0 {
			l = min(l, chunk)
		}
		dst = append(dst, iovec{base: base + uintptr(off), len: uintptr(l)})
		off += l
		n -= l
		covered += l
	}
	return dst, covered
}

// txABI describes struct cmsghdr and struct sock_extended_err on one Linux
// ABI, so the encoder and the error-queue parser can be tested for every
// architecture on any host. The Sender uses nativeTxABI.
type txABI struct {
	// wordSize is sizeof(size_t): the width of cmsg_len and the cmsg
	// alignment.
	wordSize  int
	bigEndian bool
	// solSocket and scmDevmemDMABuf are SOL_SOCKET (1, or 0xffff on alpha,
	// mips, parisc, sparc) and SCM_DEVMEM_DMABUF (79; 0x58 sparc; 0x404F
	// parisc).
	solSocket       uint32
	scmDevmemDMABuf uint32
}

func (a txABI) order() binary.ByteOrder {
	if a.bigEndian {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

func (a txABI) align(n int) int { return (n + a.wordSize - 1) &^ (a.wordSize - 1) }

// hdrLen is sizeof(struct cmsghdr), already aligned (16 or 12).
func (a txABI) hdrLen() int { return a.wordSize + 8 }

// dmabufCmsg returns the control data of a devmem sendmsg: one cmsg
// {SOL_SOCKET, SCM_DEVMEM_DMABUF} of length CMSG_LEN(4) (the kernel insists
// on exactly that) carrying the u32 binding id, padded to CMSG_SPACE(4).
func (a txABI) dmabufCmsg(id uint32) []byte {
	b := make([]byte, a.hdrLen()+a.align(4))
	o := a.order()
	cmsgLen := uint64(a.hdrLen() + 4)
	if a.wordSize == 8 {
		o.PutUint64(b, cmsgLen)
	} else {
		o.PutUint32(b, uint32(cmsgLen))
	}
	o.PutUint32(b[a.wordSize:], a.solSocket)
	o.PutUint32(b[a.wordSize+4:], a.scmDevmemDMABuf)
	o.PutUint32(b[a.hdrLen():], id)
	return b
}

// Error-queue numbers; the same on every architecture.
const (
	_SOL_IP                     = 0
	_SOL_IPV6                   = 41
	_IP_RECVERR                 = 11
	_IPV6_RECVERR               = 25
	_SO_EE_ORIGIN_TIMESTAMPING  = 4
	_SO_EE_ORIGIN_ZEROCOPY      = 5
	_SO_EE_CODE_ZEROCOPY_COPIED = 1
	_MSG_CTRUNC                 = 0x8
	sizeofSockExtendedErr       = 16
)

// sockExtendedErr is struct sock_extended_err (include/uapi/linux/errqueue.h).
type sockExtendedErr struct {
	Errno  uint32
	Origin uint8
	Type   uint8
	Code   uint8
	Info   uint32 // zerocopy: first id of the range
	Data   uint32 // zerocopy: last id of the range (inclusive)
}

// parseErrqueue walks the control data of one recvmsg(MSG_ERRQUEUE) and calls
// fn for every IP_RECVERR / IPV6_RECVERR extended error in it.
func (a txABI) parseErrqueue(oob []byte, msgFlags int, fn func(sockExtendedErr)) error {
	if msgFlags&_MSG_CTRUNC != 0 {
		return &Error{Op: "recvmsg MSG_ERRQUEUE", Err: ErrMalformedControl,
			Message: "control data truncated (MSG_CTRUNC): a completion may be lost"}
	}
	o := a.order()
	for off := 0; off < len(oob); {
		rest := oob[off:]
		if len(rest) < a.hdrLen() {
			return &Error{Op: "recvmsg MSG_ERRQUEUE", Err: ErrMalformedControl, Message: "short cmsg header at " + itoa(uint64(off))}
		}
		var cmsgLen uint64
		if a.wordSize == 8 {
			cmsgLen = o.Uint64(rest)
		} else {
			cmsgLen = uint64(o.Uint32(rest))
		}
		if cmsgLen < uint64(a.hdrLen()) || cmsgLen > uint64(len(rest)) {
			return &Error{Op: "recvmsg MSG_ERRQUEUE", Err: ErrMalformedControl, Message: "bad cmsg_len " + itoa(cmsgLen) + " at " + itoa(uint64(off))}
		}
		level := o.Uint32(rest[a.wordSize:])
		typ := o.Uint32(rest[a.wordSize+4:])
		data := rest[a.hdrLen():cmsgLen]
		if (level == _SOL_IP && typ == _IP_RECVERR) || (level == _SOL_IPV6 && typ == _IPV6_RECVERR) {
			if len(data) < sizeofSockExtendedErr {
				return &Error{Op: "recvmsg MSG_ERRQUEUE", Err: ErrMalformedControl, Message: "short sock_extended_err"}
			}
			fn(sockExtendedErr{
				Errno:  o.Uint32(data[0:]),
				Origin: data[4],
				Type:   data[5],
				Code:   data[6],
				Info:   o.Uint32(data[8:]),
				Data:   o.Uint32(data[12:]),
			})
		}
		off += a.align(int(cmsgLen))
	}
	return nil
}

// handleErrqueue applies the control data of one error-queue message to the
// ledger: zerocopy ranges complete Sends; an error (ee_errno set, for
// example an ICMP error) is returned. Timestamps are ignored. Callers hold
// s.mu.
func (s *Sender) handleErrqueue(a txABI, oob []byte, msgFlags int) error {
	var first error
	err := a.parseErrqueue(oob, msgFlags, func(ee sockExtendedErr) {
		switch {
		case ee.Origin == _SO_EE_ORIGIN_ZEROCOPY && ee.Errno == 0:
			s.complete(ee.Info, ee.Data)
		case ee.Origin == _SO_EE_ORIGIN_TIMESTAMPING:
		case ee.Errno != 0 && first == nil:
			errno := sysErrno(ee.Errno)
			first = &Error{Op: "recvmsg MSG_ERRQUEUE", Errno: errno, Err: errno,
				Message: "error queue reports origin " + itoa(uint64(ee.Origin)) + " type " + itoa(uint64(ee.Type)) + " code " + itoa(uint64(ee.Code))}
		}
	})
	if err != nil {
		return err
	}
	return first
}
