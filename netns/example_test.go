package netns_test

import (
	"context"
	"fmt"
	"log"
	"net"

	"github.com/devmem-go/devmem/netns"
)

// Look at a container's network without moving the process: the function
// runs on a thread that joined the netns, and every other goroutine stays
// where it was.
func ExampleHandle_Do() {
	pod, err := netns.FromName("pod") // /run/netns/pod
	if err != nil {
		log.Fatal(err)
	}
	defer pod.Close()
	err = pod.Do(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			fmt.Println(i.Name)
		}
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
}

// A listener made in a netns stays there; Accept may run on any
// goroutine.
func ExampleHandle_Listen() {
	pod, err := netns.FromPid(4242) // a process of the container
	if err != nil {
		log.Fatal(err)
	}
	defer pod.Close()
	ln, err := pod.Listen(context.Background(), "tcp", "[::]:8080")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// The netnsid by which one namespace knows another: what a devmem queue
// lease (devmem.Lease.NetnsID) asks for.
func ExampleHandle_PeerID() {
	pod, err := netns.FromName("pod")
	if err != nil {
		log.Fatal(err)
	}
	defer pod.Close()
	host, err := netns.Current()
	if err != nil {
		log.Fatal(err)
	}
	defer host.Close()
	id, err := pod.PeerID(host) // assigned now if the pod had none for the host
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("the pod knows the host's netns as", id)
}
