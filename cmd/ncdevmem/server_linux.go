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

// runServer is ncdevmem's do_server: configure the NIC, bind a udmabuf to
// the RX queues, accept one connection and receive it into the udmabuf,
// validating or printing the payload, until the peer closes.
func runServer(ctx context.Context, env *runEnv) (err error) {
	o := env.opts
	undo := &undoStack{log: env.stderr}
	defer func() { err = errors.Join(err, undo.run()) }()

	nic, rxQueues, err := openNIC(o)
	if err != nil {
		return err
	}
	// The handle is needed until the undo stack restored the NIC.
	undo.push("NIC handle", nic.Close)
	start, count, err := resolveQueues(o, rxQueues)
	if err != nil {
		return err
	}
	queues := queueList(start, count)
	env.sum.Queues = queues
	env.logf("using %s of %s (%s)", describeQueues(queues), o.IfName, describeRXQueues(rxQueues))

	// -n: no NIC configuration at all (not even recovering crashed runs):
	// the caller did it, as the kernel's netkit tests do.
	if !o.NoConfig {
		setup, err := newSetup(nic, undo)
		if err != nil {
			return err
		}
		if err := enableHeaderSplit(setup); err != nil {
			return err
		}
		if err := steerRSSAway(setup, start); err != nil {
			return err
		}
		if err := addFlowRule(env, setup, o.ServerIP, o.ClientIP, o.Port, start); err != nil {
			return err
		}
	}

	buf, err := newBuffer(o)
	if err != nil {
		return err
	}
	defer buf.Close()
	var bindOpts *devmem.BindRXOptions
	if o.RXPageSize != 0 {
		bindOpts = &devmem.BindRXOptions{RXPageSize: o.RXPageSize}
	}
	binding, err := devmem.BindRX(nic.Index(), buf, queues, bindOpts)
	if err != nil {
		return setupf("bind-rx of %s to %s: %w", humanBytes(uint64(buf.Size())), describeQueues(queues), err)
	}
	undo.push("binding", binding.Close)
	env.sum.DMABuf = binding.ID()
	env.logf("bound dma-buf id %d", binding.ID())
	mem, err := buf.Map()
	if err != nil {
		return setupf("mapping the udmabuf: %w", err)
	}

	ln, err := listen(ctx, o.ServerIP, o.Port)
	if err != nil {
		return err
	}
	env.logf("waiting for a connection on %s", ln.Addr())
	conn, err := accept(ctx, ln)
	ln.Close()
	if err != nil {
		return err
	}
	defer conn.Close()
	env.logf("got connection from %s", conn.RemoteAddr())
	return receive(ctx, env, conn, binding, buf, mem)
}

// newBuffer makes the udmabuf: ncdevmem's 16000 pages by default, of 2 MiB
// huge pages when rx-page-size asks for more than a page.
func newBuffer(o *options) (*devmem.DMABuf, error) {
	var cfg devmem.UDMABufConfig
	cfg.Name = "ncdevmem"
	if int64(o.RXPageSize) > int64(pageSize) {
		cfg.HugePageSize = 2 << 20
	}
	buf, err := devmem.NewUDMABuf(o.BufSize, &cfg)
	if err != nil {
		return nil, setupf("udmabuf of %s: %w", humanBytes(uint64(o.BufSize)), err)
	}
	return buf, nil
}

// socketControl sets what ncdevmem's enable_reuseaddr sets.
func reuseAddr(c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); serr != nil {
			serr = fmt.Errorf("SO_REUSEPORT: %w", serr)
			return
		}
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
			serr = fmt.Errorf("SO_REUSEADDR: %w", serr)
		}
	})
	return errors.Join(err, serr)
}

func listen(ctx context.Context, addr netip.Addr, port uint16) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error { return reuseAddr(c) }}
	ln, err := lc.Listen(ctx, "tcp", netip.AddrPortFrom(addr, port).String())
	if err != nil {
		return nil, setupf("listen: %w", err)
	}
	return ln, nil
}

// accept waits for one connection, giving up when ctx is done.
func accept(ctx context.Context, ln net.Listener) (*net.TCPConn, error) {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	c, err := ln.Accept()
	if err != nil {
		if ctx.Err() != nil {
			return nil, interrupted(ctx)
		}
		return nil, setupf("accept: %w", err)
	}
	return c.(*net.TCPConn), nil
}

func interrupted(ctx context.Context) error {
	return dataf("interrupted (%v)", context.Cause(ctx))
}

// rxStats are the receive counters, atomic for the progress line.
type rxStats struct {
	bytes, frags atomic.Uint64
}

