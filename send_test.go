package devmem

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var (
	abiAMD64TX   = txABI{wordSize: 8, solSocket: 1, scmDevmemDMABuf: 79}
	abi386TX     = txABI{wordSize: 4, solSocket: 1, scmDevmemDMABuf: 79}
	abiMIPSTX    = txABI{wordSize: 4, bigEndian: true, solSocket: 0xffff, scmDevmemDMABuf: 79}
	abiS390XTX   = txABI{wordSize: 8, bigEndian: true, solSocket: 1, scmDevmemDMABuf: 79}
	abiSPARC64TX = txABI{wordSize: 8, bigEndian: true, solSocket: 0xffff, scmDevmemDMABuf: 0x58}
)

func TestDMABufCmsgGolden(t *testing.T) {
	tests := []struct {
		name string
		abi  txABI
		want []byte
	}{
		{"amd64", abiAMD64TX, []byte{
			20, 0, 0, 0, 0, 0, 0, 0, // cmsg_len = CMSG_LEN(4)
			1, 0, 0, 0, // SOL_SOCKET
			79, 0, 0, 0, // SCM_DEVMEM_DMABUF
			0x78, 0x56, 0x34, 0x12, // id
			0, 0, 0, 0, // pad to CMSG_SPACE(4) = 24
		}},
		{"386", abi386TX, []byte{
			16, 0, 0, 0,
			1, 0, 0, 0,
			79, 0, 0, 0,
			0x78, 0x56, 0x34, 0x12,
		}},
		{"mips", abiMIPSTX, []byte{
			0, 0, 0, 16,
			0, 0, 0xff, 0xff,
			0, 0, 0, 79,
			0x12, 0x34, 0x56, 0x78,
		}},
		{"s390x", abiS390XTX, []byte{
			0, 0, 0, 0, 0, 0, 0, 20,
			0, 0, 0, 1,
			0, 0, 0, 79,
			0x12, 0x34, 0x56, 0x78,
			0, 0, 0, 0,
		}},
		{"sparc64", abiSPARC64TX, []byte{
			0, 0, 0, 0, 0, 0, 0, 20,
			0, 0, 0xff, 0xff,
			0, 0, 0, 0x58,
			0x12, 0x34, 0x56, 0x78,
			0, 0, 0, 0,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.abi.dmabufCmsg(0x12345678); !bytes.Equal(got, tt.want) {
				t.Errorf("got  % x\nwant % x", got, tt.want)
			}
		})
	}
}

func TestAppendIovecsChunks(t *testing.T) {
	// ncdevmem -z 3 sending "hello\nworld" (11 bytes) from offset 0.
	got, n := appendIovecs(nil, 0, 0, 11, 3, uioMaxIOV, maxSendmsgBytes)
	want := []iovec{{0, 3}, {3, 3}, {6, 3}, {9, 2}}
	if n != 11 || !cmp.Equal(got, want, cmp.AllowUnexported(iovec{})) {
		t.Errorf("got %v (%d bytes), want %v", got, n, want)
	}
	// No chunking: one iovec, bounded per call.
	got, n = appendIovecs(nil, 0x1000, 4096, 3<<30, 0, uioMaxIOV, maxSendmsgBytes)
	if n != maxSendmsgBytes || len(got) != 1 || got[0].base != 0x1000+4096 {
		t.Errorf("unchunked: %v, %d bytes", got, n)
	}
	// The iovec cap stops the call short.
	got, n = appendIovecs(nil, 0, 0, 1<<20, 1, uioMaxIOV, maxSendmsgBytes)
	if len(got) != uioMaxIOV || n != uioMaxIOV {
		t.Errorf("1-byte chunks: %d iovecs, %d bytes", len(got), n)
	}
}

