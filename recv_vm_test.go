//go:build vmtest

package devmem

import (
	"errors"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/devmem-go/devmem/selftest"
)

// checkFrags validates the payload of frags (dma-buf frags through the
// mapping, linear ones from linear) against the stream at *pos, advancing
// it.
func (x *vmRX) checkFrags(t *testing.T, s *vmStream, pos *int64, frags []Frag, linear []byte) {
	t.Helper()
	if err := x.buf.BeginCPUAccess(SyncRead); err != nil {
		t.Fatal(err)
	}
	defer x.buf.EndCPUAccess(SyncRead)
	for _, f := range frags {
		var got []byte
		switch f.Kind {
		case FragDMABuf:
			if f.DMABufID != x.binding.ID() {
				t.Fatalf("frag from dma-buf %d, bound %d", f.DMABufID, x.binding.ID())
			}
			got = x.mem[f.Offset : f.Offset+uint64(f.Size)]
		case FragLinear:
			got = linear[f.Offset : f.Offset+uint64(f.Size)]
		}
		if err := s.check(*pos, got); err != nil {
			t.Fatalf("%v (%s frag %+v)", err, f.Kind, f)
		}
		*pos += int64(f.Size)
	}
}

func countTokens(frags []Frag) int {
	n := 0
	for _, f := range frags {
		if f.Kind == FragDMABuf {
			n++
		}
	}
	return n
}

// recvSome receives on r until it holds at least one dma-buf frag.
func recvSome(t *testing.T, r *Receiver, m *Message) {
	t.Helper()
	for {
		if err := r.RecvInto(t.Context(), m); err != nil {
			t.Fatalf("recv: %v", err)
		}
		if countTokens(m.Frags) > 0 {
			return
		}
	}
}

// TestVMRXFragOwnership: with two sockets on one bound queue, each holding
// tokens (small per-socket integers, so the same numbers), releasing one
// receiver's frags on the other, or a message's frags a second time after
// the kernel reissued its tokens, is refused before any SO_DEVMEM_DONTNEED;
// the kernel's freed counts then prove nothing was freed by the refused
// calls: each frag's token is freed exactly once, by its own release.
func TestVMRXFragOwnership(t *testing.T) { vmGeometries(t, vmFragOwnership) }

