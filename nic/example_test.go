package nic_test

import (
	"errors"
	"fmt"
	"log"
	"net/netip"

	"github.com/devmem-go/devmem/nic"
)

// A devmem server prepares the NIC with a Setup and undoes it afterwards;
// another server on another queue of the same NIC keeps its own rule, RSS
// and header split meanwhile. It needs CAP_NET_ADMIN.
func ExampleSetup() {
	n, err := nic.Open("eth1")
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	ch, err := n.Channels()
	if err != nil {
		log.Fatal(err)
	}
	queue := ch.RXQueues() - 1 // the last RX queue for devmem

	s, err := nic.NewSetup(n, nil) // first undoes what crashed runs left
	if err != nil {
		log.Fatal(err)
	}
	// Runs after the binding's Close: header split cannot go off under a
	// bound queue.
	defer func() {
		if err := s.Undo(); err != nil {
			log.Print(err)
		}
	}()
	if err := s.EnableHeaderSplit(); err != nil {
		log.Fatal(err)
	}
	if err := s.SteerRSSAway(queue); err != nil {
		log.Fatal(err)
	}
	loc, err := s.AddFlowRule(nic.FlowRule{
		Type: nic.FlowTCP6, Dst: netip.MustParseAddr("2001:db8::1"), DstPort: 5201, Queue: queue,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("flow rule %d steers port 5201 to queue %d of %s\n", loc, queue, n.Name())
	// ... devmem.BindRX(n.Index(), buf, []int{queue}, nil), receive, Close.
}

// After a crash (SIGKILL, power loss of a container), the changes are in
// the journals; Recover undoes those of processes that are gone.
func ExampleRecover() {
	undone, err := nic.Recover(nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("undid the NIC changes of %d crashed run(s)\n", undone)
}

// A NIC counts its RX queues as ncdevmem does: RX-only plus combined
// channels.
func ExampleChannels_RXQueues() {
	ch := nic.Channels{RX: 0, TX: 0, Combined: 8, MaxCombined: 16}
	fmt.Println(ch.RXQueues())
	// Output: 8
}

// A driver without a feature answers with an error that matches
// errors.ErrUnsupported.
func ExampleNIC_RSSIndirection() {
	n, err := nic.Open("eth1")
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	table, err := n.RSSIndirection()
	if errors.Is(err, errors.ErrUnsupported) {
		fmt.Println("no RSS on", n.Name())
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bucket -> queue:", table)
}