// TestAppendIovecsProperty checks, over random ranges, that the calls a Send
// makes cover the range exactly, in order, with no iovec above the chunk and
// no call above the iovec and byte caps.
func TestAppendIovecsProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		off := r.Int64N(1 << 32)
		n := 1 + r.Int64N(1<<22)
		chunk := int64(0)
		if r.IntN(4) != 0 {
			chunk = 1 + r.Int64N(1<<14)
		}
		maxIOVs := 1 + r.IntN(uioMaxIOV)
		maxBytes := int64(1 + r.IntN(1<<21))
		next := off
		var iovs []iovec
		for done := int64(0); done < n; {
			var covered int64
			iovs, covered = appendIovecs(iovs[:0], 0, off+done, n-done, chunk, maxIOVs, maxBytes)
			if covered <= 0 || len(iovs) == 0 || len(iovs) > maxIOVs || covered > maxBytes {
				t.Fatalf("off %d n %d chunk %d: call covered %d in %d iovecs", off, n, chunk, covered, len(iovs))
			}
			var sum int64
			for _, v := range iovs {
				if int64(v.base) != next {
					t.Fatalf("gap or overlap: iovec at %d, want %d", v.base, next)
				}
				if v.len == 0 || (chunk > 0 && int64(v.len) > chunk) {
					t.Fatalf("iovec of %d bytes with chunk %d", v.len, chunk)
				}
				next += int64(v.len)
				sum += int64(v.len)
			}
			if sum != covered {
				t.Fatalf("covered %d, iovecs sum to %d", covered, sum)
			}
			done += covered
		}
		if next != off+n {
			t.Fatalf("covered up to %d, want %d", next, off+n)
		}
	}
}

// errqueueCmsg builds one IP_RECVERR/IPV6_RECVERR cmsg as the kernel writes
// it: the sock_extended_err followed by the (empty) offender sockaddr_in.
func errqueueCmsg(a txABI, level, typ uint32, ee sockExtendedErr) []byte {
	o := a.order()
	data := make([]byte, sizeofSockExtendedErr+16)
	o.PutUint32(data[0:], ee.Errno)
	data[4], data[5], data[6] = ee.Origin, ee.Type, ee.Code
	o.PutUint32(data[8:], ee.Info)
	o.PutUint32(data[12:], ee.Data)
	b := make([]byte, a.hdrLen()+a.align(len(data)))
	if a.wordSize == 8 {
		o.PutUint64(b, uint64(a.hdrLen()+len(data)))
	} else {
		o.PutUint32(b, uint32(a.hdrLen()+len(data)))
	}
	o.PutUint32(b[a.wordSize:], level)
	o.PutUint32(b[a.wordSize+4:], typ)
	copy(b[a.hdrLen():], data)
	return b
}

func zc(lo, hi uint32, code uint8) sockExtendedErr {
	return sockExtendedErr{Origin: _SO_EE_ORIGIN_ZEROCOPY, Code: code, Info: lo, Data: hi}
}

