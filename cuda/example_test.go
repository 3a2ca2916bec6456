package cuda_test

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"net"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/cuda"
)

// Export 64 MiB of GPU memory and bind it to RX queue 15 of eth1, as one
// would a udmabuf.
func Example() {
	dev, err := cuda.Open(0)
	if errors.Is(err, devmem.ErrNotSupported) {
		fmt.Println("no CUDA GPU here:", err)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	mem, err := dev.Alloc(64 << 20)
	if err != nil {
		log.Fatal(err)
	}
	defer mem.Free() // after the binding is gone: deferred calls run last-in first-out

	buf, err := mem.Export(0, mem.Size())
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Close()

	nic, err := net.InterfaceByName("eth1")
	if err != nil {
		log.Fatal(err)
	}
	binding, err := devmem.BindRX(nic.Index, buf, []int{15}, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer binding.Close()
	fmt.Printf("dma-buf %d bytes from %s bound as id %d\n", buf.Size(), buf.Exporter(), binding.ID())
}

// Check received frags against the bytes the peer sent. The payload lies in
// GPU memory, which the CPU cannot map, so each frag is copied out at its
// offset (plus the offset the dma-buf was exported at, 0 here).
func ExampleMemory_CopyToHost() {
	var (
		mem   *cuda.Memory  // exported with mem.Export(0, mem.Size()) and bound with BindRX
		frags []devmem.Frag // from a devmem receive, in stream order
		sent  []byte        // what the peer sent
	)
	const exportOffset = 0
	var stream []byte
	for _, frag := range frags {
		if frag.Kind != devmem.FragDMABuf {
			continue // linear bytes are in the receive buffer instead
		}
		piece := make([]byte, frag.Size)
		if err := mem.CopyToHost(piece, exportOffset+int64(frag.Offset)); err != nil {
			log.Fatal(err)
		}
		stream = append(stream, piece...)
	}
	fmt.Println("payload matches:", bytes.Equal(stream, sent[:len(stream)]))
}
