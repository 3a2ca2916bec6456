package devmem_test

import (
	"context"
	"log"
	"net"
	"syscall"
	"time"

	"github.com/devmem-go/devmem"
	"golang.org/x/sys/unix"
)

// Send a message out of device memory: bind a dma-buf for transmit, write
// the payload into it, send the range, and wait until the NIC has read it
// before the range is reused.
func ExampleSender() {
	const ifname = "eth0"
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		log.Fatal(err)
	}

	// A udmabuf stands in for GPU memory here.
	buf, err := devmem.NewUDMABuf(4<<20, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer buf.Close()

	binding, err := devmem.BindTX(ifi.Index, buf)
	if err != nil {
		log.Fatal(err)
	}
	defer binding.Close()

	// The kernel refuses devmem sends routed through another device, so
	// bind the socket to it (SO_BINDTODEVICE) before it connects.
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) { err = unix.BindToDevice(int(fd), ifname) }); cerr != nil {
			return cerr
		}
		return err
	}}
	conn, err := d.Dial("tcp", "192.0.2.1:5201")
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()

	s, err := devmem.NewSender(conn.(*net.TCPConn), binding, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	msg := []byte("hello\nworld\n")
	if _, err := buf.WriteAt(msg, 0); err != nil {
		log.Fatal(err)
	}
	seq, err := s.Send(0, int64(len(msg)))
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitComplete(ctx, seq); err != nil {
		log.Fatal(err)
	}
	// Bytes [0, len(msg)) of buf may be rewritten now.
}

// Pipeline sends through a ring of slots, reusing a slot only after the send
// that last used it has completed.
func ExampleSender_Completions() {
	var (
		buf     *devmem.DMABuf // bound with devmem.BindTX
		s       *devmem.Sender // from devmem.NewSender
		produce func(slot []byte)
	)
	const slotSize = 1 << 20
	slots := int(buf.Size() / slotSize)
	busy := make(map[uint32]int) // send seq -> slot
	free := make([]int, 0, slots)
	for i := range slots {
		free = append(free, i)
	}
	ctx := context.Background()
	var done []devmem.Completion
	slot := make([]byte, slotSize)
	for range 100 {
		for len(free) == 0 {
			var err error
			done, err = s.Completions(ctx, done[:0])
			if err != nil {
				log.Fatal(err)
			}
			for _, c := range done {
				free = append(free, busy[c.Seq])
				delete(busy, c.Seq)
			}
		}
		i := free[len(free)-1]
		free = free[:len(free)-1]
		produce(slot)
		if _, err := buf.WriteAt(slot, int64(i)*slotSize); err != nil {
			log.Fatal(err)
		}
		seq, err := s.Send(int64(i)*slotSize, slotSize)
		if err != nil {
			log.Fatal(err)
		}
		busy[seq] = i
	}
	if err := s.Flush(ctx); err != nil {
		log.Fatal(err)
	}
}
