package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/devmem-go/devmem"
	nicpkg "github.com/devmem-go/devmem/nic"
)

// runProbe is ncdevmem's run_devmem_tests: with RSS away from the devmem
// queues, check that bind-rx refuses an empty queue list and a NIC without
// header split, accepts one with it, and that the bound queues cannot be
// taken away by shrinking the channels. Each check prints PASS or FAIL; a
// FAIL is exit status 1.
func runProbe(ctx context.Context, env *runEnv) (err error) {
	o, sum := env.opts, env.sum
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
	sum.Queues = queues
	buf, err := newBuffer(o)
	if err != nil {
		return err
	}
	defer buf.Close()
	setup, err := newSetup(nic, undo)
	if err != nil {
		return err
	}
	if err := steerRSSAway(setup, start); err != nil {
		return err
	}
	if err := enableHeaderSplit(setup); err != nil {
		return err
	}

	var failed []string
	record := func(name string, pass bool, detail string) {
		sum.Checks = append(sum.Checks, checkResult{Name: name, Pass: pass, Detail: detail})
		verdict := "PASS"
		if !pass {
			verdict = "FAIL"
			failed = append(failed, name)
		}
		if !o.JSON {
			fmt.Fprintf(env.stderr, "%s: %s (%s)\n", verdict, name, detail)
		}
	}
	// mustFail records a check whose operation the kernel must refuse.
	mustFail := func(name string, b *devmem.Binding, err error) {
		if err == nil {
			b.Close()
			record(name, false, "it succeeded")
			return
		}
		record(name, true, err.Error())
	}
	bindOpts := &devmem.BindRXOptions{RXPageSize: o.RXPageSize}

	b, err := devmem.BindRX(nic.Index(), buf, nil, bindOpts)
	mustFail("bind-rx with no queues is refused", b, err)

	// ncdevmem turns header split "off" by handing the choice back to the
	// driver (ETHTOOL_TCP_DATA_SPLIT_UNKNOWN); so do we, for the same
	// verdicts.
	if err := nic.SetTCPDataSplit(nicpkg.TCPDataSplitUnknown); err != nil {
		return setupf("%s: resetting TCP header split: %w", o.IfName, err)
	}
	b, err = devmem.BindRX(nic.Index(), buf, queues, bindOpts)
	mustFail("bind-rx with header split off is refused", b, err)

	if err := enableHeaderSplit(setup); err != nil {
		return err
	}
	b, err = devmem.BindRX(nic.Index(), buf, queues, bindOpts)
	if err != nil {
		record(fmt.Sprintf("bind-rx to %s with header split on", describeQueues(queues)), false, err.Error())
	} else {
		sum.DMABuf = b.ID()
		record(fmt.Sprintf("bind-rx to %s with header split on", describeQueues(queues)), true, fmt.Sprintf("dma-buf id %d", b.ID()))
		name := fmt.Sprintf("shrinking channels to %d (dropping bound queues) is refused", count)
		if err := shrinkChannels(nic, count); err != nil {
			record(name, true, err.Error())
		} else {
			record(name, false, "it succeeded")
		}
		if err := b.Close(); err != nil {
			return setupf("unbind: %w", err)
		}
	}
	if ctx.Err() != nil {
		return interrupted(ctx)
	}
	if len(failed) > 0 {
		return dataf("%d of %d checks failed: %v", len(failed), len(sum.Checks), failed)
	}
	return nil
}

// shrinkChannels tries to set rx and tx channels to n, the way ncdevmem's
// check_changing_channels does, and puts the old counts back if the device
// let it. It returns the device's refusal.
func shrinkChannels(nic *nicpkg.NIC, n int) error {
	old, err := nic.Channels()
	if err != nil {
		return fmt.Errorf("reading channels: %w", err)
	}
	u := channelsUpdate(old, uint32(n), uint32(n))
	if err := nic.SetChannels(u); err != nil {
		return err
	}
	return restoreChannels(nic, old)
}

// channelsUpdate is check_changing_channels' request for rx and tx
// channels: combined channels where the device has them, with the rest as
// dedicated rx or tx channels.
func channelsUpdate(old *nicpkg.Channels, rx, tx uint32) nicpkg.ChannelsUpdate {
	var u nicpkg.ChannelsUpdate
	p := func(v uint32) *uint32 { return &v }
	if old.MaxCombined > 0 {
		if old.MaxRX > 0 || old.MaxTX > 0 {
			u.RX, u.TX = p(0), p(0)
		}
		switch {
		case rx == tx:
			u.Combined = p(rx)
		case rx > tx:
			u.Combined, u.RX = p(tx), p(rx-tx)
		default:
			u.Combined, u.TX = p(rx), p(tx-rx)
		}
		return u
	}
	u.RX, u.TX = p(rx), p(tx)
	return u
}

func restoreChannels(nic *nicpkg.NIC, old *nicpkg.Channels) error {
	u := nicpkg.ChannelsUpdate{Combined: &old.Combined}
	if old.MaxRX > 0 {
		u.RX = &old.RX
	}
	if old.MaxTX > 0 {
		u.TX = &old.TX
	}
	if err := nic.SetChannels(u); err != nil {
		return fmt.Errorf("the shrink succeeded and restoring the channels failed: %w", err)
	}
	return nil
}
