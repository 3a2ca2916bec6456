//go:build linux && !(amd64 || arm64 || ppc64le)

package devmem

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

func init() { parseControlNative = parseDevmemCmsgs }

// The native layout as constants. A devmem cmsg is exactly
// CMSG_SPACE(sizeof(struct dmabuf_cmsg)) long with no padding (40 bytes on
// 64-bit, 36 on 32-bit), so back-to-back devmem cmsgs sit at a fixed stride.
const (
	nativeHdrLen        = unix.SizeofPtr + 8
	nativeDevmemCmsgLen = nativeHdrLen + dmabufCmsgLen
)

// parseDevmemCmsgs is the receive path's parser where cmsg_le64_linux.go's
// word-wise one does not apply. Per cmsg it does one bounds check (the 40-byte window), loads with the native byte order and
// compares against constants, and stores the frag whole. Anything it does not
// expect (another cmsg type, a short or odd cmsg_len, a full frags slice) is
// left to the generic walk from that offset, which produces the same frags
// and the same errors as it would have from the start.
func parseDevmemCmsgs(oob []byte, frags []Frag) (int, error) {
	const (
		hdr  = nativeHdrLen
		size = nativeDevmemCmsgLen
	)
	ne := binary.NativeEndian
	n := 0
	rest := oob
	var linearOff uint64
	for n < len(frags) && len(rest) >= size {
		c := rest[:size:size]
		var cmsgLen uint64
		if unix.SizeofPtr == 8 {
			cmsgLen = ne.Uint64(c[0:8])
		} else {
			cmsgLen = uint64(ne.Uint32(c[0:4]))
		}
		if cmsgLen != size || ne.Uint32(c[hdr-8:hdr-4]) != unix.SOL_SOCKET {
			break
		}
		p := c[hdr:size]
		// Field by field: a composite literal is built on the stack and
		// copied in 16-byte moves, which stall on store forwarding.
		f := &frags[n]
		switch ne.Uint32(c[hdr-4 : hdr]) {
		case unix.SCM_DEVMEM_DMABUF:
			f.Kind = FragDMABuf
			f.Offset = ne.Uint64(p[0:8])
			f.Size = ne.Uint32(p[8:12])
			f.Token = ne.Uint32(p[12:16])
			f.DMABufID = ne.Uint32(p[16:20])
		case unix.SCM_DEVMEM_LINEAR:
			f.Kind, f.Offset, f.Token, f.DMABufID = FragLinear, linearOff, 0, 0
			f.Size = ne.Uint32(p[8:12])
			linearOff += uint64(f.Size)
		default:
			return parseControlFrom(nativeCmsgLayout, oob, len(oob)-len(rest), frags, n, linearOff)
		}
		n++
		rest = rest[size:]
	}
	if len(rest) == 0 {
		return n, nil
	}
	return parseControlFrom(nativeCmsgLayout, oob, len(oob)-len(rest), frags, n, linearOff)
}
