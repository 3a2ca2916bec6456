package nic

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/devmem-go/devmem/internal/errs"
)

// DefaultJournalDir is where a Setup keeps its undo journal unless
// SetupOptions or $DEVMEM_JOURNAL_DIR name another directory.
const DefaultJournalDir = "/run/devmem"

// SetupOptions configure NewSetup and Recover; nil means defaults.
type SetupOptions struct {
	// JournalDir is the directory of the undo journals, shared by every
	// process that configures NICs for devmem: "" means
	// $DEVMEM_JOURNAL_DIR, or DefaultJournalDir when that is unset.
	JournalDir string
}

func (o *SetupOptions) dir() string {
	if o != nil && o.JournalDir != "" {
		return o.JournalDir
	}
	if d := os.Getenv("DEVMEM_JOURNAL_DIR"); d != "" {
		return d
	}
	return DefaultJournalDir
}

// Setup is one user's devmem configuration of a NIC: the changes it made
// and how to undo exactly those. Undo deletes the flow rules it added, by
// location, and puts shared settings (header split and hds-thresh, RSS,
// the ntuple flag) back only when no other Setup of the NIC, in this or
// another process, still relies on them, and only where they are still as
// the Setups left them; a setting someone else changed since is left
// alone.
//
// Before each change the Setup writes (and fsyncs) its journal, a file in
// the journal directory naming the process and the changes. A process that
// dies without Undo leaves its journal behind; the next NewSetup of the
// NIC, or Recover, undoes the changes of every journal whose process is
// gone. The journal directory is locked (flock) for the duration of each
// method, so concurrent Setups see each other's changes.
//
// A Setup's methods may be called from several goroutines; they are
// serialized.
type Setup struct {
	nic *NIC
	dir string

	mu     sync.Mutex
	j      journal
	path   string
	undone bool
}

// journal is a Setup's record of its changes, as stored on disk (JSON).
type journal struct {
	Pid     int    `json:"pid"`
	Start   uint64 `json:"start"` // the process's start time, against pid reuse
	PidNS   string `json:"pidns"` // pid namespace, in which Pid means something
	NetNS   string `json:"netns"` // network namespace, in which Ifindex means something
	Ifindex int    `json:"ifindex"`
	Ifname  string `json:"ifname"`
	// Seq orders the journals of one directory: each new one gets a higher
	// number than all present.
	Seq uint64 `json:"seq"`

	Rings  *ringsChange  `json:"rings,omitempty"`
	RSS    *rssChange    `json:"rss,omitempty"`
	Ntuple *ntupleChange `json:"ntuple,omitempty"`
	Rules  []ruleChange  `json:"rules,omitempty"`

	path string // where it was read from
}

// splitState is the part of Rings a Setup changes.
type splitState struct {
	Split     TCPDataSplit `json:"split"`
	HDSThresh uint32       `json:"hds_thresh"`
	HasHDS    bool         `json:"has_hds"`
}

// ringsChange: Base is what the NIC had before the first of the Setups
// that rely on header split (inherited from the others when there are
// any), Set what this Setup needs.
type ringsChange struct {
	Base splitState `json:"base"`
	Set  splitState `json:"set"`
}

// rssChange: First is the lowest queue this Setup keeps out of RSS; Set is
// the table it installed (which also keeps out the queues of the other
// Setups present then).
type rssChange struct {
	Base        []uint32 `json:"base"`
	BaseDefault bool     `json:"base_default"`
	First       int      `json:"first"`
	Set         []uint32 `json:"set"`
}

// ntupleChange: BaseRules are the rules present when ntuple filtering was
// found off; it is turned off again only if no other rule is left.
type ntupleChange struct {
	Base      bool       `json:"base"`
	BaseRules []FlowRule `json:"base_rules,omitempty"`
	Set       bool       `json:"set"`
}

