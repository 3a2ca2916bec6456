//go:build linux

package nic

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// fakeDev is an in-memory NIC with netdevsim's behaviour where it matters:
// header split "auto" (unknown) is off, the default RSS table follows the
// channel count, a bound queue pins header split on.
type fakeDev struct {
	mu       sync.Mutex
	split    TCPDataSplit
	hds      uint32
	combined uint32
	rss      []uint32 // nil: default
	rules    map[uint32]FlowRule
	ntupleOn bool
	bound    bool
	// autoOn makes the device netdevsim-like: header split "auto"
	// (unknown) reads as on, but only an explicit on allows bind-rx.
	autoOn bool
	auto   bool
	// onChange, if set, runs before each change with its name.
	onChange func(what string)
}

func newFakeDev() *fakeDev {
	return &fakeDev{split: TCPDataSplitDisabled, hds: 256, combined: 4, rules: map[uint32]FlowRule{}}
}

func (f *fakeDev) changing(what string) {
	if f.onChange != nil {
		f.onChange(what)
	}
}

func (f *fakeDev) close() error { return nil }
func (f *fakeDev) rings() (*Rings, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	split := f.split
	if f.auto {
		split = TCPDataSplitEnabled
	}
	return &Rings{RX: 512, TX: 512, TCPDataSplit: split, HDSThresh: f.hds, HDSThreshMax: 1024, HasHDSThresh: true}, nil
}
func (f *fakeDev) setRings(split *TCPDataSplit, hds *uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changing("rings")
	if split != nil {
		v := *split
		if f.autoOn {
			f.auto = v == TCPDataSplitUnknown
		}
		if v == TCPDataSplitUnknown {
			v = TCPDataSplitDisabled
		}
		if v != TCPDataSplitEnabled && f.bound {
			return unix.EINVAL
		}
		f.split = v
	}
	if hds != nil {
		f.hds = *hds
	}
	return nil
}
func (f *fakeDev) channels() (*Channels, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &Channels{Combined: f.combined, MaxCombined: 8}, nil
}
func (f *fakeDev) setChannels(u ChannelsUpdate) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changing("channels")
	if u.Combined != nil {
		f.combined = *u.Combined
	}
	return nil
}
func (f *fakeDev) flowRules() ([]FlowRule, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []FlowRule
	for loc := range uint32(64) {
		if r, ok := f.rules[loc]; ok {
			r.Location = loc
			out = append(out, r)
		}
	}
	return out, nil
}
func (f *fakeDev) addFlowRule(r FlowRule, atLocation bool) (uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changing("rule")
	if !f.ntupleOn {
		return 0, unix.EOPNOTSUPP
	}
	loc := r.Location
	if !atLocation {
		found := false
		for l := int64(63); l >= 0; l-- {
			if _, ok := f.rules[uint32(l)]; !ok {
				loc, found = uint32(l), true
				break
			}
		}
		if !found {
			return 0, unix.ENOSPC
		}
	}
	r.Location = loc
	f.rules[loc] = r
	return loc, nil
}
func (f *fakeDev) deleteFlowRule(loc uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changing("rule")
	if _, ok := f.rules[loc]; !ok {
		return unix.ENOENT
	}
	delete(f.rules, loc)
	return nil
}
func (f *fakeDev) rssIndirection() ([]uint32, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rss == nil {
		return equalRSS(16, int(f.combined)), nil
	}
	return slices.Clone(f.rss), nil
}
func (f *fakeDev) setRSSIndirection(t []uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changing("rss")
	if len(t) == 0 {
		f.rss = nil
		return nil
	}
	if len(t) != 16 {
		return unix.EINVAL
	}
	f.rss = slices.Clone(t)
	return nil
}
func (f *fakeDev) ntuple() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ntupleOn, nil
}
func (f *fakeDev) setNtuple(on bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.changing("ntuple")
	f.ntupleOn = on
	return nil
}

// rssTable is what the device routes: its RSS table, default or set.
func (f *fakeDev) rssTable() []uint32 {
	t, _ := f.rssIndirection()
	return t
}

