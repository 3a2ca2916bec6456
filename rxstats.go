package devmem

// ReceiverStats counts what a Receiver did since NewReceiver.
type ReceiverStats struct {
	// RecvCalls is the number of recvmsg calls that returned data.
	RecvCalls uint64
	// Bytes is the stream bytes received; LinearBytes of them were
	// copied into the receive buffer as linear frags, ReadableBytes as
	// readable messages (both included in Bytes).
	Bytes, LinearBytes, ReadableBytes uint64
	// Frags is the number of dma-buf frags (tokens) received.
	Frags uint64
	// DontneedCalls is the number of SO_DEVMEM_DONTNEED calls made, and
	// TokensFreed the tokens the kernel reported freed by them.
	DontneedCalls, TokensFreed uint64
	// Outstanding is the number of tokens received and not yet returned
	// to the kernel, Pending those of them released with Done and waiting
	// for their batch, PeakOutstanding the most Outstanding ever was.
	Outstanding, Pending, PeakOutstanding int
}

// Stats returns the receiver's counts.
func (r *Receiver) Stats() ReceiverStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Outstanding = r.outstanding.n
	s.Pending = r.pending.n
	return s
}