// ruleChange is a flow rule this Setup adds; Placed says Rule.Location is
// where the NIC put it (false while the insert is under way).
type ruleChange struct {
	Rule   FlowRule `json:"rule"`
	Placed bool     `json:"placed"`
}

func (j *journal) sameNIC(o *journal) bool {
	return j.NetNS == o.NetNS && j.Ifindex == o.Ifindex && j.Ifname == o.Ifname
}

func (j *journal) empty() bool {
	return j.Rings == nil && j.RSS == nil && j.Ntuple == nil && len(j.Rules) == 0
}

// NewSetup starts a Setup of n. It first undoes what Setups of n in
// processes that died left behind. Undo the Setup before closing n.
func NewSetup(n *NIC, opts *SetupOptions) (*Setup, error) {
	s := &Setup{nic: n, dir: opts.dir()}
	self, err := selfIdentity()
	if err != nil {
		return nil, &errs.Error{Op: "nic setup", Err: err}
	}
	s.j = self
	s.j.Ifindex, s.j.Ifname = n.Index(), n.Name()
	err = withLock(s.dir, func(all []*journal) error {
		same := func(j *journal) bool { return j.sameNIC(&s.j) }
		if err := recoverDead(all, same, func(*journal) (*NIC, func(), error) { return n, func() {}, nil }); err != nil {
			return err
		}
		for _, j := range all {
			s.j.Seq = max(s.j.Seq, j.Seq)
		}
		s.j.Seq++
		s.path = journalPath(s.dir, s.j.Pid, s.j.Seq)
		return s.saveLocked()
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// NIC returns the NIC the Setup configures.
func (s *Setup) NIC() *NIC { return s.nic }

// JournalPath returns the file the Setup keeps its undo journal in.
func (s *Setup) JournalPath() string { return s.path }

// reload takes the Setup's journal as on disk: other Setups update the
// RSS table recorded in it when they change the table for the group.
func (s *Setup) reload(all []*journal) {
	for _, j := range all {
		if j.path == s.path {
			s.j = *j
		}
	}
}

func (s *Setup) saveLocked() error {
	if err := writeJournal(s.path, &s.j); err != nil {
		return &errs.Error{Op: "nic setup journal", Err: err}
	}
	return nil
}

// change runs fn under the directory lock with the other journals of the
// same NIC (newest first).
func (s *Setup) change(op string, fn func(others []*journal) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.undone {
		return errorf(op, "setup already undone")
	}
	return withLock(s.dir, func(all []*journal) error {
		s.reload(all)
		return fn(othersOf(all, &s.j, s.path))
	})
}

// othersOf returns the journals of all about the NIC of j, except the one
// at path, newest first.
func othersOf(all []*journal, j *journal, path string) []*journal {
	var out []*journal
	for _, o := range all {
		if o.path != path && o.sameNIC(j) {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b *journal) int { return cmp.Compare(b.Seq, a.Seq) })
	return out
}

// EnableHeaderSplit turns TCP header/data split on and, where the driver
// reports one, sets hds-thresh to 0: bind-rx requires both. They are
// separate requests because drivers that split but have no threshold refuse
// a request that carries both.
func (s *Setup) EnableHeaderSplit() error {
	const op = "enable header split"
	return s.change(op, func(others []*journal) error {
		cur, err := s.nic.Rings()
		if err != nil {
			return err
		}
		now := splitState{Split: cur.TCPDataSplit, HDSThresh: cur.HDSThresh, HasHDS: cur.HasHDSThresh}
		want := splitState{Split: TCPDataSplitEnabled, HasHDS: cur.HasHDSThresh}
		if s.j.Rings == nil {
			base := now
			for _, o := range others {
				if o.Rings != nil {
					base = o.Rings.Base
					break
				}
			}
			s.j.Rings = &ringsChange{Base: base, Set: want}
			if err := s.saveLocked(); err != nil {
				return err
			}
		}
		// Sent even when it reads as on: a driver may report its "auto"
		// as on (netdevsim does), while bind-rx wants it set explicitly.
		if err := s.nic.SetTCPDataSplit(TCPDataSplitEnabled); err != nil {
			return err
		}
		if cur.HasHDSThresh && cur.HDSThresh != 0 {
			if err := s.nic.SetHDSThresh(0); err != nil {
				return err
			}
		}
		return nil
	})
}

// SteerRSSAway spreads RSS evenly over the queues below first (ethtool -X
// IF equal FIRST), keeping first and the queues above it for devmem flow
// rules. Queues that other Setups of the NIC keep out stay out.
func (s *Setup) SteerRSSAway(first int) error {
	const op = "set rss"
	if first <= 0 {
		return errorf(op, fmt.Sprintf("RSS needs at least one queue below the devmem queues (first devmem queue %d)", first))
	}
	return s.change(op, func(others []*journal) error {
		cur, err := s.nic.RSSIndirection()
		if err != nil {
			return err
		}
		limit := first
		var inherited *rssChange
		for _, o := range others {
			if o.RSS != nil {
				limit = min(limit, o.RSS.First)
				if inherited == nil {
					inherited = o.RSS
				}
			}
		}
		want := equalRSS(len(cur), limit)
		if s.j.RSS == nil {
			c := &rssChange{Base: cur, First: first, Set: want}
			if inherited != nil {
				c.Base, c.BaseDefault = inherited.Base, inherited.BaseDefault
			} else if ch, err := s.nic.Channels(); err == nil {
				c.BaseDefault = isDefaultRSS(cur, ch.RXQueues())
			}
			s.j.RSS = c
		} else {
			s.j.RSS.First, s.j.RSS.Set = min(s.j.RSS.First, first), want
		}
		if err := s.saveLocked(); err != nil {
			return err
		}
		if !slices.Equal(cur, want) {
			if err := s.nic.SetRSSIndirection(want); err != nil {
				return err
			}
		}
		return setGroupRSS(others, want)
	})
}

// AddFlowRule turns ntuple filtering on (if it is off; drivers without the
// flag are tried anyway) and inserts r, returning its location (see
// NIC.AddFlowRule). Undo deletes it.
func (s *Setup) AddFlowRule(r FlowRule) (uint32, error) {
	const op = "add flow rule"
	var loc uint32
	err := s.change(op, func(others []*journal) error {
		var ntupleErr error
		on, err := s.nic.Ntuple()
		if err == nil {
			if s.j.Ntuple == nil {
				c := &ntupleChange{Base: on, Set: true}
				if inherited := firstOf(others, func(o *journal) bool { return o.Ntuple != nil }); inherited != nil {
					c.Base, c.BaseRules = inherited.Ntuple.Base, inherited.Ntuple.BaseRules
				} else if !on {
					if c.BaseRules, err = s.nic.FlowRules(); err != nil {
						return err
					}
				}
				s.j.Ntuple = c
				if err := s.saveLocked(); err != nil {
					return err
				}
			}
			if !on {
				ntupleErr = s.nic.SetNtuple(true)
			}
		}
		r.Location = 0
		s.j.Rules = append(s.j.Rules, ruleChange{Rule: r})
		i := len(s.j.Rules) - 1
		if err := s.saveLocked(); err != nil {
			return err
		}
		loc, err = s.nic.AddFlowRule(r)
		if err != nil {
			s.j.Rules = slices.Delete(s.j.Rules, i, i+1)
			return errors.Join(ntupleErr, err, s.saveLocked())
		}
		s.j.Rules[i].Rule.Location, s.j.Rules[i].Placed = loc, true
		return s.saveLocked()
	})
	return loc, err
}

// Undo puts back what the Setup changed, as far as no other Setup relies
// on it, and removes its journal. Close every Binding on the NIC's queues
// first: the kernel refuses to turn header split off under a bound queue.
// Undo carries on past failures and returns them joined; the journal then
// stays, for Recover to try again once the process is gone. A second Undo
// does nothing.
func (s *Setup) Undo() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.undone {
		return nil
	}
	s.undone = true
	return withLock(s.dir, func(all []*journal) error {
		s.reload(all)
		if err := undo(s.nic, &s.j, othersOf(all, &s.j, s.path)); err != nil {
			return err
		}
		return removeJournal(s.path)
	})
}

// Recover undoes the changes that Setups of processes that are gone left
// behind, on every NIC of this network namespace, and removes their
// journals. It returns how many journals it applied. Journals of other
// network or pid namespaces, and of processes still running, are left.
func Recover(opts *SetupOptions) (int, error) {
	self, err := selfIdentity()
	if err != nil {
		return 0, &errs.Error{Op: "nic recover", Err: err}
	}
	n := 0
	err = withLock(opts.dir(), func(all []*journal) error {
		open := func(j *journal) (*NIC, func(), error) {
			n, err := OpenIndex(j.Ifindex)
			if err != nil {
				return nil, nil, err
			}
			return n, func() { n.Close() }, nil
		}
		for _, j := range all {
			if j.NetNS == self.NetNS && !processAlive(j) {
				n++
			}
		}
		return recoverDead(all, func(j *journal) bool { return j.NetNS == self.NetNS }, open)
	})
	return n, err
}

// opener returns the NIC a journal is about, and how to let go of it.
type opener func(j *journal) (n *NIC, release func(), err error)

// recoverDead undoes, newest first, the journals of all that match and
// whose process is gone, with the journals not yet undone as the others.
func recoverDead(all []*journal, match func(*journal) bool, open opener) error {
	var dead []*journal
	for _, j := range all {
		if match(j) && !processAlive(j) {
			dead = append(dead, j)
		}
	}
	slices.SortFunc(dead, func(a, b *journal) int { return cmp.Compare(b.Seq, a.Seq) })
	done := map[string]bool{}
	var errsOut []error
	for _, d := range dead {
		done[d.path] = true
		var others []*journal
		for _, o := range othersOf(all, d, d.path) {
			if !done[o.path] {
				others = append(others, o)
			}
		}
		errsOut = append(errsOut, recoverOne(d, others, open))
	}
	return errors.Join(errsOut...)
}

func recoverOne(d *journal, others []*journal, open opener) error {
	if d.empty() {
		return removeJournal(d.path)
	}
	n, release, err := open(d)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// The device is gone, and its settings with it.
			return removeJournal(d.path)
		}
		return err
	}
	defer release()
	// Another device may have the index now; the one changed is gone.
	if n.Name() == d.Ifname {
		if err := undo(n, d, others); err != nil {
			return fmt.Errorf("undoing %s (pid %d, %s): %w", d.path, d.Pid, d.Ifname, err)
		}
	}
	return removeJournal(d.path)
}

