package devmem

import (
	"encoding/binary"
	"strconv"
	"unsafe"
)

// dmabufCmsgLen is sizeof(struct dmabuf_cmsg), the payload of both
// SCM_DEVMEM_LINEAR and SCM_DEVMEM_DMABUF: u64 frag_offset, u32 frag_size,
// u32 frag_token, u32 dmabuf_id, u32 flags. It is 24 bytes on every
// architecture (no padding, even where u64 is 4-byte aligned).
const dmabufCmsgLen = 24

// cmsgLayout describes struct cmsghdr and the devmem cmsg numbers of one
// Linux ABI. The parser works over an explicit layout so tests can check
// every ABI (32/64-bit, little/big-endian, SOL_SOCKET 1/0xffff) on any host;
// ParseControl uses nativeCmsgLayout.
type cmsgLayout struct {
	// wordSize is sizeof(size_t) == sizeof(long): the width of cmsg_len
	// and the cmsg alignment (CMSG_ALIGN), 8 or 4.
	wordSize int
	// bigEndian selects the byte order of every field.
	bigEndian bool
	// level is SOL_SOCKET: 1, or 0xffff on alpha, mips, parisc and sparc.
	level uint32
	// linear and dmabuf are SCM_DEVMEM_LINEAR and SCM_DEVMEM_DMABUF:
	// 78/79 (generic), 0x57/0x58 (sparc), 0x404E/0x404F (parisc).
	linear, dmabuf uint32
}

// hdrLen is sizeof(struct cmsghdr): cmsg_len (size_t), cmsg_level (int),
// cmsg_type (int). It is already CMSG_ALIGNed (16 or 12), so the payload
// starts right after it.
func (l cmsgLayout) hdrLen() int { return l.wordSize + 8 }

// space is CMSG_SPACE(len).
func (l cmsgLayout) space(n int) int { return l.hdrLen() + l.align(n) }

// align is CMSG_ALIGN: round up to sizeof(long).
func (l cmsgLayout) align(n int) int { return (n + l.wordSize - 1) &^ (l.wordSize - 1) }

