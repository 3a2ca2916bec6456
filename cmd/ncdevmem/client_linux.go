package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/devmem-go/devmem"
)

// slotSize is the piece of the TX dma-buf one stdin read fills. The buffer
// is used as a ring of slots; a slot is rewritten only after the kernel
// reported its previous send complete.
const slotSize = 1 << 20

// runClient is ncdevmem's do_client: bind a udmabuf for TX, connect through
// the interface, and send stdin from the udmabuf with MSG_ZEROCOPY.
// ncdevmem sends line by line and waits for each completion; this sends
// what each read of stdin returns (the same bytes on the wire) and keeps
// several sends in flight.
func runClient(ctx context.Context, env *runEnv) (err error) {
	o, sum := env.opts, env.sum
	undo := &undoStack{log: env.stderr}
	defer func() { err = errors.Join(err, undo.run()) }()

	ifc, err := net.InterfaceByName(o.IfName)
	if err != nil {
		return setupf("interface %s: %w", o.IfName, err)
	}
	buf, err := newBuffer(o)
	if err != nil {
		return err
	}
	defer buf.Close()
	binding, err := devmem.BindTX(ifc.Index, buf)
	if err != nil {
		return setupf("bind-tx on %s: %w", o.IfName, err)
	}
	undo.push("TX binding", binding.Close)
	sum.DMABuf = binding.ID()
	env.logf("bound TX dma-buf id %d", binding.ID())

	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		if err := reuseAddr(c); err != nil {
			return err
		}
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, o.IfName)
		})
		if serr != nil {
			return fmt.Errorf("SO_BINDTODEVICE %s: %w", o.IfName, serr)
		}
		return err
	}}
	if o.ClientIP.IsValid() {
		d.LocalAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(o.ClientIP, o.Port))
	}
	server := netip.AddrPortFrom(o.ServerIP, o.Port)
	env.logf("connecting to %s via %s", server, o.IfName)
	c, err := d.DialContext(ctx, "tcp", server.String())
	if err != nil {
		if ctx.Err() != nil {
			return interrupted(ctx)
		}
		return setupf("connect: %w", err)
	}
	conn := c.(*net.TCPConn)
	defer conn.Close()
	sender, err := devmem.NewSender(conn, binding, &devmem.SenderConfig{ChunkSize: o.TXChunk})
	if err != nil {
		return setupf("sender: %w", err)
	}
	defer sender.Close()

	if err := sendStream(ctx, env, buf, sender); err != nil {
		return err
	}
	// The last sends must complete before the buffer goes away.
	if err := sender.Flush(ctx); err != nil {
		if ctx.Err() != nil {
			return interrupted(ctx)
		}
		return dataf("waiting for zerocopy completions: %w", err)
	}
	sum.Completions = sum.Sends
	if err := conn.CloseWrite(); err != nil {
		return dataf("shutdown: %w", err)
	}
	env.logf("tx ok")
	return nil
}

// sendStream copies stdin into the ring of slots and sends each slot.
func sendStream(ctx context.Context, env *runEnv, buf *devmem.DMABuf, sender *devmem.Sender) error {
	sum := env.sum
	slot := min(int64(slotSize), buf.Size())
	slots := int(buf.Size() / slot)
	pending := make([]*uint32, slots) // the send that last used each slot
	chunks := readChunks(ctx, env.stdin, int(slot))
	began := time.Now()
	var sentBytes, sends atomic.Uint64 // shared with the progress line
	stopProgress := func() {}
	if env.progress {
		stopProgress = startProgress(env.stderr, func() string {
			return progressLine(sentBytes.Load(), time.Since(began), sends.Load(), sender.Pending())
		})
	}
	defer stopProgress()
	for i := 0; ; i = (i + 1) % slots {
		var ch chunk
		select {
		case <-ctx.Done():
			return interrupted(ctx)
		case ch = <-chunks:
		}
		if ch.err == io.EOF {
			return nil
		}
		if ch.err != nil {
			return dataf("reading stdin: %w", ch.err)
		}
		off := int64(i) * slot
		if seq := pending[i]; seq != nil {
			if err := sender.WaitComplete(ctx, *seq); err != nil {
				if ctx.Err() != nil {
					return interrupted(ctx)
				}
				return dataf("waiting for zerocopy completion: %w", err)
			}
			sum.Completions++
		}
		if _, err := buf.WriteAt(ch.data, off); err != nil {
			return dataf("copying into the dma-buf: %w", err)
		}
		seq, err := sender.SendContext(ctx, off, int64(len(ch.data)))
		if err != nil {
			if ctx.Err() != nil {
				return interrupted(ctx)
			}
			return dataf("send: %w", err)
		}
		pending[i] = &seq
		sum.Sends++
		sum.Bytes += uint64(len(ch.data))
		sends.Store(sum.Sends)
		sentBytes.Store(sum.Bytes)
	}
}

type chunk struct {
	data []byte
	err  error
}

// readChunks reads r in a goroutine, so that a blocked read of stdin does
// not keep a signal from ending the program.
func readChunks(ctx context.Context, r io.Reader, size int) <-chan chunk {
	out := make(chan chunk, 2)
	go func() {
		for {
			b := make([]byte, size)
			n, err := r.Read(b)
			if n > 0 {
				select {
				case out <- chunk{data: b[:n]}:
				case <-ctx.Done():
					return
				}
			}
			if err != nil {
				select {
				case out <- chunk{err: err}:
				case <-ctx.Done():
				}
				return
			}
		}
	}()
	return out
}