// undo reverts the changes of j on n; others are the journals of Setups
// of the same NIC that are still to be undone, newest first.
func undo(n *NIC, j *journal, others []*journal) error {
	var errsOut []error
	have, err := n.FlowRules()
	if err != nil && len(j.Rules) > 0 {
		errsOut = append(errsOut, err)
	}
	claimed := func(loc uint32) bool {
		for _, o := range others {
			for _, rc := range o.Rules {
				if rc.Placed && rc.Rule.Location == loc {
					return true
				}
			}
		}
		return false
	}
	for i := len(j.Rules) - 1; i >= 0; i-- {
		rc := j.Rules[i]
		for _, h := range have {
			if !h.sameMatch(rc.Rule) {
				continue
			}
			if rc.Placed && h.Location != rc.Rule.Location {
				continue
			}
			if !rc.Placed && claimed(h.Location) {
				continue
			}
			errsOut = append(errsOut, n.DeleteFlowRule(h.Location))
			if rc.Placed {
				break
			}
		}
	}
	if c := j.Ntuple; c != nil && c.Set && !c.Base && !anyOf(others, func(o *journal) bool { return o.Ntuple != nil }) {
		on, err := n.Ntuple()
		left, lerr := n.FlowRules()
		switch {
		case err != nil:
			errsOut = append(errsOut, err)
		case lerr != nil:
			errsOut = append(errsOut, lerr)
		case on && !slices.ContainsFunc(left, func(r FlowRule) bool { return !slices.Contains(c.BaseRules, r) }):
			errsOut = append(errsOut, n.SetNtuple(false))
		}
	}
	if c := j.RSS; c != nil {
		errsOut = append(errsOut, undoRSS(n, c, others))
	}
	if c := j.Rings; c != nil {
		errsOut = append(errsOut, undoSplit(n, c, others))
	}
	return errors.Join(errsOut...)
}