func TestErrqueueGoldenAMD64(t *testing.T) {
	// A coalesced completion of zerocopy ids 3..7, byte for byte as an
	// x86-64 kernel writes it for an IPv4 socket.
	blob := []byte{
		0x24, 0, 0, 0, 0, 0, 0, 0, // cmsg_len: 16 header + 20 data
		0, 0, 0, 0, // SOL_IP
		11, 0, 0, 0, // IP_RECVERR
		0, 0, 0, 0, // ee_errno
		5, 0, 0, 0, // origin ZEROCOPY, type, code, pad
		3, 0, 0, 0, // ee_info = lo
		7, 0, 0, 0, // ee_data = hi
		0, 0, 0, 0, // 4 bytes of offender sockaddr
		0, 0, 0, 0, // pad to 40
	}
	var got []sockExtendedErr
	if err := abiAMD64TX.parseErrqueue(blob, 0, func(ee sockExtendedErr) { got = append(got, ee) }); err != nil {
		t.Fatal(err)
	}
	if want := []sockExtendedErr{zc(3, 7, 0)}; !cmp.Equal(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestErrqueueParse(t *testing.T) {
	tests := []struct {
		name    string
		abi     txABI
		oob     func(a txABI) []byte
		flags   int
		want    []sockExtendedErr
		wantErr error
	}{
		{"ipv4", abiAMD64TX, func(a txABI) []byte { return errqueueCmsg(a, _SOL_IP, _IP_RECVERR, zc(0, 0, 0)) }, 0,
			[]sockExtendedErr{zc(0, 0, 0)}, nil},
		{"ipv6 coalesced copied", abiAMD64TX, func(a txABI) []byte {
			return errqueueCmsg(a, _SOL_IPV6, _IPV6_RECVERR, zc(10, 20, _SO_EE_CODE_ZEROCOPY_COPIED))
		}, 0, []sockExtendedErr{zc(10, 20, 1)}, nil},
		{"386", abi386TX, func(a txABI) []byte { return errqueueCmsg(a, _SOL_IP, _IP_RECVERR, zc(1, 2, 0)) }, 0,
			[]sockExtendedErr{zc(1, 2, 0)}, nil},
		{"mips", abiMIPSTX, func(a txABI) []byte { return errqueueCmsg(a, _SOL_IP, _IP_RECVERR, zc(0x01020304, 0x05060708, 0)) }, 0,
			[]sockExtendedErr{zc(0x01020304, 0x05060708, 0)}, nil},
		{"sparc64 two cmsgs", abiSPARC64TX, func(a txABI) []byte {
			return append(errqueueCmsg(a, _SOL_IPV6, _IPV6_RECVERR, zc(4, 4, 0)), errqueueCmsg(a, 0xffff, 29, sockExtendedErr{})...)
		}, 0, []sockExtendedErr{zc(4, 4, 0)}, nil},
		{"ee_errno", abiAMD64TX, func(a txABI) []byte {
			return errqueueCmsg(a, _SOL_IP, _IP_RECVERR, sockExtendedErr{Errno: 113, Origin: 2, Type: 3, Code: 1})
		}, 0, []sockExtendedErr{{Errno: 113, Origin: 2, Type: 3, Code: 1}}, nil},
		{"ctrunc", abiAMD64TX, func(a txABI) []byte { return errqueueCmsg(a, _SOL_IP, _IP_RECVERR, zc(0, 0, 0)) }, _MSG_CTRUNC,
			nil, ErrMalformedControl},
		{"short header", abiAMD64TX, func(a txABI) []byte { return make([]byte, 8) }, 0, nil, ErrMalformedControl},
		{"cmsg_len past end", abiAMD64TX, func(a txABI) []byte {
			b := errqueueCmsg(a, _SOL_IP, _IP_RECVERR, zc(0, 0, 0))
			binary.LittleEndian.PutUint64(b, 200)
			return b
		}, 0, nil, ErrMalformedControl},
		{"short sock_extended_err", abiAMD64TX, func(a txABI) []byte {
			b := errqueueCmsg(a, _SOL_IP, _IP_RECVERR, zc(0, 0, 0))
			binary.LittleEndian.PutUint64(b, 16+8)
			return b[:24]
		}, 0, nil, ErrMalformedControl},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []sockExtendedErr
			err := tt.abi.parseErrqueue(tt.oob(tt.abi), tt.flags, func(ee sockExtendedErr) { got = append(got, ee) })
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr == nil && !cmp.Equal(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// ledger feeds a Sender's bookkeeping without a socket. Its completions are
// queued for Completions, as once Completions has been called.
func ledger() *Sender { return &Sender{stream: true} }

// send records a Send of n bytes at off made of calls sendmsg calls.
func (s *Sender) fakeSend(off, n int64, calls int) uint32 {
	seq := s.nextSeq
	per := n / int64(calls)
	for i := 0; i < calls; i++ {
		w := per
		if i == calls-1 {
			w = n - per*int64(calls-1)
		}
		s.noteSent(seq, off, w)
	}
	s.nextSeq++
	s.pending[len(s.pending)-1].open = false
	s.compact()
	return seq
}

func (s *Sender) notify(t *testing.T, a txABI, ees ...sockExtendedErr) error {
	t.Helper()
	var oob []byte
	for _, ee := range ees {
		oob = append(oob, errqueueCmsg(a, _SOL_IP, _IP_RECVERR, ee)...)
	}
	return s.handleErrqueue(a, oob, 0)
}

func TestLedgerCompletions(t *testing.T) {
	s := ledger()
	a := s.fakeSend(0, 100, 1)     // id 0
	b := s.fakeSend(100, 300, 3)   // ids 1..3
	c := s.fakeSend(400, 50, 1)    // id 4
	d := s.fakeSend(4096, 4096, 2) // ids 5..6
	if s.Pending() != 4 {
		t.Fatalf("pending %d", s.Pending())
	}
	// Out of order: ids 2..4 first (part of b, all of c).
	if err := s.notify(t, abiAMD64TX, zc(2, 4, 0)); err != nil {
		t.Fatal(err)
	}
	if want := []Completion{{Seq: c, Offset: 400, Length: 50}}; !cmp.Equal(s.done, want) {
		t.Fatalf("done %+v, want %+v", s.done, want)
	}
	// Then 0..1 (a and the rest of b), copied: the flag changes nothing.
	if err := s.notify(t, abiAMD64TX, zc(0, 1, _SO_EE_CODE_ZEROCOPY_COPIED)); err != nil {
		t.Fatal(err)
	}
	want := []Completion{{Seq: c, Offset: 400, Length: 50}, {Seq: a, Offset: 0, Length: 100}, {Seq: b, Offset: 100, Length: 300}}
	if !cmp.Equal(s.done, want) {
		t.Fatalf("done %+v, want %+v", s.done, want)
	}
	if p, _ := s.isPending(d); !p || s.Pending() != 1 {
		t.Fatalf("d should be the one pending, pending=%d", s.Pending())
	}
	// Before Completions is ever called, nothing is queued for it.
	s.stream = false
	s.complete(5, 6)
	if s.Pending() != 0 || len(s.done) != 3 {
		t.Fatalf("pending %d, done %d", s.Pending(), len(s.done))
	}
	if _, issued := s.isPending(d + 1); issued {
		t.Error("a future seq counts as issued")
	}
}

func TestLedgerIDWrap(t *testing.T) {
	s := ledger()
	// The kernel's u32 id wraps; the ledger's 64-bit ids must follow.
	s.nextCounter = 1<<32 - 2
	x := s.fakeSend(0, 10, 2)  // ids 0xfffffffe, 0xffffffff
	y := s.fakeSend(10, 10, 2) // ids 0, 1 (after wrap)
	if err := s.notify(t, abiAMD64TX, zc(0xffffffff, 0, 0)); err != nil {
		t.Fatal(err)
	}
	if s.Pending() != 2 {
		t.Fatalf("pending %d after partial completion", s.Pending())
	}
	if err := s.notify(t, abiAMD64TX, zc(1, 1, 0), zc(0xfffffffe, 0xfffffffe, 0)); err != nil {
		t.Fatal(err)
	}
	if s.Pending() != 0 {
		t.Fatalf("pending %d", s.Pending())
	}
	if want := []Completion{{Seq: y, Offset: 10, Length: 10}, {Seq: x, Offset: 0, Length: 10}}; !cmp.Equal(s.done, want) {
		t.Errorf("done %+v, want %+v", s.done, want)
	}
}

func TestLedgerOpenSendNotReported(t *testing.T) {
	s := ledger()
	// A Send still issuing calls must not complete even if all its calls
	// so far have.
	s.noteSent(0, 0, 10)
	s.complete(0, 0)
	if s.Pending() != 1 || len(s.done) != 0 {
		t.Fatalf("open send completed early: pending %d done %+v", s.Pending(), s.done)
	}
	s.noteSent(0, 0, 10)
	s.complete(1, 1)
	s.nextSeq++
	s.pending[0].open = false
	s.compact()
	if want := []Completion{{Seq: 0, Offset: 0, Length: 20}}; s.Pending() != 0 || !cmp.Equal(s.done, want) {
		t.Fatalf("pending %d, done %+v", s.Pending(), s.done)
	}
}

// TestLedgerCompletionBeforeCallReturns is the race a reaper running beside
// a Send creates: the kernel reports a call's completion before sendmsg has
// returned to the Send. The id is recorded before the call, so the
// completion lands; an unused id (the call sent nothing) is taken back.
func TestLedgerCompletionBeforeCallReturns(t *testing.T) {
	s := ledger()
	if err := s.beginCall(0, 0); err != nil {
		t.Fatal(err)
	}
	s.complete(0, 0) // the reaper, while sendmsg is still in the kernel
	s.endCall(100)
	s.nextSeq++
	s.pending[0].open = false
	s.compact()
	if want := []Completion{{Seq: 0, Offset: 0, Length: 100}}; s.Pending() != 0 || !cmp.Equal(s.done, want) {
		t.Fatalf("pending %d, done %+v", s.Pending(), s.done)
	}
	// A call that sent nothing gives its id back: the next call reuses it.
	s.noteSent(1, 0, 10) // id 1
	if err := s.beginCall(1, 10); err != nil {
		t.Fatal(err)
	}
	s.endCall(0)
	if err := s.beginCall(2, 50); err != nil { // a new Send's call: id 2
		t.Fatal(err)
	}
	if s.nextCounter != 3 || len(s.pending) != 2 || s.pending[0].last != 1 || s.pending[1].first != 2 {
		t.Fatalf("ids after a refused call: next %d, pending %+v", s.nextCounter, s.pending)
	}
	s.endCall(0)
	if s.nextCounter != 2 || len(s.pending) != 1 {
		t.Fatalf("a new Send's unused call left next %d, pending %+v", s.nextCounter, s.pending)
	}
}

func TestLedgerErrors(t *testing.T) {
	s := ledger()
	s.fakeSend(0, 10, 1)
	err := s.notify(t, abiAMD64TX, sockExtendedErr{Errno: uint32(_EHOSTUNREACH), Origin: 2})
	if !errors.Is(err, _EHOSTUNREACH) {
		t.Fatalf("ee_errno not surfaced: %v", err)
	}
	// Timestamps share the error queue and are ignored.
	if err := s.notify(t, abiAMD64TX, sockExtendedErr{Errno: 42 /* ENOMSG */, Origin: _SO_EE_ORIGIN_TIMESTAMPING}); err != nil {
		t.Fatalf("timestamp: %v", err)
	}
	// Unknown ids (another MSG_ZEROCOPY user) are ignored.
	if err := s.notify(t, abiAMD64TX, zc(100, 200, 0)); err != nil || s.Pending() != 1 {
		t.Fatalf("unknown ids: %v, pending %d", err, s.Pending())
	}
	if err := s.notify(t, abiAMD64TX, zc(0, 0, 0)); err != nil || s.Pending() != 0 {
		t.Fatalf("%v, pending %d", err, s.Pending())
	}
}

func TestSendRangeValidation(t *testing.T) {
	s := ledger()
	for _, r := range [][2]int64{{-1, 10}, {0, 0}, {0, -5}, {1<<63 - 5, 10}} {
		if _, err := s.Send(r[0], r[1]); !errors.Is(err, _EINVAL) {
			t.Errorf("Send(%d, %d) = %v, want EINVAL", r[0], r[1], err)
		}
	}
}

// TestNewSenderBadArguments: what NewSender refuses before touching the
// connection, each with a clear error instead of a panic.
func TestNewSenderBadArguments(t *testing.T) {
	tx := &Binding{id: 5, dir: DirectionTX}
	rx := &Binding{id: 6, dir: DirectionRX, queues: []int{1}}
	closed := &Binding{id: 7, dir: DirectionTX}
	closed.Close()
	var nilTCP *net.TCPConn
	var nilUnix *net.UnixConn
	for _, tt := range []struct {
		name string
		conn syscall.Conn
		b    *Binding
		cfg  *SenderConfig
		is   error
		msg  string
	}{
		{"nil binding", nilTCP, nil, nil, _EINVAL, "nil *Binding"},
		{"rx binding", nilTCP, rx, nil, _EINVAL, "rx binding"},
		{"closed binding", nilTCP, closed, nil, net.ErrClosed, "closed"},
		{"id 0", nilTCP, &Binding{dir: DirectionTX}, nil, _EINVAL, "id 0"},
		{"nil conn", nil, tx, nil, _EINVAL, "nil connection"},
		{"typed nil TCPConn", nilTCP, tx, nil, _EINVAL, "nil connection"},
		{"typed nil UnixConn", nilUnix, tx, nil, _EINVAL, "nil connection"},
		{"negative chunk", nilTCP, tx, &SenderConfig{ChunkSize: -1}, _EINVAL, "ChunkSize"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewSender(tt.conn, tt.b, tt.cfg)
			if s != nil || !errors.Is(err, tt.is) || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("NewSender = %v, %v; want an error matching %v saying %q", s, err, tt.is, tt.msg)
			}
		})
	}
}