func vmFragOwnership(t *testing.T) {
	x := vmSetupRX(t, 8<<20, []int{3})
	const total = 1 << 20
	var rs [2]*Receiver
	var streams [2]*vmStream
	for i := range rs {
		server, client := x.connect(t, x.topo.Addr4)
		streams[i] = newVMStream(uint64(11 + i))
		go func() { streams[i].send(client, total); client.Close() }()
		r, err := NewReceiver(server, x.binding, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		server.SetReadDeadline(time.Now().Add(2 * time.Minute))
		rs[i] = r
	}
	r1, r2 := rs[0], rs[1]
	var m1, m2 Message
	recvSome(t, r1, &m1)
	recvSome(t, r2, &m2)
	calls := func(r *Receiver) uint64 { return r.Stats().DontneedCalls }

	// Wrong receiver: r2's frags on r1.
	before := calls(r1)
	freed, err := r1.Release(m2.Frags)
	if !errors.Is(err, ErrNotOwned) || freed != 0 || calls(r1) != before {
		t.Fatalf("r1.Release(frags of r2) = %d, %v after %d DONTNEED calls; want ErrNotOwned and none",
			freed, err, calls(r1)-before)
	}
	if err := r1.Done(m2.Frags); !errors.Is(err, ErrNotOwned) {
		t.Fatalf("r1.Done(frags of r2) = %v, want ErrNotOwned", err)
	}
	t.Logf("wrong receiver: %v", err)
	// Both receivers still hold all their tokens: the kernel frees each
	// set in full on its own socket.
	for i, c := range []struct {
		r *Receiver
		m *Message
	}{{r1, &m1}, {r2, &m2}} {
		freed, err := c.r.Release(c.m.Frags)
		if want := countTokens(c.m.Frags); err != nil || freed != want {
			t.Fatalf("receiver %d: own release freed %d of %d: %v", i+1, freed, want, err)
		}
	}

	// Stale message: m1 is released; the kernel reissues its tokens to
	// the next receives on r1.
	stale := append([]Frag(nil), m1.Frags...)
	var m3 Message
	recvSome(t, r1, &m3)
	reissued := 0
	for _, f := range m3.Frags {
		for _, g := range stale {
			if f.Kind == FragDMABuf && g.Kind == FragDMABuf && f.Token == g.Token {
				reissued++
			}
		}
	}
	t.Logf("stale message: %d of its %d tokens reissued to the next receive", reissued, countTokens(stale))
	before = calls(r1)
	freed, err = r1.Release(stale)
	if !errors.Is(err, ErrNotOwned) || freed != 0 || calls(r1) != before {
		t.Fatalf("second release of a message = %d, %v after %d DONTNEED calls; want ErrNotOwned and none",
			freed, err, calls(r1)-before)
	}
	freed, err = r1.Release(m3.Frags)
	if want := countTokens(m3.Frags); err != nil || freed != want {
		t.Fatalf("release of the live message freed %d of %d: %v", freed, want, err)
	}
	if st := r1.Stats(); st.TokensFreed != uint64(countTokens(m1.Frags)+countTokens(m3.Frags)) {
		t.Fatalf("r1 stats %+v: the kernel freed more than r1's own releases", st)
	}
}

// TestVMRXMaxOutstanding: a consumer that keeps many frags back, under a
// full-rate sender, never sees more than MaxOutstanding tokens out, not
// even for one receive, and the transfer completes with every byte intact.
func TestVMRXMaxOutstanding(t *testing.T) { vmGeometries(t, vmMaxOutstanding) }

func vmMaxOutstanding(t *testing.T) {
	x := vmSetupRX(t, 8<<20, []int{3})
	server, client := x.connect(t, x.topo.Addr4)
	const (
		total  = 16 << 20
		maxOut = 64
	)
	s := newVMStream(21)
	go func() { s.send(client, total); client.Close() }()
	r, err := NewReceiver(server, x.binding, &ReceiverConfig{MaxOutstanding: maxOut})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	server.SetReadDeadline(time.Now().Add(3 * time.Minute))
	var (
		pos   int64
		held  []Frag
		full  int
		worst int
		m     Message
	)
	for {
		err := r.RecvInto(t.Context(), &m)
		if errors.Is(err, io.EOF) {
			break
		}
		if errors.Is(err, ErrTooManyOutstanding) {
			// Release the older half, as a consumer catching up.
			full++
			n := (len(held) + 1) / 2
			if _, err := r.Release(held[:n]); err != nil {
				t.Fatal(err)
			}
			held = append(held[:0], held[n:]...)
			continue
		}
		if err != nil {
			t.Fatalf("recv at %d: %v", pos, err)
		}
		x.checkFrags(t, s, &pos, m.Frags, m.Linear)
		for _, f := range m.Frags {
			if f.Kind == FragDMABuf {
				held = append(held, f)
			}
		}
		out := r.Outstanding()
		worst = max(worst, out)
		if out > maxOut || len(held) != out {
			t.Fatalf("after a receive at %d: %d outstanding, %d held, MaxOutstanding %d", pos, out, len(held), maxOut)
		}
	}
	if _, err := r.Release(held); err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	t.Logf("%d bytes in %d recvmsg, %d frags; cap reached %d times; worst %d, peak %d outstanding",
		pos, st.RecvCalls, st.Frags, full, worst, st.PeakOutstanding)
	if pos != total {
		t.Fatalf("received %d of %d bytes", pos, total)
	}
	if st.PeakOutstanding > maxOut || full == 0 {
		t.Fatalf("peak %d outstanding (cap %d), cap reached %d times", st.PeakOutstanding, maxOut, full)
	}
	if st.TokensFreed != st.Frags || r.Outstanding() != 0 {
		t.Fatalf("%d of %d tokens freed, %d outstanding", st.TokensFreed, st.Frags, r.Outstanding())
	}
}

// TestVMRXBatched64MiB receives 64 MiB with the built-in release policy
// (Done), validating every byte, and checks what the policy promises: every
// token comes back, at most one SO_DEVMEM_DONTNEED per 64 frags. In a
// 32-bit build running on the VM's 64-bit kernel it is the compat receiver
// test: the control buffer must be sized for the kernel's 40-byte
// CMSG_LEN with 36-byte compat messages.
func TestVMRXBatched64MiB(t *testing.T) {
	vmGeometries(t, vmBatched64MiB)
}

// vmGeometries runs f with the simulated NIC's frag geometries: packed
// like hardware (several frags per 4K net_iov, payloads crossing their
// boundaries) and, where the NIC has the knob, one packet per fresh
// net_iov.
func vmGeometries(t *testing.T, f func(t *testing.T)) {
	t.Run("packed", f)
	if _, err := selftest.NsimKnob("devmem_rx_buf_per_pkt"); err != nil {
		t.Logf("no devmem_rx_buf_per_pkt knob (%v): one geometry only", err)
		return
	}
	t.Run("buf-per-packet", func(t *testing.T) {
		vmKnob(t, "devmem_rx_buf_per_pkt", "1")
		f(t)
	})
}

func vmBatched64MiB(t *testing.T) {
	x := vmSetupRX(t, 16<<20, []int{3})
	t.Logf("GOARCH %s, machine %q, compat %v: %d bytes per devmem cmsg, %d needed free",
		runtime.GOARCH, unameMachine(), compatKernel, devmemCmsgSpace, devmemCmsgNeed)
	if devmemCmsgSpace == 36 && !compatKernel {
		t.Fatalf("32-bit program on the x86_64 VM kernel not detected as compat (uname %q)", unameMachine())
	}
	server, client := x.connect(t, x.topo.Addr4)
	const total = 64 << 20
	s := newVMStream(31)
	go func() { s.send(client, total); client.Close() }()
	r, err := NewReceiver(server, x.binding, nil)
	if err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(4 * time.Minute))
	var (
		pos int64
		m   Message
	)
	for {
		err := r.RecvInto(t.Context(), &m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("recv at %d: %v", pos, err)
		}
		x.checkFrags(t, s, &pos, m.Frags, m.Linear)
		if err := r.Done(m.Frags); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d bytes: %d recvmsg, %d frags (%.1f per call), %d DONTNEED (1 per %.0f frags), peak %d outstanding",
		pos, st.RecvCalls, st.Frags, float64(st.Frags)/float64(st.RecvCalls), st.DontneedCalls,
		float64(st.Frags)/float64(max(st.DontneedCalls, 1)), st.PeakOutstanding)
	if pos != total || st.Bytes != total {
		t.Fatalf("received %d bytes (stats %d), sent %d", pos, st.Bytes, total)
	}
	if st.TokensFreed != st.Frags || st.Outstanding != 0 || st.Pending != 0 {
		t.Fatalf("tokens: %d received, %d freed, %d outstanding", st.Frags, st.TokensFreed, st.Outstanding)
	}
	if st.DontneedCalls*64 > st.Frags {
		t.Errorf("%d DONTNEED calls for %d frags: more than 1 per 64", st.DontneedCalls, st.Frags)
	}
}

