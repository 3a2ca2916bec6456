package devmem

// FragKind says where the bytes of a Frag are.
type FragKind uint8

const (
	// FragLinear bytes were copied into the caller's buffer: the NIC did not
	// split them off into device memory (SO_DEVMEM_LINEAR). They carry no
	// token.
	FragLinear FragKind = iota + 1
	// FragDMABuf bytes are in the dma-buf identified by DMABufID, at Offset
	// (SO_DEVMEM_DMABUF). Their token must be returned.
	FragDMABuf
)

// String returns "linear" or "dmabuf".
func (k FragKind) String() string {
	switch k {
	case FragLinear:
		return "linear"
	case FragDMABuf:
		return "dmabuf"
	}
	return "FragKind(" + itoa(uint64(k)) + ")"
}

// Frag is one piece of received payload, in stream order.
//
// A Frag received by a Receiver remembers which receive it came from, so
// the Receiver refuses to release it twice, or one it did not hand out:
// tokens are small per-socket integers that the kernel reissues as soon as
// they are returned, so the token alone cannot tell a stale or foreign frag
// from a live one. Copies of a Frag carry the same identity.
type Frag struct {
	// Kind says where the bytes are: copied into the receive buffer
	// (FragLinear) or left in the dma-buf (FragDMABuf).
	Kind FragKind
	// gen is the generation of the receive that produced the frag: unique
	// per Receiver call process-wide, 0 for frags that did not come from a
	// Receiver (ParseControl, literals). It sits in Kind's padding.
	gen uint32
	// Offset is, for FragDMABuf, the byte offset in the dma-buf where the
	// payload starts; for FragLinear, the offset in the receive buffer.
	Offset uint64
	// Size is the number of payload bytes.
	Size uint32
	// Token identifies the frag to SO_DEVMEM_DONTNEED (FragDMABuf only;
	// never 0 for a real frag).
	Token uint32
	// DMABufID is the id of the binding the frag belongs to (FragDMABuf
	// only).
	DMABufID uint32
}
