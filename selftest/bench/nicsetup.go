//go:build linux

package main

// The NIC setup that the driver does for the receivers that do none
// themselves (fastrx, gorx): header split, RSS away from the bound queues,
// one ntuple rule per flow, and bind-rx of the shared udmabuf. Library NIC
// calls live here alone, so they follow the API where it moves.

import (
	"errors"
	"fmt"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/selftest"
)

// udmabufSize is ncdevmem's: 16000 pages.
const udmabufSize = 16000 * 4096

type nicSetup struct {
	topo *selftest.Topology
	nic  *devmem.NIC
	buf  *devmem.DMABuf
	rxQs int
}

func openNICSetup(topo *selftest.Topology) (*nicSetup, error) {
	nic, err := devmem.OpenNIC(topo.IfName)
	if err != nil {
		return nil, err
	}
	ch, err := nic.Channels()
	if err != nil {
		nic.Close()
		return nil, err
	}
	buf, err := devmem.NewUDMABufConfig(udmabufSize, devmem.UDMABufConfig{Name: "bench"})
	if err != nil {
		nic.Close()
		return nil, err
	}
	return &nicSetup{topo: topo, nic: nic, buf: buf, rxQs: ch.RXQueues()}, nil
}

func (s *nicSetup) Close() error {
	return errors.Join(s.buf.Close(), s.nic.Close())
}

// steered is one job's binding and rules; undo removes them.
type steered struct {
	binding *devmem.Binding
	rules   []uint32
	queues  []int
}

// steer binds the udmabuf to the top nq queues (RSS keeps the others; all
// of them when every queue is bound, no payload flow being unsteered) and
// adds a rule per flow: peer port basePort+i to queue i mod nq. With bind
// false only the rules are added (plain TCP on unbound queues).
func (s *nicSetup) steer(nq, flows, port int, bind bool) (*steered, error) {
	if nq < 1 || nq > s.rxQs {
		return nil, fmt.Errorf("%d queues: %s has %d", nq, s.topo.IfName, s.rxQs)
	}
	start := s.rxQs - nq
	st := &steered{}
	for q := start; q < s.rxQs; q++ {
		st.queues = append(st.queues, q)
	}
	if err := s.nic.SetTCPDataSplit(devmem.TCPDataSplitEnabled); err != nil {
		return nil, fmt.Errorf("header split: %w", err)
	}
	if r, err := s.nic.Rings(); err == nil && r.HasHDSThresh {
		if err := s.nic.SetHDSThresh(0); err != nil {
			return nil, fmt.Errorf("hds-thresh: %w", err)
		}
	}
	rss := start
	if rss == 0 {
		rss = s.rxQs
	}
	if err := s.nic.SetRSSEqual(rss); err != nil {
		return nil, fmt.Errorf("RSS equal %d: %w", rss, err)
	}
	if err := s.nic.SetNtuple(true); err != nil {
		return nil, fmt.Errorf("ntuple: %w", err)
	}
	if bind {
		b, err := devmem.BindRX(s.nic.Index(), s.buf, st.queues, nil)
		if err != nil {
			return nil, fmt.Errorf("bind-rx to queues %v: %w", st.queues, err)
		}
		st.binding = b
	}
	for i := range flows {
		loc, err := s.nic.AddFlowRule(devmem.FlowRule{
			Type: devmem.FlowTCP4,
			Src:  s.topo.PeerAddr4, SrcPort: uint16(port + i),
			Dst: s.topo.Addr4, DstPort: uint16(port),
			Queue: st.queues[i%nq],
		})
		if err != nil {
			return nil, errors.Join(fmt.Errorf("flow rule %d: %w", i, err), s.undo(st))
		}
		st.rules = append(st.rules, loc)
	}
	return st, nil
}

func (s *nicSetup) undo(st *steered) error {
	var errs []error
	for _, loc := range st.rules {
		errs = append(errs, s.nic.DeleteFlowRule(loc))
	}
	if st.binding != nil {
		errs = append(errs, st.binding.Close())
	}
	return errors.Join(errs...)
}

func (st *steered) id() uint32 {
	if st.binding == nil {
		return 0
	}
	return st.binding.ID()
}
