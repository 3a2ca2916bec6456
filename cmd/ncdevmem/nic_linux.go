package main

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/devmem-go/devmem/nic"
)

// openNIC opens the interface and, unless -t and -q name the queues, counts
// its RX queues (rx + combined channels, as ncdevmem's rxq_num does). Like
// ncdevmem it reads no channels when -t and -q are given: a netkit device
// has none, and fails the read. rxQueues is -1 then.
func openNIC(o *options) (n *nic.NIC, rxQueues int, err error) {
	n, err = nic.Open(o.IfName)
	if err != nil {
		return nil, 0, setupf("interface %s: %w", o.IfName, err)
	}
	if o.StartQueue >= 0 && o.NumQueues >= 0 {
		return n, -1, nil
	}
	ch, err := n.Channels()
	if err != nil {
		n.Close()
		return nil, 0, setupf("%s: reading channels (give -t and -q to skip): %w", o.IfName, err)
	}
	return n, ch.RXQueues(), nil
}

// resolveQueues applies ncdevmem's queue defaults: in probe mode the upper
// half of the queues, otherwise the last queue alone; both need at least
// two queues so RSS has somewhere else to go. rxQueues < 0 means unknown
// (not read): -t and -q are then taken as given, as ncdevmem does.
func resolveQueues(o *options, rxQueues int) (start, count int, err error) {
	start, count = o.StartQueue, o.NumQueues
	if start >= 0 && count >= 0 {
		if rxQueues >= 0 && start+count > rxQueues {
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

// describeRXQueues is the "(N RX queues)" of the log line, if counted.
func describeRXQueues(n int) string {
	if n < 0 {
		return "queues given, channels not read"
	}
	return fmt.Sprintf("%d RX queues", n)
}

// newSetup starts recording NIC changes and arranges for exactly those to
// be undone; it first undoes what crashed runs left behind.
func newSetup(n *nic.NIC, undo *undoStack) (*nic.Setup, error) {
	s, err := nic.NewSetup(n, nil)
	if err != nil {
		return nil, setupf("%s: NIC setup (journal): %w", n.Name(), err)
	}
	undo.push("NIC configuration (header split, RSS, flow rule)", s.Undo)
	return s, nil
}

// enableHeaderSplit turns tcp-data-split on and, where the driver reports
// one, sets hds-thresh to 0: bind-rx requires both.
func enableHeaderSplit(s *nic.Setup) error {
	if err := s.EnableHeaderSplit(); err != nil {
		return setupf("%s: enabling TCP header split (hds-thresh 0): %w", s.NIC().Name(), err)
	}
	return nil
}

// steerRSSAway spreads RSS over the queues below start, keeping the devmem
// queues for the flow rule alone (ethtool -X IF equal START).
func steerRSSAway(s *nic.Setup, start int) error {
	if err := s.SteerRSSAway(start); err != nil {
		return setupf("%s: RSS equal %d (keeping queues %d.. for devmem): %w", s.NIC().Name(), start, start, err)
	}
	return nil
}

// flowRules are the rules to try, best first: ncdevmem's 5-tuple (with -c)
// then its 3-tuple fallback.
func flowRules(server, client netip.Addr, port uint16, queue int) []nic.FlowRule {
	typ := nic.FlowTCP6
	if server.Is4() {
		typ = nic.FlowTCP4
	}
	three := nic.FlowRule{Type: typ, Dst: server, DstPort: port, Queue: queue}
	if !client.IsValid() {
		return []nic.FlowRule{three}
	}
	five := three
	five.Src, five.SrcPort = client, port
	return []nic.FlowRule{five, three}
}

// addFlowRule steers the flow to queue (turning ntuple filtering on).
func addFlowRule(env *runEnv, s *nic.Setup, server, client netip.Addr, port uint16, queue int) error {
	var errs []error
	for _, r := range flowRules(server, client, port, queue) {
		loc, err := s.AddFlowRule(r)
		if err == nil {
			env.logf("added flow rule %s at %d: dst %v:%d src %v:%d -> queue %d", r.Type, loc, r.Dst, r.DstPort, r.Src, r.SrcPort, r.Queue)
			return nil
		}
		errs = append(errs, err)
	}
	return setupf("%s: flow steering rule: %w", s.NIC().Name(), errors.Join(errs...))
}

func describeQueues(qs []int) string {
	if len(qs) == 1 {
		return fmt.Sprintf("queue %d", qs[0])
	}
	return fmt.Sprintf("queues %d..%d", qs[0], qs[len(qs)-1])
}

// runRestore is --restore: undo what ncdevmem (or any nic.Setup) runs that
// died left on the NICs of this network namespace.
func runRestore(env *runEnv) error {
	n, err := nic.Recover(nil)
	if err != nil {
		return setupf("restore: %w", err)
	}
	env.logf("restored the NIC changes of %d crashed run(s)", n)
	return nil
}
