//go:build linux && (amd64 || arm64 || ppc64le)

package devmem

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// On 64-bit little-endian machines that load unaligned words at full speed,
// the receive path's parser reads each 40-byte devmem control message as
// five words and writes each Frag as four: no byte-wise decoding, no bounds
// check per field, and messages and frags at a fixed stride, so the loop is
// a handful of independent loads, two compares and four stores per frag.

// devmemCmsgWords is struct cmsghdr + struct dmabuf_cmsg on LP64, as words.
type devmemCmsgWords struct {
	len       uint64 // cmsg_len
	levelType uint64 // cmsg_level | cmsg_type<<32
	tail      fragTail
}

// fragTail is both the last 24 bytes of a devmem control message
// (frag_offset, frag_size, frag_token, dmabuf_id, flags) and of a Frag
// (Offset, Size, Token, DMABufID, padding): a dma-buf frag is one 8-byte
// store of its kind and one 24-byte copy.
type fragTail struct {
	offset    uint64
	sizeToken uint64 // size | token<<32
	idFlags   uint64 // dmabuf_id | flags<<32 (flags land in Frag's padding)
}

// fragWords is Frag's layout as words (checked below).
type fragWords struct {
	kindGen uint64 // Kind | gen<<32
	tail    fragTail
}

// Compile-time layout checks: each index is 0 exactly when the layouts
// agree, else the build fails.
var (
	_ = [1]struct{}{}[unsafe.Sizeof(devmemCmsgWords{})-uintptr(devmemCmsgSpace)]
	_ = [1]struct{}{}[unsafe.Sizeof(Frag{})-unsafe.Sizeof(fragWords{})]
	_ = [1]struct{}{}[unsafe.Offsetof(Frag{}.gen)-4]
	_ = [1]struct{}{}[unsafe.Offsetof(Frag{}.Offset)-unsafe.Offsetof(fragWords{}.tail)]
	_ = [1]struct{}{}[unsafe.Offsetof(Frag{}.Size)-unsafe.Offsetof(fragWords{}.tail)-8]
	_ = [1]struct{}{}[unsafe.Offsetof(Frag{}.Token)-unsafe.Offsetof(fragWords{}.tail)-12]
	_ = [1]struct{}{}[unsafe.Offsetof(Frag{}.DMABufID)-unsafe.Offsetof(fragWords{}.tail)-16]
)

const (
	dmabufLevelType = uint64(unix.SOL_SOCKET) | uint64(unix.SCM_DEVMEM_DMABUF)<<32
	linearLevelType = uint64(unix.SOL_SOCKET) | uint64(unix.SCM_DEVMEM_LINEAR)<<32
)

func init() { parseControlNative = parseDevmemCmsgsWords }

// parseDevmemCmsgsWords is parseDevmemCmsgs by words. Anything but a
// well-formed devmem message (another cmsg, an odd cmsg_len, a short tail,
// a full frags slice) goes to the generic walk from that offset, which
// produces the same frags and errors as from the start.
// dmabufRun copies up to n well-formed SCM_DEVMEM_DMABUF messages from src
// into Frags at dst, stopping at the first other one, and returns how many
// it copied. On amd64 with AVX2 it is assembly (one 32-byte store per
// frag).
var dmabufRun = dmabufRunWords

func dmabufRunWords(src, dst unsafe.Pointer, n int) int {
	cm := unsafe.Slice((*devmemCmsgWords)(src), n)
	fw := unsafe.Slice((*fragWords)(dst), n)
	for i := range cm {
		c, f := &cm[i], &fw[i]
		// One branch per frag: exactly the expected length and type.
		if (c.len^uint64(devmemCmsgSpace))|(c.levelType^dmabufLevelType) != 0 {
			return i
		}
		f.kindGen = uint64(FragDMABuf)
		f.tail = c.tail
	}
	return n
}

func parseDevmemCmsgsWords(oob []byte, frags []Frag) (int, error) {
	const size = devmemCmsgSpace
	cnt := min(len(frags), len(oob)/size)
	if cnt == 0 {
		return parseControlFrom(nativeCmsgLayout, oob, 0, frags, 0, 0)
	}
	src := unsafe.Pointer(unsafe.SliceData(oob))
	dst := unsafe.Pointer(unsafe.SliceData(frags))
	cm := unsafe.Slice((*devmemCmsgWords)(src), cnt)
	fw := unsafe.Slice((*fragWords)(dst), cnt)
	var linearOff uint64
	for i := 0; ; {
		i += dmabufRun(unsafe.Pointer(&cm[i]), unsafe.Pointer(&fw[i]), cnt-i)
		if i == cnt {
			break
		}
		// Not a dma-buf frag: a linear one keeps the fast path going,
		// anything else goes to the generic walk.
		c, f := &cm[i], &fw[i]
		if c.len != uint64(size) || c.levelType != linearLevelType {
			return parseControlFrom(nativeCmsgLayout, oob, i*size, frags, i, linearOff)
		}
		sz := uint32(c.tail.sizeToken)
		f.kindGen = uint64(FragLinear)
		f.tail = fragTail{offset: linearOff, sizeToken: uint64(sz)}
		linearOff += uint64(sz)
		if i++; i == cnt {
			break
		}
	}
	if cnt*size == len(oob) {
		return cnt, nil
	}
	return parseControlFrom(nativeCmsgLayout, oob, cnt*size, frags, cnt, linearOff)
}