func (l cmsgLayout) u32(b []byte) uint32 {
	if l.bigEndian {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

func (l cmsgLayout) u64(b []byte) uint64 {
	if l.bigEndian {
		return binary.BigEndian.Uint64(b)
	}
	return binary.LittleEndian.Uint64(b)
}

// word reads a size_t.
func (l cmsgLayout) word(b []byte) uint64 {
	if l.wordSize == 8 {
		return l.u64(b)
	}
	return uint64(l.u32(b))
}

// devmemCmsgSpace is CMSG_SPACE(sizeof(struct dmabuf_cmsg)) in this
// program's ABI: the control-buffer bytes each devmem control message
// consumes (40 on 64-bit, 36 on 32-bit, where struct cmsghdr is 12 bytes).
const devmemCmsgSpace = int(unsafe.Sizeof(uintptr(0))) + 8 + dmabufCmsgLen

// devmemCmsgNeed is the free control-buffer space the kernel demands before
// it writes one more devmem control message. put_cmsg_notrunc compares
// msg_controllen against the kernel's own CMSG_LEN(24), so for a 32-bit
// program on a 64-bit kernel (compat) it is the 64-bit 40 while each message
// still consumes the compat 36. Set once at init (compat.go).
var devmemCmsgNeed = devmemCmsgSpace

// controlLen returns the control-buffer length in which the kernel writes
// at most k devmem control messages and, for k > 0, at least k when it has
// that many frags to report: the first needs devmemCmsgNeed bytes, each
// further one devmemCmsgSpace more.
func controlLen(k int) int {
	if k <= 0 {
		return 0
	}
	return devmemCmsgNeed + (k-1)*devmemCmsgSpace
}

// MaxFrags returns the largest number of frags one recvmsg can report with
// a control buffer of controlLen bytes (the buffer's size, not the
// msg_controllen recvmsg returns), which is a []Frag length that
// ParseControl never overflows for what that call wrote. It accounts for a
// 32-bit program on a 64-bit kernel, where the kernel wants 40 free bytes
// for each 36-byte message. 0 means the buffer is too small for even one:
// recvmsg fails with ETOOSMALL (ErrControlTooSmall).
func MaxFrags(controlLen int) int {
	if controlLen < devmemCmsgNeed {
		return 0
	}
	return (controlLen-devmemCmsgNeed)/devmemCmsgSpace + 1
}

// ParseControl parses the control data returned by a recvmsg with
// MSG_SOCK_DEVMEM (msg_control[:msg_controllen]) into frags, in stream
// order, and returns how many it filled. It does not allocate.
//
// SCM_DEVMEM_LINEAR becomes a FragLinear whose Offset is the running offset
// of linear bytes in the receive buffer (the kernel copies linear bytes
// back to back into the iovec); SCM_DEVMEM_DMABUF becomes a FragDMABuf.
// Control messages of other levels or types (timestamps, for example) are
// skipped.
//
// A truncated or inconsistent control message yields an error matching
// ErrMalformedControl, together with the frags parsed before it. More frags
// than len(frags) yields ErrTooManyFrags with len(frags) filled: size frags
// with MaxFrags(len(oob)) to rule that out.
//
// ParseControl uses this architecture's ABI (SOL_SOCKET, SCM_DEVMEM_*,
// sizeof(struct cmsghdr), byte order). Outside Linux it returns
// ErrNotSupported.
func ParseControl(oob []byte, frags []Frag) (int, error) {
	if !cmsgSupported {
		return 0, ErrNotSupported
	}
	return parseControl(nativeCmsgLayout, oob, frags)
}

// parseControl walks the cmsgs like the kernel's CMSG_NXTHDR, but never
// trusts cmsg_len: it must cover the header and fit in what remains. The
// stride is CMSG_ALIGN(cmsg_len) clamped to the remaining bytes, because
// put_cmsg clamps the last cmsg's padding to the buffer.
//
// The running kernel's own layout takes parseControlNative where the build
// has one: same results, several times faster.
func parseControl(l cmsgLayout, oob []byte, frags []Frag) (int, error) {
	if parseControlNative != nil && l == nativeCmsgLayout {
		return parseControlNative(oob, frags)
	}
	return parseControlFrom(l, oob, 0, frags, 0, 0)
}

// parseControlNative, where set (Linux), parses nativeCmsgLayout with that
// layout's numbers as constants. It handles the common case, back-to-back
// devmem cmsgs, itself and hands anything else to parseControlFrom, so its
// results and errors are parseControlFrom's by construction.
var parseControlNative func(oob []byte, frags []Frag) (int, error)

// parseControlFrom is parseControl resumed at byte off of oob with n frags
// filled and linearOff linear bytes seen: the generic walk, over any layout.
func parseControlFrom(l cmsgLayout, oob []byte, off int, frags []Frag, n int, linearOff uint64) (int, error) {
	hdr := l.hdrLen()
	for off < len(oob) {
		b := oob[off:]
		if len(b) < hdr {
			return n, malformed(off, "truncated cmsghdr: "+strconv.Itoa(len(b))+" bytes left, header is "+strconv.Itoa(hdr))
		}
		cmsgLen := l.word(b)
		if cmsgLen < uint64(hdr) {
			return n, malformed(off, "cmsg_len "+strconv.FormatUint(cmsgLen, 10)+" shorter than the header ("+strconv.Itoa(hdr)+")")
		}
		if cmsgLen > uint64(len(b)) {
			return n, malformed(off, "cmsg_len "+strconv.FormatUint(cmsgLen, 10)+" exceeds the "+strconv.Itoa(len(b))+" bytes left")
		}
		level := l.u32(b[l.wordSize:])
		typ := l.u32(b[l.wordSize+4:])
		if level == l.level && (typ == l.linear || typ == l.dmabuf) {
			if int(cmsgLen)-hdr != dmabufCmsgLen {
				return n, malformed(off, "devmem cmsg payload is "+strconv.Itoa(int(cmsgLen)-hdr)+" bytes, want 24")
			}
			if n == len(frags) {
				return n, ErrTooManyFrags
			}
			p := b[hdr : hdr+dmabufCmsgLen]
			f := &frags[n]
			f.Size = l.u32(p[8:])
			if typ == l.linear {
				f.Kind, f.Offset, f.Token, f.DMABufID = FragLinear, linearOff, 0, 0
				linearOff += uint64(f.Size)
			} else {
				f.Kind, f.Offset, f.Token, f.DMABufID = FragDMABuf, l.u64(p), l.u32(p[12:]), l.u32(p[16:])
			}
			n++
		}
		stride := l.align(int(cmsgLen))
		if stride > len(b) {
			stride = len(b)
		}
		off += stride
	}
	return n, nil
}

// controlError is a malformed control message: where and why.
type controlError struct {
	off    int
	reason string
}

func malformed(off int, reason string) error { return &controlError{off: off, reason: reason} }

func (e *controlError) Error() string {
	return "devmem: malformed control message at offset " + strconv.Itoa(e.off) + ": " + e.reason
}

func (e *controlError) Unwrap() error { return ErrMalformedControl }
