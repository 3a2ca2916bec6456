//go:build vmtest

package nictest

import (
	"testing"
	"time"

	"github.com/devmem-go/devmem"
)

// attachedPools returns the attached page pools of the device that carry
// the binding.
func attachedPools(t *testing.T, nd *devmem.Netdev, x *rx) []devmem.PagePool {
	t.Helper()
	pools, err := nd.PagePools(x.topo.IfIndex)
	if err != nil {
		t.Error(err)
		return nil
	}
	var out []devmem.PagePool
	for _, p := range pools {
		if p.DMABuf == x.binding.ID() && p.DetachTime == 0 {
			out = append(out, p)
		}
	}
	return out
}

// TestRestartOnReconfig changes the rx ring size (ethtool -G) and the
// channel count (ethtool -L) while a devmem flow runs on the bound queue 1:
// each change restarts the queues through the queue management API, so the
// bound queue gets a new page pool (the old one detaches, its buffers come
// back as their frags are freed) and a ring of the new size, the flow
// delivers every byte, and -L below the bound queue is refused by the core.
func TestRestartOnReconfig(t *testing.T) {
	noDeferredSkbFree(t)
	x := setupRX(t, 8<<20, 1, nil)
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	ifname := x.topo.IfName
	first := attachedPools(t, nd, x)
	if len(first) != 1 {
		t.Fatalf("pools of the binding: %+v", first)
	}

	type step struct {
		args   []string
		refuse bool
		ring   uint64
	}
	steps := []step{
		{args: []string{"-G", ifname, "rx", "256"}, ring: 256},
		{args: []string{"-L", ifname, "combined", "3"}, ring: 256},
		{args: []string{"-L", ifname, "combined", "1"}, refuse: true},
		{args: []string{"-G", ifname, "rx", "128"}, ring: 128},
		{args: []string{"-L", ifname, "combined", "4"}, ring: 128},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		prev := first[0].ID
		for _, s := range steps {
			time.Sleep(300 * time.Millisecond)
			out, err := ethtoolErr(s.args...)
			if s.refuse {
				if err == nil {
					t.Errorf("ethtool %v with queue 1 bound succeeded: %s", s.args, out)
				}
				continue
			}
			if err != nil {
				t.Errorf("ethtool %v: %v: %s", s.args, err, out)
				return
			}
			pools := attachedPools(t, nd, x)
			if len(pools) != 1 {
				t.Errorf("after ethtool %v: attached pools of the binding %+v", s.args, pools)
				return
			}
			if pools[0].ID == prev {
				t.Errorf("ethtool %v did not restart queue 1 (still page pool %d)", s.args, prev)
			}
			if pools[0].Inflight < s.ring {
				t.Errorf("after ethtool %v: new pool has %d buffers in flight, ring is %d", s.args, pools[0].Inflight, s.ring)
			}
			prev = pools[0].ID
		}
	}()
	x.transfer(t, x.topo.Addr4, 24<<20)
	<-done

	// The detached pools drain once every frag is back.
	deadline := time.Now().Add(10 * time.Second)
	for {
		pools, err := nd.PagePools(x.topo.IfIndex)
		if err != nil {
			t.Fatal(err)
		}
		var lingering []devmem.PagePool
		for _, p := range pools {
			if p.DMABuf == x.binding.ID() && p.DetachTime != 0 {
				lingering = append(lingering, p)
			}
		}
		if len(lingering) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("detached pools still hold buffers: %+v", lingering)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := rxRing(t, x); r != 128 {
		t.Errorf("rx ring %d after the changes", r)
	}
}