func anyOf(js []*journal, f func(*journal) bool) bool { return slices.ContainsFunc(js, f) }

func firstOf(js []*journal, f func(*journal) bool) *journal {
	if i := slices.IndexFunc(js, f); i >= 0 {
		return js[i]
	}
	return nil
}

// setGroupRSS records table as the RSS table of every journal in js that
// has one: the table their Setups together installed.
func setGroupRSS(js []*journal, table []uint32) error {
	var errsOut []error
	for _, o := range js {
		if o.RSS != nil && !slices.Equal(o.RSS.Set, table) {
			o.RSS.Set = table
			errsOut = append(errsOut, writeJournal(o.path, o))
		}
	}
	return errors.Join(errsOut...)
}

func undoRSS(n *NIC, c *rssChange, others []*journal) error {
	cur, err := n.RSSIndirection()
	if err != nil {
		return err
	}
	if !slices.Equal(cur, c.Set) {
		return nil // changed since, by someone else: theirs now
	}
	limit := -1
	for _, o := range others {
		if o.RSS != nil && (limit < 0 || o.RSS.First < limit) {
			limit = o.RSS.First
		}
	}
	if limit > 0 {
		want := equalRSS(len(cur), limit)
		if !slices.Equal(cur, want) {
			if err := n.SetRSSIndirection(want); err != nil {
				return err
			}
		}
		return setGroupRSS(others, want)
	}
	if c.BaseDefault {
		return n.SetRSSIndirection(nil)
	}
	if slices.Equal(cur, c.Base) || len(c.Base) != len(cur) {
		return nil
	}
	return n.SetRSSIndirection(c.Base)
}

