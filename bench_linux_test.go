package devmem

import (
	"context"
	"testing"
)

// BenchmarkReleaseTokensLoopback releases 1024 tokens (coalesced into 16
// ranges) per op with one real SO_DEVMEM_DONTNEED on a loopback socket;
// the kernel knows none of them, so this measures the wrapper plus the
// system call's fixed cost.
func BenchmarkReleaseTokensLoopback(b *testing.B) {
	c, _ := tcpPair(b)
	r, err := NewTokenReleaser(c)
	if err != nil {
		b.Fatal(err)
	}
	tokens := benchTokens()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.ReleaseTokens(tokens); err == nil {
			b.Fatal("loopback freed tokens")
		}
	}
}

func BenchmarkRecvLoopback(b *testing.B) {
	c, s := tcpPair(b)
	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BufferSize: 65536})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	data := make([]byte, 16384)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		c.Write(data)
		for n := 0; n < len(data); {
			msg, err := r.Recv()
			if err != nil {
				b.Fatal(err)
			}
			n += msg.N
		}
	}
}

// BenchmarkRecvLoop runs the receive loop a devmem consumer runs — Recv,
// then Done for the frags — over simKernel (everything but the system
// calls: the control messages are written as the kernel writes them, with
// tokens allocated lowest-free, and SO_DEVMEM_DONTNEED frees them), in the
// two regimes of the release policy: the NIC the bottleneck (each recvmsg
// finds 8 frags, then the receiver would block) and the receiver (each
// recvmsg finds a full 800 KiB buffer). It reports SO_DEVMEM_DONTNEED calls
// per frag (the policy's cost; the receiver must stay at or below 1/64) and
// allocations (0 in steady state). One op is one Recv.
func BenchmarkRecvLoop(b *testing.B) {
	for _, reg := range simRegimes {
		for _, bc := range []struct {
			name string
			cfg  ReceiverConfig
		}{
			{"defaults", ReceiverConfig{}},
			{"MaxOutstanding=4096", ReceiverConfig{MaxOutstanding: 4096}},
		} {
			b.Run(reg.name+"/"+bc.name, func(b *testing.B) {
				k := &simKernel{fragsPerCall: reg.fragsPerCall, blockEvery: reg.blockEvery}
				cfg := bc.cfg
				r := newSimReceiver(b, k, testRXBinding(1), &cfg)
				defer r.Close()
				var m Message
				step := func() {
					if err := r.RecvInto(context.Background(), &m); err != nil {
						b.Fatal(err)
					}
					if err := r.Done(m.Frags); err != nil {
						b.Fatal(err)
					}
				}
				for range 100 { // warm up: token maps and scratch reach their size
					step()
				}
				before := r.Stats()
				b.ReportAllocs()
				b.SetBytes(int64(min(reg.fragsPerCall, DefaultBufferSize/4096) * 4096))
				for b.Loop() {
					step()
				}
				st := r.Stats()
				frags := st.Frags - before.Frags
				b.ReportMetric(float64(st.DontneedCalls-before.DontneedCalls)/float64(frags), "dontneed/frag")
				b.ReportMetric(float64(frags)/float64(st.RecvCalls-before.RecvCalls), "frags/recvmsg")
			})
		}
	}
}