// receive is ncdevmem's receive loop over a devmem Receiver: check every
// control message, validate or print the payload where it landed, return the
// tokens in batches.
func receive(ctx context.Context, env *runEnv, conn *net.TCPConn, binding *devmem.Binding, buf *devmem.DMABuf, mem []byte) (err error) {
	o, sum := env.opts, env.sum
	id := binding.ID()
	// Tokens go back in batches (the receiver's ReleaseBatch: a quarter of
	// the dma-buf's buffers, at most 1024), and before it blocks with half
	// of them out, so held tokens never starve the queue. One connection,
	// one busy thread: it waits for data in poll(2) like the C tool waits
	// in recvmsg (BlockThread), not through the runtime's poller.
	rx, err := devmem.NewReceiver(conn, binding, &devmem.ReceiverConfig{BlockThread: true})
	if err != nil {
		return setupf("receiver: %w", err)
	}

	var stats rxStats
	began := time.Now()
	stopProgress := func() {}
	if env.progress {
		stopProgress = startProgress(env.stderr, func() string {
			return progressLine(stats.bytes.Load(), time.Since(began), stats.frags.Load(), rx.Outstanding())
		})
	}
	var check *validator
	if o.Validate != 0 {
		check = newValidator(o.Validate)
		sum.Validation = "incomplete"
	}
	printPayload := check == nil && !o.JSON
	defer func() {
		stopProgress()
		err = errors.Join(err, rx.Flush(), rx.Close())
		st := rx.Stats()
		sum.RecvCalls, sum.DontneedCalls, sum.TokensReleased = st.RecvCalls, st.DontneedCalls, st.TokensFreed
		if check != nil {
			sum.Mismatches = check.mismatches
			switch {
			case check.failed():
				sum.Validation = "failed"
			case err == nil:
				sum.Validation = "passed"
			}
		}
	}()

	for {
		msg, rerr := rx.RecvContext(ctx)
		if msg.N > 0 {
			perr := consume(env, &msg, id, mem, buf, check, printPayload, &stats)
			// Whatever happened, the tokens go back (Recv hands out
			// frags even with an error).
			if derr := rx.Done(msg.Frags); derr != nil {
				perr = errors.Join(perr, dataf("returning tokens: %w", derr))
			}
			if perr != nil {
				return perr
			}
		}
		switch {
		case rerr == nil:
			continue
		case errors.Is(rerr, io.EOF):
			env.logf("client exited")
			return nil
		case ctx.Err() != nil:
			return interrupted(ctx)
		case errors.Is(rerr, devmem.ErrForeignDMABuf):
			return dataf("flow steering error: %w", rerr)
		case errors.Is(rerr, syscall.EFAULT):
			return dataf("%w (data not in device memory? won't recover)", rerr)
		default:
			return dataf("%w", rerr)
		}
	}
}

// consume checks and uses the payload of one Recv.
func consume(env *runEnv, msg *devmem.Message, id uint32, mem []byte, buf *devmem.DMABuf, check *validator, printPayload bool, stats *rxStats) error {
	sum := env.sum
	if msg.Readable {
		return dataf("flow steering error: %d bytes arrived in host memory, not in the dma-buf (no devmem control message)", msg.N)
	}
	if err := buf.BeginCPUAccess(devmem.SyncRead); err != nil {
		return dataf("dma-buf sync start: %w", err)
	}
	err := consumeFrags(env, msg, id, mem, check, printPayload, stats)
	if eerr := buf.EndCPUAccess(devmem.SyncRead); eerr != nil && err == nil {
		err = dataf("dma-buf sync end: %w", eerr)
	}
	sum.Bytes = stats.bytes.Load()
	sum.Frags = stats.frags.Load()
	return err
}

func consumeFrags(env *runEnv, msg *devmem.Message, id uint32, mem []byte, check *validator, printPayload bool, stats *rxStats) error {
	o, sum := env.opts, env.sum
	for _, f := range msg.Frags {
		var payload []byte
		switch f.Kind {
		case devmem.FragLinear:
			sum.LinearBytes += uint64(f.Size)
			sum.LinearFrags++
			if o.FailOnLinear {
				return dataf("received %d linear bytes (SCM_DEVMEM_LINEAR) but --fail-on-linear (-L) is set: the NIC did not split the headers off", f.Size)
			}
			payload = msg.Linear[f.Offset : f.Offset+uint64(f.Size)]
		case devmem.FragDMABuf:
			if f.DMABufID != id {
				return dataf("flow steering error: frag of dma-buf id %d, ours is %d", f.DMABufID, id)
			}
			end := f.Offset + uint64(f.Size)
			if end > uint64(len(mem)) || end < f.Offset {
				return dataf("frag [%d, %d) lies outside the %d-byte dma-buf", f.Offset, end, len(mem))
			}
			payload = mem[f.Offset:end]
			stats.frags.Add(1)
			if f.Size%uint32(pageSize) == 0 {
				sum.PageAlignedFrags++
			}
		default:
			continue
		}
		if check != nil {
			before := check.mismatches
			verr := check.check(payload)
			for _, m := range check.first[min(before, len(check.first)):] {
				env.logf("validation: expected=%d, actual=%d, stream offset=%d", m.Expected, m.Actual, m.Offset)
			}
			if verr != nil {
				stats.bytes.Add(uint64(len(payload)))
				return verr
			}
		} else if printPayload {
			env.stdout.Write(payload)
		}
		stats.bytes.Add(uint64(len(payload)))
	}
	return nil
}
