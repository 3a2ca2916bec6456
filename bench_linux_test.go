package devmem

import "testing"

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
