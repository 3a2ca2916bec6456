//go:build vmtest

package nictest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/netns"
	"github.com/devmem-go/devmem/selftest"
)

// The teardown cases TestTeardownWhileBound leaves out: the device deleted
// while user space still holds tokens of its frags, and the device leaving
// the network namespace that bound it, or that namespace dying, while bound.
// Run on the debug kernel (make vmtest-debug), where a use-after-free or a
// leaked reference is a KASAN or refcount-tracker report and fails the run.

// ipIn runs ip with args in the network namespace ns (nil: this one).
func ipIn(t *testing.T, ns *netns.Handle, args ...string) {
	t.Helper()
	run := func() error {
		out, err := exec.Command("ip", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	var err error
	if ns == nil {
		err = run()
	} else {
		err = ns.Do(run)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// onlyIfindex returns the one Ethernet interface of the current netns (a
// new netns may also hold the down fallback devices of built-in tunnel
// drivers, sit0 in the VM kernel).
func onlyIfindex() (string, int, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", 0, err
	}
	var found []net.Interface
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback == 0 && len(i.HardwareAddr) == 6 {
			found = append(found, i)
		}
	}
	if len(found) != 1 {
		return "", 0, fmt.Errorf("%d Ethernet interfaces: %v", len(found), found)
	}
	return found[0].Name, found[0].Index, nil
}

// pair is netdevsim device id (header split on, hds-thresh 0, in the init
// netns) linked to a one-queue peer device id+1 in a netns of its own:
// 198.51.100.1 here, 198.51.100.2 there. The peer has one TX queue, so
// everything it sends lands on the host's rx queue 0.
type pair struct {
	name    string
	ifindex int
	peer    *netns.Handle
}

func newPair(t *testing.T, id int) *pair {
	t.Helper()
	p := &pair{}
	p.name, p.ifindex = newNsim(t, id)
	var err error
	if p.peer, err = netns.New(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.peer.Close() })
	var peerIfindex int
	var peerName string
	if err := p.peer.Do(func() error {
		if err := os.WriteFile("/sys/bus/netdevsim/new_device", []byte(fmt.Sprintf("%d 1 1", id+1)), 0); err != nil {
			return err
		}
		var err error
		for range 100 {
			if peerName, peerIfindex, err = onlyIfindex(); err == nil {
				return nil
			}
			time.Sleep(20 * time.Millisecond)
		}
		return err
	}); err != nil {
		t.Fatalf("peer device: %v", err)
	}
	t.Cleanup(func() { delNsim(id + 1) })
	ipIn(t, nil, "addr", "add", "198.51.100.1/24", "dev", p.name)
	ipIn(t, p.peer, "link", "set", peerName, "up")
	ipIn(t, p.peer, "addr", "add", "198.51.100.2/24", "dev", peerName)
	// This thread's netns (/proc/self/ns/net is the main thread's, which
	// a Do elsewhere may have moved).
	self, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	defer self.Close()
	link := fmt.Sprintf("%d:%d %d:%d", self.Fd(), p.ifindex, p.peer.Fd(), peerIfindex)
	if err := os.WriteFile("/sys/bus/netdevsim/link_device", []byte(link), 0); err != nil {
		t.Fatalf("link %s: %v", link, err)
	}
	return p
}

// connect returns a connection from the peer to port on the host side.
func (p *pair) connect(t *testing.T, port int) (*net.TCPConn, net.Conn) {
	t.Helper()
	return connectWith(t, "198.51.100.1:"+strconv.Itoa(port), p.peer.Dial)
}

// poolsOf returns the page pools, on any device, that binding id provides.
func poolsOf(t *testing.T, id uint32) []devmem.PagePool {
	t.Helper()
	n, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	all, err := n.PagePools(0)
	if err != nil {
		t.Fatal(err)
	}
	var out []devmem.PagePool
	for _, p := range all {
		if p.DMABuf == id {
			out = append(out, p)
		}
	}
	return out
}

// waitNoPools waits until no page pool is left that binding id provides:
// every buffer came back and the pools were freed.
func waitNoPools(t *testing.T, id uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := poolsOf(t, id)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("page pools of binding %d still there: %+v", id, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestTeardownTokensHeld receives 1 MiB into a bound queue without
// returning a token, then takes the device away in different orders while
// the tokens are still held, and returns them (or closes the socket with
// them) afterwards. The frags' page pool outlives its device until the
// last token is back; then it must go.
func TestTeardownTokensHeld(t *testing.T) {
	selftest.Require(t)
	noDeferredSkbFree(t)
	id := 40
	for _, order := range []string{
		"delete-release-close",        // device gone, DONTNEED, close
		"unbind-delete-release-close", // netlink socket first
		"delete-close-holding",        // the socket closes holding tokens
		"unbind-close-holding-delete", // unbound, socket closes, then device
	} {
		id += 2
		t.Run(order, func(t *testing.T) {
			p := newPair(t, id)
			buf, err := devmem.NewUDMABuf(4<<20, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer buf.Close()
			mem, err := buf.Map()
			if err != nil {
				t.Fatal(err)
			}
			b, err := devmem.BindRX(p.ifindex, buf, []int{0}, nil)
			if err != nil {
				t.Fatalf("bind-rx on %s: %v", p.name, err)
			}
			defer b.Close()
			server, client := p.connect(t, 7000+id)
			r, err := devmem.NewReceiver(server, b, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			const total = 1 << 20
			s := newStream(uint64(id))
			go func() { s.send(client, total); client.Close() }()
			server.SetReadDeadline(time.Now().Add(time.Minute))
			var held []devmem.Frag
			var pos int64
			for pos < total {
				m, err := r.Recv()
				if err != nil {
					t.Fatalf("recv after %d bytes: %v", pos, err)
				}
				for _, f := range m.Frags {
					if f.Kind != devmem.FragDMABuf {
						t.Fatalf("%s frag at stream byte %d", f.Kind, pos)
					}
					if err := s.check(pos, mem[f.Offset:f.Offset+uint64(f.Size)]); err != nil {
						t.Fatal(err)
					}
					pos += int64(f.Size)
				}
				held = append(held, m.Frags...)
			}
			if len(poolsOf(t, b.ID())) == 0 {
				t.Fatalf("no page pool provided by binding %d while bound", b.ID())
			}
			t.Logf("holding %d tokens (%d outstanding)", len(held), r.Outstanding())
			steps := strings.Split(order, "-")
			for _, step := range steps {
				switch step {
				case "delete":
					if err := delNsim(id); err != nil {
						t.Fatal(err)
					}
					time.Sleep(100 * time.Millisecond)
				case "unbind":
					if err := b.Close(); err != nil {
						t.Fatalf("unbind: %v", err)
					}
				case "release":
					// The tokens are the socket's: returning them works
					// whatever happened to the device and the binding.
					freed, err := r.Release(held)
					if err != nil {
						t.Fatalf("release %d frags after %s: freed %d: %v", len(held), order, freed, err)
					}
					if r.Outstanding() != 0 {
						t.Errorf("%d tokens outstanding after releasing all", r.Outstanding())
					}
				case "close":
					r.Close()
					server.Close()
				case "holding":
					// close above, with the tokens still out: the kernel
					// frees them with the socket.
				}
			}
			b.Close()
			waitNoPools(t, b.ID())
		})
	}
}

// TestTeardownNetnsWhileBound binds RX and TX from a network namespace the
// device was moved into, then (a) moves the device out of it while bound,
// or (b) lets the namespace die: the binding's netlink socket is its last
// user, so closing it unbinds and then the netns exit moves the device back
// to the init netns.
func TestTeardownNetnsWhileBound(t *testing.T) {
	selftest.Require(t)
	id := 60
	for _, dir := range []string{"rx", "tx"} {
		for _, how := range []string{"device-leaves", "netns-dies"} {
			id++
			t.Run(dir+"/"+how, func(t *testing.T) {
				name, _ := newNsim(t, id)
				ns, err := netns.New()
				if err != nil {
					t.Fatal(err)
				}
				defer ns.Close()
				ipIn(t, nil, "link", "set", name, "netns", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), ns.Fd()))
				ipIn(t, ns, "link", "set", name, "up")
				buf, err := devmem.NewUDMABuf(4<<20, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer buf.Close()
				var b *devmem.Binding
				if err := ns.Do(func() error {
					i, err := net.InterfaceByName(name)
					if err != nil {
						return err
					}
					if dir == "rx" {
						b, err = devmem.BindRX(i.Index, buf, []int{1, 3}, nil)
					} else {
						b, err = devmem.BindTX(i.Index, buf)
					}
					return err
				}); err != nil {
					t.Fatalf("bind-%s in the netns: %v", dir, err)
				}
				defer b.Close()
				bid := b.ID()
				switch how {
				case "device-leaves":
					// Not /proc/PID/ns/net: that is the main thread's
					// netns, which is ns itself while a Do runs there.
					here, err := netns.Current()
					if err != nil {
						t.Fatal(err)
					}
					defer here.Close()
					ipIn(t, ns, "link", "set", name, "netns", fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), here.Fd()))
					if _, err := net.InterfaceByName(name); err != nil {
						t.Fatalf("%s not back in the init netns: %v", name, err)
					}
					if dir == "rx" && len(poolsOf(t, bid)) != 0 {
						// The move unregisters the device from the old
						// netns: its queues lose the provider.
						t.Logf("pools of binding %d after the move: %+v", bid, poolsOf(t, bid))
					}
					if err := b.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
						t.Errorf("unbind after the device left: %v", err)
					}
				case "netns-dies":
					if err := b.Close(); err != nil {
						t.Errorf("unbind: %v", err)
					}
					ns.Close()
					deadline := time.Now().Add(10 * time.Second)
					for {
						if _, err := net.InterfaceByName(name); err == nil {
							break
						}
						if time.Now().After(deadline) {
							t.Fatalf("%s did not come back to the init netns when its netns died", name)
						}
						time.Sleep(50 * time.Millisecond)
					}
				}
				if dir == "rx" {
					waitNoPools(t, bid)
				}
				// The device is whole: it can be bound again here.
				i, err := net.InterfaceByName(name)
				if err != nil {
					t.Fatal(err)
				}
				b2, err := devmem.BindRX(i.Index, buf, []int{1}, nil)
				if err != nil {
					t.Fatalf("bind-rx after %s: %v", how, err)
				}
				b2.Close()
				if err := delNsim(id); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}
