package devmem_test

import (
	"errors"
	"io"
	"log"
	"net"

	"github.com/devmem-go/devmem"
)

// consume stands for whatever reads the payload in place: a GPU kernel, or
// a copy out of the mmap of a udmabuf in tests.
func consume(payload []byte) {}

// The receive loop: accept a connection steered to a bound RX queue,
// receive frags, consume the payload where it landed, return the tokens.
func ExampleReceiver() {
	var (
		bindingID uint32 // Binding.ID() of the bind-rx for the steered queue
		mem       []byte // the dma-buf's mapping (DMABuf.Map)
	)
	ln, err := net.Listen("tcp", ":5201")
	if err != nil {
		log.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	r, err := devmem.NewReceiver(c.(*net.TCPConn), &devmem.ReceiverConfig{
		DMABufIDs: []uint32{bindingID},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close() // returns whatever is still outstanding

	for {
		msg, err := r.Recv()
		if err == io.EOF {
			return
		}
		if err != nil && len(msg.Frags) == 0 {
			log.Fatal(err)
		}
		if msg.Readable {
			log.Printf("%d bytes missed device memory: check flow steering", msg.N)
		}
		for _, f := range msg.Frags {
			switch f.Kind {
			case devmem.FragLinear:
				consume(msg.Linear[f.Offset : f.Offset+uint64(f.Size)])
			case devmem.FragDMABuf:
				if f.DMABufID == bindingID {
					consume(mem[f.Offset : f.Offset+uint64(f.Size)])
				}
			}
		}
		// Frags come back even with an error (ErrForeignDMABuf, for
		// example): release them all, then deal with the error.
		if _, rerr := r.Release(msg.Frags); rerr != nil {
			log.Print(rerr)
		}
		if errors.Is(err, devmem.ErrForeignDMABuf) {
			log.Print(err)
		} else if err != nil {
			log.Fatal(err)
		}
	}
}

// Return tokens in batches of up to 1024 per system call.
func ExampleTokenBatcher() {
	var conn *net.TCPConn // accepted, steered to a bound RX queue
	r, err := devmem.NewReceiver(conn, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	b := devmem.NewTokenBatcher(r, &devmem.TokenBatcherConfig{Threshold: 512})
	defer func() {
		if err := b.Close(); err != nil {
			log.Print(err)
		}
		log.Printf("%+v", b.Stats())
	}()
	for {
		msg, err := r.Recv()
		if err == io.EOF {
			return
		}
		// ... consume msg.Frags ...
		if err := b.Add(msg.Frags); err != nil {
			log.Print(err)
		}
		if err != nil {
			log.Print(err)
			return
		}
	}
}

// Parsing control data from a recvmsg made by other means.
func ExampleParseControl() {
	var oob []byte // msg_control[:msg_controllen] of recvmsg(MSG_SOCK_DEVMEM)
	frags := make([]devmem.Frag, devmem.MaxFrags(len(oob)))
	n, err := devmem.ParseControl(oob, frags)
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range frags[:n] {
		log.Printf("%v frag: %d bytes at %d, token %d", f.Kind, f.Size, f.Offset, f.Token)
	}
}
