package devmem_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/netip"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/netns"
	"github.com/devmem-go/devmem/nic"
)

// Devmem TCP inside a pod: the host leases an RX queue of its NIC to the
// pod's netkit device, and a receiver in the pod's netns binds a dma-buf
// to that queue and validates every payload byte where the NIC wrote it.
//
// The host part needs CAP_NET_ADMIN in the initial user namespace (a CNI
// plugin, say); the pod part only CAP_NET_ADMIN over the pod's netns, so it
// also works as root of a rootless pod's user namespace (run it in a
// process of that namespace, such as one started by nsenter --user --net:
// a Go process cannot enter a user namespace by itself).
func ExampleNetdev_LeaseRXQueue() {
	const (
		physName  = "eth0"     // the host's NIC, in the init netns
		physQueue = 3          // the queue the pod gets
		guestName = "nk_guest" // netkit peer, inside the pod
	)
	podAddr := netip.MustParseAddr("2001:db8:2::2")

	pod, err := netns.FromName("pod") // /run/netns/pod
	if err != nil {
		log.Fatal(err)
	}
	defer pod.Close()
	host, err := netns.Current()
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close()

	// Host: prepare the NIC as for any devmem receiver (header split, RSS
	// away from the queue, the pod's flow steered to it); Undo reverts
	// exactly these changes once the pod is done.
	n, err := nic.Open(physName)
	if err != nil {
		log.Fatal(err)
	}
	defer n.Close()
	setup, err := nic.NewSetup(n, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer setup.Undo()
	if err := setup.EnableHeaderSplit(); err != nil {
		log.Fatal(err)
	}
	if err := setup.SteerRSSAway(physQueue); err != nil {
		log.Fatal(err)
	}
	if _, err := setup.AddFlowRule(nic.FlowRule{Type: nic.FlowTCP6, Dst: podAddr, DstPort: 5201, Queue: physQueue}); err != nil {
		log.Fatal(err)
	}

	// Host: lease the queue. queue-create names the virtual device in the
	// netns of the socket, so the netdev socket is opened in the pod; the
	// physical device is named by its netns as the pod knows it.
	hostID, err := pod.PeerID(host)
	if err != nil {
		log.Fatal(err)
	}
	var guestIfindex, guestQueue int
	err = pod.Do(func() error {
		guest, err := net.InterfaceByName(guestName)
		if err != nil {
			return err
		}
		guestIfindex = guest.Index
		nd, err := devmem.DialNetdev()
		if err != nil {
			return err
		}
		defer nd.Close()
		guestQueue, err = nd.LeaseRXQueue(guestIfindex, devmem.Lease{
			Ifindex: n.Index(),
			Queue:   physQueue,
			NetnsID: hostID,
		})
		return err // an *devmem.Error with the kernel's errno and message
	})
	if err != nil {
		log.Fatal(err)
	}

	// Pod: bind a dma-buf to the leased queue (nk_guest's queue guestQueue)
	// and listen on the pod's address. Both sockets stay in the pod's
	// netns; they are used below from the ordinary goroutine.
	buf, err := devmem.NewUDMABuf(32<<20, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Close()
	mem, err := buf.Map()
	if err != nil {
		log.Fatal(err)
	}
	var binding *devmem.Binding
	if err := pod.Do(func() error {
		binding, err = devmem.BindRX(guestIfindex, buf, []int{guestQueue}, nil)
		return err
	}); err != nil {
		log.Fatal(err)
	}
	defer binding.Close()
	ln, err := pod.Listen(context.Background(), "tcp6", net.JoinHostPort(podAddr.String(), "5201"))
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	// Pod: receive, check each payload byte in place, return the tokens.
	r, err := devmem.NewReceiver(c.(*net.TCPConn), binding, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	var pos int64
	for {
		msg, err := r.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && len(msg.Frags) == 0 {
			log.Fatal(err)
		}
		if err := buf.BeginCPUAccess(devmem.SyncRead); err != nil {
			log.Fatal(err)
		}
		for _, f := range msg.Frags {
			var got []byte
			switch f.Kind {
			case devmem.FragDMABuf:
				got = mem[f.Offset : f.Offset+uint64(f.Size)]
			case devmem.FragLinear:
				got = msg.Linear[f.Offset : f.Offset+uint64(f.Size)]
			}
			for i, b := range got {
				if want := byte(pos + int64(i)); b != want { // the sender's pattern
					log.Fatalf("stream byte %d: got %#x, want %#x", pos+int64(i), b, want)
				}
			}
			pos += int64(f.Size)
		}
		if err := buf.EndCPUAccess(devmem.SyncRead); err != nil {
			log.Fatal(err)
		}
		if _, rerr := r.Release(msg.Frags); rerr != nil {
			log.Fatal(rerr)
		}
		if err != nil { // frags came with an error: released, now report it
			log.Fatal(err)
		}
	}
	log.Printf("%d bytes validated in device memory leased to the pod", pos)
}
