package devmem_test

import (
	"context"
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
		binding *devmem.Binding // from BindRX, for the steered queue
		mem     []byte          // the dma-buf's mapping (DMABuf.Map)
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

	r, err := devmem.NewReceiver(c.(*net.TCPConn), binding, nil)
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
				if f.DMABufID == binding.ID() {
					consume(mem[f.Offset : f.Offset+uint64(f.Size)])
				}
			}
		}
		// Frags come back even with an error (ErrForeignDMABuf, for
		// example): release them all, then deal with the error. Done
		// returns the tokens in batches (Release would return them now).
		if rerr := r.Done(msg.Frags); rerr != nil {
			log.Print(rerr)
		}
		if errors.Is(err, devmem.ErrForeignDMABuf) {
			log.Print(err)
		} else if err != nil {
			log.Fatal(err)
		}
	}
}

// Consume on other goroutines: RecvInto fills a Message the caller owns,
// so it can travel; each consumer hands its frags back with Done, which
// refuses frags released twice or taken from another Receiver.
func ExampleReceiver_RecvInto() {
	var (
		conn    *net.TCPConn    // accepted, steered to a bound RX queue
		binding *devmem.Binding // from BindRX
	)
	r, err := devmem.NewReceiver(conn, binding, &devmem.ReceiverConfig{MaxOutstanding: 2048})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	free := make(chan *devmem.Message, 4)
	for range cap(free) {
		free <- new(devmem.Message)
	}
	work := make(chan *devmem.Message)
	go func() {
		for m := range work {
			// ... consume m.Frags where they landed ...
			if err := r.Done(m.Frags); err != nil {
				log.Print(err)
			}
			free <- m
		}
	}()
	defer close(work)
	for {
		m := <-free
		err := r.RecvInto(context.Background(), m)
		if len(m.Frags) > 0 {
			work <- m
		} else {
			free <- m
		}
		if err == io.EOF {
			log.Printf("%+v", r.Stats())
			return
		}
		if err != nil {
			log.Print(err)
			return
		}
	}
}

// Return the tokens of frags received by other means (ParseControl): one
// TokenReleaser call coalesces them into ranges and makes as few
// SO_DEVMEM_DONTNEED calls as the kernel's limits allow.
func ExampleTokenReleaser() {
	var conn *net.TCPConn // receiving devmem data through recvmsg of its own
	rel, err := devmem.NewTokenReleaser(conn)
	if err != nil {
		log.Fatal(err)
	}
	var tokens []uint32 // of consumed FragDMABuf frags
	freed, err := rel.ReleaseTokens(tokens)
	if err != nil {
		log.Print(err)
	}
	log.Printf("%d of %d tokens freed", freed, len(tokens))
}

// Parsing control data from a recvmsg made by other means.
func ExampleParseControl() {
	var (
		control []byte // the control buffer given to recvmsg(MSG_SOCK_DEVMEM)
		n       int    // the msg_controllen it returned
	)
	// MaxFrags of the buffer's size bounds what one call can report.
	frags := make([]devmem.Frag, devmem.MaxFrags(len(control)))
	n, err := devmem.ParseControl(control[:n], frags)
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range frags[:n] {
		log.Printf("%v frag: %d bytes at %d, token %d", f.Kind, f.Size, f.Offset, f.Token)
	}
}