// TestVMRXControlOneMessage gives recvmsg room for exactly one devmem
// message, then three: every call succeeds (no ETOOSMALL, also in a 32-bit
// build on the 64-bit kernel, where one message needs 40 bytes, not 36)
// and reports at most that many frags.
func TestVMRXControlOneMessage(t *testing.T) {
	for _, k := range []int{1, 3} {
		t.Run(itoa(uint64(k)), func(t *testing.T) { vmControlMessages(t, k) })
	}
}

func vmControlMessages(t *testing.T, k int) {
	x := vmSetupRX(t, 4<<20, []int{3})
	server, client := x.connect(t, x.topo.Addr4)
	const total = 1 << 20
	s := newVMStream(uint64(40 + k))
	go func() { s.send(client, total); client.Close() }()
	r, err := NewReceiver(server, x.binding, &ReceiverConfig{ControlSize: controlLen(k)})
	if err != nil {
		t.Fatal(err)
	}
	server.SetReadDeadline(time.Now().Add(2 * time.Minute))
	var (
		pos   int64
		m     Message
		calls int
	)
	for {
		err := r.RecvInto(t.Context(), &m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("ControlSize %d (%d messages), call %d at %d: %v", controlLen(k), k, calls, pos, err)
		}
		calls++
		if len(m.Frags) > k {
			t.Fatalf("%d frags with room for %d", len(m.Frags), k)
		}
		x.checkFrags(t, s, &pos, m.Frags, m.Linear)
		if _, err := r.Release(m.Frags); err != nil {
			t.Fatal(err)
		}
	}
	if pos != total {
		t.Fatalf("received %d of %d bytes", pos, total)
	}
	t.Logf("ControlSize %d: %d calls for %d bytes", controlLen(k), calls, pos)
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestVMRXBatchedNICBound is TestVMRXBatched64MiB with the NIC the
// bottleneck: the sender paces its writes, so each recvmsg finds the
// socket nearly drained and the receiver blocks between them — the case
// where flushing whenever the socket runs dry costs one SO_DEVMEM_DONTNEED
// per recvmsg. The policy must still make at most one call per 64 frags.
func TestVMRXBatchedNICBound(t *testing.T) { waitModes(t, vmBatchedNICBound) }

// vmBatchedNICBound: the receiver waits for the NIC before nearly every
// receive, so the release policy runs before each wait (in the poller's
// callback, or before BlockThread's poll).
func vmBatchedNICBound(t *testing.T, blockThread bool) {
	x := vmSetupRX(t, 16<<20, []int{3})
	server, client := x.connect(t, x.topo.Addr4)
	const (
		total = 8 << 20
		chunk = 32 << 10
	)
	s := newVMStream(51)
	go func() {
		defer client.Close()
		for pos := int64(0); pos < total; pos += chunk {
			if err := s.sendRange(client, pos, chunk); err != nil {
				return
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	r, err := NewReceiver(server, x.binding, &ReceiverConfig{BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	server.SetReadDeadline(time.Now().Add(4 * time.Minute))
	var (
		pos int64
		m   Message
	)
	for {
		err := r.RecvInto(t.Context(), &m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("recv at %d: %v", pos, err)
		}
		x.checkFrags(t, s, &pos, m.Frags, m.Linear)
		if err := r.Done(m.Frags); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Flush(); err != nil {
		t.Fatal(err)
	}
	st := r.Stats()
	t.Logf("%d bytes: %d recvmsg, %d frags (%.1f per call), %d DONTNEED (1 per %.0f frags), peak %d outstanding",
		pos, st.RecvCalls, st.Frags, float64(st.Frags)/float64(st.RecvCalls), st.DontneedCalls,
		float64(st.Frags)/float64(max(st.DontneedCalls, 1)), st.PeakOutstanding)
	if pos != total || st.TokensFreed != st.Frags {
		t.Fatalf("received %d of %d bytes; %d of %d tokens freed", pos, total, st.TokensFreed, st.Frags)
	}
	if st.DontneedCalls*64 > st.Frags {
		t.Errorf("%d DONTNEED calls for %d frags: more than 1 per 64", st.DontneedCalls, st.Frags)
	}
}

// sendRange writes n bytes of the stream from position pos to w.
func (s *vmStream) sendRange(w io.Writer, pos, n int64) error {
	for end := pos + n; pos < end; {
		i := int(pos % int64(len(s.block)))
		k := min(int64(len(s.block)-i), end-pos)
		if _, err := w.Write(s.block[i : i+int(k)]); err != nil {
			return err
		}
		pos += k
	}
	return nil
}
