package main

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/devmem-go/devmem"
)

// openNIC opens the interface and counts its RX queues (rx + combined
// channels, as ncdevmem's rxq_num does).
func openNIC(name string) (*devmem.NIC, int, error) {
	nic, err := devmem.OpenNIC(name)
	if err != nil {
		return nil, 0, setupf("interface %s: %w", name, err)
	}
	ch, err := nic.Channels()
	if err != nil {
		nic.Close()
		return nil, 0, setupf("%s: reading channels: %w", name, err)
	}
	return nic, ch.RXQueues(), nil
}

// resolveQueues applies ncdevmem's queue defaults: in probe mode the upper
// half of the queues, otherwise the last queue alone; both need at least
// two queues so RSS has somewhere else to go.
func resolveQueues(o *options, rxQueues int) (start, count int, err error) {
	start, count = o.StartQueue, o.NumQueues
	if start >= 0 && count >= 0 {
		if start+count > rxQueues {
			return 0, 0, setupf("queues %d..%d: %s has %d RX queues", start, start+count-1, o.IfName, rxQueues)
		}
		return start, count, nil
	}
	if rxQueues < 2 {
		return 0, 0, setupf("%s has %d RX queue(s); devmem needs at least 2 (one for RSS, one to bind)", o.IfName, rxQueues)
	}
	if o.Mode == modeProbe {
		return rxQueues / 2, rxQueues / 2, nil
	}
	return rxQueues - 1, 1, nil
}

func queueList(start, count int) []int {
	q := make([]int, count)
	for i := range q {
		q[i] = start + i
	}
	return q
}

// snapshotNIC records the NIC state and arranges for it to be restored.
func snapshotNIC(nic *devmem.NIC, undo *undoStack) (*devmem.NICState, error) {
	state, err := nic.Snapshot()
	if err != nil {
		return nil, setupf("%s: snapshot of the NIC state: %w", nic.Name(), err)
	}
	undo.push("NIC state (header split, RSS, ntuple rules)", func() error { return nic.Restore(state) })
	return state, nil
}

// enableHeaderSplit turns tcp-data-split on and, where the driver reports
// one, sets hds-thresh to 0: bind-rx requires both. The two are separate
// requests because drivers that split but have no threshold refuse a
// request that carries both.
func enableHeaderSplit(nic *devmem.NIC, state *devmem.NICState) error {
	if err := nic.SetTCPDataSplit(devmem.TCPDataSplitEnabled); err != nil {
		return setupf("%s: enabling TCP header split: %w", nic.Name(), err)
	}
	if state.Rings != nil && state.Rings.HasHDSThresh {
		if err := nic.SetHDSThresh(0); err != nil {
			return setupf("%s: setting hds-thresh 0: %w", nic.Name(), err)
		}
	}
	return nil
}

// steerRSSAway spreads RSS over the queues below start, keeping the devmem
// queues for the flow rule alone (ethtool -X IF equal START).
func steerRSSAway(nic *devmem.NIC, start int) error {
	if err := nic.SetRSSEqual(start); err != nil {
		return setupf("%s: RSS equal %d (keeping queues %d.. for devmem): %w", nic.Name(), start, start, err)
	}
	return nil
}

// flowRules are the rules to try, best first: ncdevmem's 5-tuple (with -c)
// then its 3-tuple fallback.
func flowRules(server, client netip.Addr, port uint16, queue int) []devmem.FlowRule {
	typ := devmem.FlowTCP6
	if server.Is4() {
		typ = devmem.FlowTCP4
	}
	three := devmem.FlowRule{Type: typ, Dst: server, DstPort: port, Queue: queue}
	if !client.IsValid() {
		return []devmem.FlowRule{three}
	}
	five := three
	five.Src, five.SrcPort = client, port
	return []devmem.FlowRule{five, three}
}

// addFlowRule turns ntuple filtering on and steers the flow to queue.
func addFlowRule(env *runEnv, nic *devmem.NIC, server, client netip.Addr, port uint16, queue int) error {
	if err := nic.SetNtuple(true); err != nil {
		// ncdevmem never touches the flag; some drivers have none.
		env.logf("ncdevmem: %s: turning ntuple filtering on: %v (trying the rule anyway)", nic.Name(), err)
	}
	var errs []error
	for _, r := range flowRules(server, client, port, queue) {
		loc, err := nic.AddFlowRule(r)
		if err == nil {
			env.logf("added flow rule %s at %d: dst %v:%d src %v:%d -> queue %d", r.Type, loc, r.Dst, r.DstPort, r.Src, r.SrcPort, r.Queue)
			return nil
		}
		errs = append(errs, err)
	}
	return setupf("%s: flow steering rule: %w", nic.Name(), errors.Join(errs...))
}

func describeQueues(qs []int) string {
	if len(qs) == 1 {
		return fmt.Sprintf("queue %d", qs[0])
	}
	return fmt.Sprintf("queues %d..%d", qs[0], qs[len(qs)-1])
}