func undoSplit(n *NIC, c *ringsChange, others []*journal) error {
	if anyOf(others, func(o *journal) bool { return o.Rings != nil }) {
		return nil // the others need it as it is
	}
	cur, err := n.Rings()
	if err != nil {
		return err
	}
	if cur.TCPDataSplit != c.Set.Split || (c.Set.HasHDS && cur.HDSThresh != c.Set.HDSThresh) {
		return nil // changed since, by someone else
	}
	old := c.Base
	// Even when it reads as it was: header split was set explicitly, and
	// may have been "auto" before, which some drivers report as on.
	//
	// Hand header split back to the driver's choice first, so an "auto"
	// device stays auto; then the old threshold; then, if the driver's
	// choice differs from what was there, the explicit old value (what
	// ncdevmem does).
	if err := n.SetTCPDataSplit(TCPDataSplitUnknown); err != nil {
		return err
	}
	if old.HasHDS && cur.HDSThresh != old.HDSThresh {
		if err := n.SetHDSThresh(old.HDSThresh); err != nil {
			return err
		}
	}
	now, err := n.Rings()
	if err != nil {
		return err
	}
	if now.TCPDataSplit != old.Split && old.Split != TCPDataSplitUnknown {
		return n.SetTCPDataSplit(old.Split)
	}
	return nil
}