func fakeNIC(f *fakeDev) *NIC { return &NIC{name: "eth7", ifindex: 7, c: f} }

func mustState(t *testing.T, n *NIC) *State {
	t.Helper()
	s, err := n.State()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// devmemSetup is what a devmem server does: header split, RSS away from
// queue first, a rule for port to it.
func devmemSetup(t *testing.T, n *NIC, dir string, first int, port uint16) *Setup {
	t.Helper()
	s, err := NewSetup(n, &SetupOptions{JournalDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.EnableHeaderSplit(); err != nil {
		t.Fatal(err)
	}
	if err := s.SteerRSSAway(first); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddFlowRule(FlowRule{Type: FlowTCP6, Dst: netip.MustParseAddr("2001:db8::1"), DstPort: port, Queue: first}); err != nil {
		t.Fatal(err)
	}
	return s
}

// checkServes fails unless the device is set up for a devmem server on
// queue q and port: split on, threshold 0, no RSS to q, the rule there.
func checkServes(t *testing.T, f *fakeDev, q int, port uint16) {
	t.Helper()
	f.mu.Lock()
	split, hds := f.split, f.hds
	var rule bool
	for _, r := range f.rules {
		if r.DstPort == port && r.Queue == q {
			rule = true
		}
	}
	f.mu.Unlock()
	if split != TCPDataSplitEnabled || hds != 0 {
		t.Errorf("queue %d server: split %v hds %d", q, split, hds)
	}
	if !rule {
		t.Errorf("queue %d server: its rule for port %d is gone", q, port)
	}
	for i, e := range f.rssTable() {
		if int(e) >= q {
			t.Errorf("queue %d server: RSS bucket %d goes to queue %d", q, i, e)
		}
	}
}

// withPreexisting seeds a rule that is not ours, at location 5.
func withPreexisting(t *testing.T, f *fakeDev) {
	t.Helper()
	f.ntupleOn = true
	if _, err := f.addFlowRule(FlowRule{Location: 5, Type: FlowTCP4, DstPort: 22}, true); err != nil {
		t.Fatal(err)
	}
	f.ntupleOn = false
}

func TestTwoSetupsUndoOnlyTheirOwn(t *testing.T) {
	for _, firstOut := range []string{"queue 3", "queue 2"} {
		t.Run(firstOut+" leaves first", func(t *testing.T) {
			f := newFakeDev()
			withPreexisting(t, f)
			n := fakeNIC(f)
			before := mustState(t, n)
			dir := t.TempDir()

			a := devmemSetup(t, n, dir, 3, 5201)
			b := devmemSetup(t, n, dir, 2, 5202)
			checkServes(t, f, 3, 5201)
			checkServes(t, f, 2, 5202)

			first, second := a, b
			q, port := 2, uint16(5202)
			if firstOut == "queue 2" {
				first, second, q, port = b, a, 3, 5201
			}
			if err := first.Undo(); err != nil {
				t.Fatal(err)
			}
			checkServes(t, f, q, port)
			if err := second.Undo(); err != nil {
				t.Fatal(err)
			}
			if after := mustState(t, n); !after.Equal(before) {
				t.Errorf("NIC not as it began:\nbefore %v\nafter  %v", before, after)
			}
			if ents, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(ents) != 0 {
				t.Errorf("journals left: %v", ents)
			}
		})
	}
}

func TestUndoLeavesWhatOthersChanged(t *testing.T) {
	f := newFakeDev()
	n := fakeNIC(f)
	s := devmemSetup(t, n, t.TempDir(), 3, 5201)
	// The admin changes RSS and adds a rule meanwhile.
	theirs := equalRSS(16, 1)
	if err := n.SetRSSIndirection(theirs); err != nil {
		t.Fatal(err)
	}
	loc, err := n.AddFlowRule(FlowRule{Type: FlowTCP4, DstPort: 80, Queue: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Undo(); err != nil {
		t.Fatal(err)
	}
	if got := f.rssTable(); !slices.Equal(got, theirs) {
		t.Errorf("RSS %v, want the admin's %v", got, theirs)
	}
	rules, _ := n.FlowRules()
	if len(rules) != 1 || rules[0].Location != loc {
		t.Errorf("rules %+v, want only the admin's at %d", rules, loc)
	}
	if !f.ntupleOn {
		t.Error("ntuple turned off under the admin's rule")
	}
	if f.split != TCPDataSplitDisabled || f.hds != 256 {
		t.Errorf("split %v hds %d, want off 256", f.split, f.hds)
	}
	if err := s.Undo(); err != nil {
		t.Errorf("second Undo: %v", err)
	}
	if err := s.EnableHeaderSplit(); err == nil {
		t.Error("EnableHeaderSplit after Undo succeeded")
	}
}

// deadPaths makes processAlive false for the journals at the given paths.
func deadPaths(t *testing.T, paths ...string) {
	t.Helper()
	old := processAlive
	processAlive = func(j *journal) bool { return !slices.Contains(paths, j.path) && old(j) }
	t.Cleanup(func() { processAlive = old })
}

func TestCrashedSetupUndoneByNextSetup(t *testing.T) {
	f := newFakeDev()
	withPreexisting(t, f)
	n := fakeNIC(f)
	before := mustState(t, n)
	dir := t.TempDir()
	// Two servers crash, one after the other configured the NIC.
	a := devmemSetup(t, n, dir, 3, 5201)
	b := devmemSetup(t, n, dir, 2, 5202)
	deadPaths(t, a.JournalPath(), b.JournalPath())

	c, err := NewSetup(n, &SetupOptions{JournalDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if after := mustState(t, n); !after.Equal(before) {
		t.Errorf("after recovery:\nbefore %v\nafter  %v", before, after)
	}
	for _, p := range []string{a.JournalPath(), b.JournalPath()} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("journal %s still there: %v", p, err)
		}
	}
	if err := c.Undo(); err != nil {
		t.Fatal(err)
	}
}

func TestRecoverSparesLiveSetups(t *testing.T) {
	f := newFakeDev()
	n := fakeNIC(f)
	before := mustState(t, n)
	dir := t.TempDir()
	dead := devmemSetup(t, n, dir, 3, 5201)
	live := devmemSetup(t, n, dir, 2, 5202)
	deadPaths(t, dead.JournalPath())

	// Recover opens NICs by index; serve index 7 from the fake.
	oldOpen := openNIC
	openNIC = func(name string, ifindex int) (*NIC, error) {
		if ifindex != 7 {
			return nil, fmt.Errorf("no nic %d: %w", ifindex, os.ErrNotExist)
		}
		return fakeNIC(f), nil
	}
	t.Cleanup(func() { openNIC = oldOpen })

	got, err := Recover(&SetupOptions{JournalDir: dir})
	if err != nil || got != 1 {
		t.Fatalf("Recover: %d, %v; want 1 journal", got, err)
	}
	checkServes(t, f, 2, 5202)
	for _, r := range f.rules {
		if r.DstPort == 5201 {
			t.Errorf("the crashed server's rule %+v survived", r)
		}
	}
	if got, err := Recover(&SetupOptions{JournalDir: dir}); err != nil || got != 0 {
		t.Errorf("second Recover: %d, %v", got, err)
	}
	if err := live.Undo(); err != nil {
		t.Fatal(err)
	}
	if after := mustState(t, n); !after.Equal(before) {
		t.Errorf("before %v\nafter  %v", before, after)
	}
}

// TestJournalBeforeChange checks that every change is on disk before the
// device sees it: at each change, a recovery from the journal as it is on
// disk must know about the change.
func TestJournalBeforeChange(t *testing.T) {
	f := newFakeDev()
	n := fakeNIC(f)
	dir := t.TempDir()
	var s *Setup
	var seen []string
	f.onChange = func(what string) {
		if s == nil {
			return
		}
		b, err := os.ReadFile(s.JournalPath())
		if err != nil {
			t.Errorf("%s change: journal: %v", what, err)
			return
		}
		var j journal
		if err := json.Unmarshal(b, &j); err != nil {
			t.Errorf("%s change: journal: %v", what, err)
			return
		}
		ok := map[string]bool{"rings": j.Rings != nil, "rss": j.RSS != nil, "ntuple": j.Ntuple != nil, "rule": len(j.Rules) > 0}[what]
		if !ok {
			t.Errorf("%s changed before the journal recorded it: %s", what, b)
		}
		seen = append(seen, what)
	}
	var err error
	if s, err = NewSetup(n, &SetupOptions{JournalDir: dir}); err != nil {
		t.Fatal(err)
	}
	if err := s.EnableHeaderSplit(); err != nil {
		t.Fatal(err)
	}
	if err := s.SteerRSSAway(3); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddFlowRule(FlowRule{Type: FlowTCP4, DstPort: 1, Queue: 3}); err != nil {
		t.Fatal(err)
	}
	f.onChange = nil
	if want := []string{"rings", "rings", "rss", "ntuple", "rule"}; !slices.Equal(seen, want) {
		t.Errorf("changes %v, want %v", seen, want)
	}
	if err := s.Undo(); err != nil {
		t.Fatal(err)
	}
}

func TestSetupsConcurrent(t *testing.T) {
	f := newFakeDev()
	withPreexisting(t, f)
	n := fakeNIC(f)
	before := mustState(t, n)
	dir := t.TempDir()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			s, err := NewSetup(n, &SetupOptions{JournalDir: dir})
			if err != nil {
				t.Error(err)
				return
			}
			q := 1 + i%3
			port := uint16(6000 + i)
			errs := []error{s.EnableHeaderSplit(), s.SteerRSSAway(q)}
			_, err = s.AddFlowRule(FlowRule{Type: FlowTCP4, DstPort: port, Queue: q})
			errs = append(errs, err)
			if err := errors.Join(errs...); err != nil {
				t.Error(err)
			}
			checkServes(t, f, q, port)
			if err := s.Undo(); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if after := mustState(t, n); !after.Equal(before) {
		t.Errorf("before %v\nafter  %v", before, after)
	}
}

func TestClosedNIC(t *testing.T) {
	n := fakeNIC(newFakeDev())
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"Close":  n.Close(),
		"Rings":  func() error { _, err := n.Rings(); return err }(),
		"State":  func() error { _, err := n.State(); return err }(),
		"SetRSS": n.SetRSSIndirection(nil),
	} {
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v, want net.ErrClosed", name, err)
		}
	}
}

// TestHeaderSplitAutoReadsOn: netdevsim reports its "auto" header split as
// on, but bind-rx needs it set explicitly; afterwards it must be auto again.
func TestHeaderSplitAutoReadsOn(t *testing.T) {
	f := newFakeDev()
	f.autoOn, f.auto = true, true
	n := fakeNIC(f)
	s := devmemSetup(t, n, t.TempDir(), 3, 5201)
	if f.auto || f.split != TCPDataSplitEnabled {
		t.Errorf("header split auto %v, split %v: bind-rx would refuse", f.auto, f.split)
	}
	if err := s.Undo(); err != nil {
		t.Fatal(err)
	}
	if !f.auto {
		t.Errorf("header split left explicitly %v, was auto", f.split)
	}
}

// TestNICCloseRacesCalls: Close while other goroutines use the NIC and a
// Setup of it; every call either works or fails with net.ErrClosed.
func TestNICCloseRacesCalls(t *testing.T) {
	f := newFakeDev()
	n := fakeNIC(f)
	s, err := NewSetup(n, &SetupOptions{JournalDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Go(func() {
			for range 50 {
				var err error
				switch i % 3 {
				case 0:
					_, err = n.Rings()
				case 1:
					_, err = n.State()
				case 2:
					err = s.SteerRSSAway(2)
				}
				if err != nil && !errors.Is(err, net.ErrClosed) {
					t.Errorf("call %d: %v", i%3, err)
					return
				}
			}
		})
	}
	wg.Go(func() { n.Close() })
	wg.Wait()
	if err := s.Undo(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Errorf("Undo after Close: %v", err)
	}
}
