//go:build linux

package main

// The NIC setup that the driver does for the receivers that do none
// themselves (tcp, fastrx, gorx): header split, RSS away from the bound
// queues, one ntuple rule per flow, and bind-rx of the shared udmabuf
// (fastrx; gorx binds it itself, the library's Receiver needs its
// *Binding). Library NIC calls live here alone.

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/nic"
	"github.com/devmem-go/devmem/selftest"
)

// udmabufSize is ncdevmem's: 16000 pages.
const udmabufSize = 16000 * 4096

type nicSetup struct {
	topo *selftest.Topology
	nic  *nic.NIC
	buf  *devmem.DMABuf
	rxQs int
	// pageSize: the geometry's rx-page-size for bind-rx, 0 for the
	// driver's default. Buffers bigger than a page need a dma-buf whose
	// chunks are that aligned: huge, the same size as buf in 2 MiB
	// hugepages, made when first needed.
	pageSize uint32
	huge     *devmem.DMABuf
}

// dmabuf is the dma-buf the jobs of the current geometry bind.
func (s *nicSetup) dmabuf() (*devmem.DMABuf, error) {
	if s.pageSize <= uint32(os.Getpagesize()) {
		return s.buf, nil
	}
	if s.huge == nil {
		const hugepage = 2 << 20
		size := int64((udmabufSize + hugepage - 1) / hugepage * hugepage)
		if err := selftest.ReserveHugepages(int(size / hugepage)); err != nil {
			return nil, err
		}
		b, err := devmem.NewUDMABuf(size, &devmem.UDMABufConfig{Name: "bench-huge", HugePageSize: hugepage})
		if err != nil {
			return nil, fmt.Errorf("udmabuf in hugepages for rx-page-size %d: %w", s.pageSize, err)
		}
		s.huge = b
	}
	return s.huge, nil
}

func openNICSetup(topo *selftest.Topology) (*nicSetup, error) {
	n, err := nic.Open(topo.IfName)
	if err != nil {
		return nil, err
	}
	ch, err := n.Channels()
	if err != nil {
		n.Close()
		return nil, err
	}
	buf, err := devmem.NewUDMABuf(udmabufSize, &devmem.UDMABufConfig{Name: "bench"})
	if err != nil {
		n.Close()
		return nil, err
	}
	return &nicSetup{topo: topo, nic: n, buf: buf, rxQs: ch.RXQueues()}, nil
}

func (s *nicSetup) Close() error {
	var huge error
	if s.huge != nil {
		huge = s.huge.Close()
	}
	return errors.Join(s.buf.Close(), huge, s.nic.Close())
}

// steered is one job's configuration and binding; undo removes them.
type steered struct {
	setup   *nic.Setup
	binding *devmem.Binding
	queues  []int
}

// steer configures the top nq queues for devmem (RSS keeps the others; all
// of them when every queue is bound, no payload flow being unsteered), adds
// a rule per flow: peer port port+i to queue i mod nq, and with bind binds
// the udmabuf to those queues.
func (s *nicSetup) steer(nq, flows, port int, bind bool) (st *steered, err error) {
	if nq < 1 || nq > s.rxQs {
		return nil, fmt.Errorf("%d queues: %s has %d", nq, s.topo.IfName, s.rxQs)
	}
	start := s.rxQs - nq
	setup, err := nic.NewSetup(s.nic, nil)
	if err != nil {
		return nil, err
	}
	st = &steered{setup: setup}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.undo(st))
		}
	}()
	for q := start; q < s.rxQs; q++ {
		st.queues = append(st.queues, q)
	}
	if err := setup.EnableHeaderSplit(); err != nil {
		return st, fmt.Errorf("header split: %w", err)
	}
	if start > 0 {
		if err := setup.SteerRSSAway(start); err != nil {
			return st, fmt.Errorf("RSS below queue %d: %w", start, err)
		}
	}
	for i := range flows {
		_, err := setup.AddFlowRule(nic.FlowRule{
			Type: nic.FlowTCP4,
			Src:  s.topo.PeerAddr4, SrcPort: uint16(port + i),
			Dst: s.topo.Addr4, DstPort: uint16(port),
			Queue: st.queues[i%nq],
		})
		if err != nil {
			return st, fmt.Errorf("flow rule %d: %w", i, err)
		}
	}
	if bind {
		var opts *devmem.BindRXOptions
		if s.pageSize != 0 {
			opts = &devmem.BindRXOptions{RXPageSize: s.pageSize}
		}
		buf, err := s.dmabuf()
		if err != nil {
			return st, err
		}
		b, err := devmem.BindRX(s.nic.Index(), buf, st.queues, opts)
		if err != nil {
			return st, fmt.Errorf("bind-rx to queues %v: %w", st.queues, err)
		}
		st.binding = b
	}
	return st, nil
}

func (s *nicSetup) undo(st *steered) error {
	var errs []error
	if st.binding != nil {
		errs = append(errs, st.binding.Close())
	}
	return errors.Join(append(errs, st.setup.Undo())...)
}

func (st *steered) id() uint32 {
	if st.binding == nil {
		return 0
	}
	return st.binding.ID()
}

// hwKnob makes the simulated NIC receive on every queue like hardware, not
// only on devmem queues: wire segments DMAed into page pool pages, then
// GRO, instead of the peer's 64 KiB TSO skbs passed up as they are. Plain
// TCP then pays for what a real NIC makes it pay for, and the plain-TCP
// rows compare with devmem on equal terms.
const hwKnob = "rx_hw_all_queues"

// receiveLikeHardware sets hwKnob (where the kernel has it) and restarts
// the rx queues so that they take it (the knob is read at queue start);
// the returned func restores the old value the same way.
func (s *nicSetup) receiveLikeHardware() (restore func() error, on bool, err error) {
	old, err := selftest.NsimKnob(hwKnob)
	if err != nil {
		return func() error { return nil }, false, nil
	}
	set := func(v string) error {
		if err := selftest.SetNsimKnob(hwKnob, v); err != nil {
			return err
		}
		r, err := s.nic.Rings()
		if err != nil {
			return err
		}
		// A ring size change restarts every rx queue (twice: there and
		// back).
		for _, size := range []uint32{max(r.RX/2, 1), r.RX} {
			if out, err := exec.Command("ethtool", "-G", s.topo.IfName, "rx", strconv.Itoa(int(size))).CombinedOutput(); err != nil {
				return fmt.Errorf("ethtool -G %s rx %d: %v: %s", s.topo.IfName, size, err, out)
			}
		}
		return nil
	}
	if err := set("1"); err != nil {
		return nil, false, err
	}
	return func() error { return set(old) }, true, nil
}
