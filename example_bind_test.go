package devmem_test

import (
	"fmt"
	"log"
	"net/netip"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/nic"
)

// This example prepares a NIC the way ncdevmem does (with package nic),
// binds a dma-buf to its last RX queue and undoes its NIC changes
// afterwards. It needs CAP_NET_ADMIN and a devmem-capable NIC.
func ExampleBindRX() {
	// buf comes from devmem.NewUDMABuf or a GPU exporter.
	var buf *devmem.DMABuf

	n, err := nic.Open("eth1")
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	ch, err := n.Channels()
	if err != nil {
		log.Fatal(err)
	}
	queue := ch.RXQueues() - 1 // keep the last RX queue for devmem

	s, err := nic.NewSetup(n, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer func() {
		if err := s.Undo(); err != nil {
			log.Print(err)
		}
	}()
	// Header split on and hds-thresh 0, RSS away from the devmem queue,
	// and a flow rule steering the flow to it.
	if err := s.EnableHeaderSplit(); err != nil {
		log.Fatal(err)
	}
	if err := s.SteerRSSAway(queue); err != nil {
		log.Fatal(err)
	}
	if _, err := s.AddFlowRule(nic.FlowRule{
		Type:    nic.FlowTCP6,
		Dst:     netip.MustParseAddr("2001:db8::1"),
		DstPort: 5201,
		Queue:   queue,
	}); err != nil {
		log.Fatal(err)
	}

	b, err := devmem.BindRX(n.Index(), buf, []int{queue}, nil)
	if err != nil {
		// For example "devmem: bind-rx: invalid argument: tcp-data-split
		// is disabled"; errors.Is(err, unix.EINVAL) holds.
		log.Fatal(err)
	}
	// Unbind before Undo (deferred calls run last first): the kernel
	// keeps header split on while a queue is bound.
	defer b.Close()

	fmt.Printf("dma-buf bound as id %d to queue %d of %s\n", b.ID(), queue, n.Name())
	// ... accept a connection and receive with a devmem.Receiver.
}

// BindTX needs no privilege; the binding id goes into SCM_DEVMEM_DMABUF.
func ExampleBindTX() {
	var buf *devmem.DMABuf // from devmem.NewUDMABuf or a GPU exporter
	b, err := devmem.BindTX(3, buf)
	if err != nil {
		log.Fatal(err)
	}
	defer b.Close()
	fmt.Println("tx binding", b.ID())
}

func ExampleNetdev_Queues() {
	n, err := devmem.DialNetdev()
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	qs, err := n.Queues(3)
	if err != nil {
		log.Fatal(err)
	}
	for _, q := range qs {
		if q.DMABuf != 0 {
			fmt.Printf("%v queue %d: dma-buf binding %d\n", q.Type, q.ID, q.DMABuf)
		}
	}
}
