//go:build linux && !(mips || mipsle || mips64 || mips64le || ppc || ppc64 || ppc64le || sparc64)

package devmem

// ioctl numbers with the generic _IOC encoding (include/uapi/asm-generic/ioctl.h):
// _IOW sets direction bit 30 and the argument size in bits 16-29.
const (
	_UDMABUF_CREATE     = 0x40187542 // _IOW('u', 0x42, struct udmabuf_create)
	_DMA_BUF_IOCTL_SYNC = 0x40086200 // _IOW('b', 0, struct dma_buf_sync)
	_DMA_BUF_SET_NAME_A = 0x40046201 // _IOW('b', 1, __u32)
	_DMA_BUF_SET_NAME_B = 0x40086201 // _IOW('b', 1, __u64)
)
