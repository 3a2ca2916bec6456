//go:build linux && (mips || mipsle || mips64 || mips64le || ppc || ppc64 || ppc64le || sparc64)

package devmem

// ioctl numbers on mips, powerpc and sparc (arch/*/include/uapi/asm/ioctl.h):
// three direction bits, so _IOW sets bit 31 and the size has 13 bits.
const (
	_UDMABUF_CREATE     = 0x80187542 // _IOW('u', 0x42, struct udmabuf_create)
	_DMA_BUF_IOCTL_SYNC = 0x80086200 // _IOW('b', 0, struct dma_buf_sync)
	_DMA_BUF_SET_NAME_A = 0x80046201 // _IOW('b', 1, __u32)
	_DMA_BUF_SET_NAME_B = 0x80086201 // _IOW('b', 1, __u64)
)
