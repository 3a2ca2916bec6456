package devmem_test

import (
	"encoding/binary"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/devmem-go/devmem"
)

// cmsg builds one control message as recvmsg returns it: struct cmsghdr
// (cmsg_len, cmsg_level, cmsg_type) and the payload, padded.
func cmsg(typ int32, payload []byte) []byte {
	b := make([]byte, unix.CmsgSpace(len(payload)))
	if unix.SizeofPtr == 8 {
		binary.NativeEndian.PutUint64(b, uint64(unix.CmsgLen(len(payload))))
	} else {
		binary.NativeEndian.PutUint32(b, uint32(unix.CmsgLen(len(payload))))
	}
	binary.NativeEndian.PutUint32(b[unix.SizeofPtr:], uint32(unix.SOL_SOCKET))
	binary.NativeEndian.PutUint32(b[unix.SizeofPtr+4:], uint32(typ))
	copy(b[unix.CmsgLen(0):], payload)
	return b
}

// dmabufCmsg is struct dmabuf_cmsg: frag_offset, frag_size, frag_token,
// dmabuf_id, flags.
func dmabufCmsg(off uint64, size, token, id uint32) []byte {
	b := binary.NativeEndian.AppendUint64(nil, off)
	b = binary.NativeEndian.AppendUint32(b, size)
	b = binary.NativeEndian.AppendUint32(b, token)
	b = binary.NativeEndian.AppendUint32(b, id)
	return binary.NativeEndian.AppendUint32(b, 0)
}

// ParseControl turns the control data of a devmem recvmsg into frags, in
// stream order: here 66 linear bytes (headers the NIC did not split off)
// and two pieces of payload in dma-buf 7.
func ExampleParseControl_crafted() {
	var oob []byte
	oob = append(oob, cmsg(unix.SCM_DEVMEM_LINEAR, dmabufCmsg(0, 66, 0, 0))...)
	oob = append(oob, cmsg(unix.SCM_DEVMEM_DMABUF, dmabufCmsg(8192, 4096, 1, 7))...)
	oob = append(oob, cmsg(unix.SCM_DEVMEM_DMABUF, dmabufCmsg(12288, 1000, 2, 7))...)

	frags := make([]devmem.Frag, devmem.MaxFrags(len(oob)))
	n, err := devmem.ParseControl(oob, frags)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range frags[:n] {
		switch f.Kind {
		case devmem.FragLinear:
			fmt.Printf("%v: %d bytes at offset %d of the receive buffer\n", f.Kind, f.Size, f.Offset)
		case devmem.FragDMABuf:
			fmt.Printf("%v %d: %d bytes at offset %d, token %d\n", f.Kind, f.DMABufID, f.Size, f.Offset, f.Token)
		}
	}
	// Output:
	// linear: 66 bytes at offset 0 of the receive buffer
	// dmabuf 7: 4096 bytes at offset 8192, token 1
	// dmabuf 7: 1000 bytes at offset 12288, token 2
}
