//go:build vmtest

package nictest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/nic"
	"github.com/devmem-go/devmem/selftest"
)

// newNsim creates netdevsim device id (1 port, 4 queues) in the init netns,
// brings its port up with header split on and hds-thresh 0, and returns the
// port's name and ifindex. Cleanup deletes it if the test did not.
func newNsim(t *testing.T, id int) (string, int) {
	t.Helper()
	if err := os.WriteFile("/sys/bus/netdevsim/new_device", []byte(fmt.Sprintf("%d 1 4", id)), 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { delNsim(id) })
	var names []string
	for range 100 {
		ents, _ := os.ReadDir(fmt.Sprintf("/sys/bus/netdevsim/devices/netdevsim%d/net", id))
		if len(ents) > 0 {
			for _, e := range ents {
				names = append(names, e.Name())
			}
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(names) != 1 {
		t.Fatalf("netdevsim%d has ports %v", id, names)
	}
	name := names[0]
	if out, err := exec.Command("ip", "link", "set", name, "up").CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s up: %v: %s", name, err, out)
	}
	// A device of its own, deleted afterwards: raw setters, nothing to undo.
	n, err := nic.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if err := n.SetTCPDataSplit(nic.TCPDataSplitEnabled); err != nil {
		t.Fatal(err)
	}
	if err := n.SetHDSThresh(0); err != nil {
		t.Fatal(err)
	}
	return name, n.Index()
}

func delNsim(id int) error {
	if _, err := os.Stat(fmt.Sprintf("/sys/bus/netdevsim/devices/netdevsim%d", id)); err != nil {
		return nil
	}
	return os.WriteFile("/sys/bus/netdevsim/del_device", []byte(fmt.Sprint(id)), 0)
}

// TestTeardownWhileBound deletes a netdevsim device while a dma-buf is
// bound to it, for RX and TX, before and after the netlink socket that
// holds the binding is closed, and with the dma-buf fd closed first or
// last. vmexec fails the run on any WARN, BUG, KASAN or lockdep report, so
// on the debug kernel (DEVMEM_KERNEL_FLAVOUR=debug) a use-after-free in the
// unbind path shows here.
func TestTeardownWhileBound(t *testing.T) {
	selftest.Require(t)
	id := 20
	for _, dir := range []string{"rx", "tx"} {
		for _, order := range []string{"delete-then-close", "close-then-delete", "close-dmabuf-delete-close"} {
			id++
			t.Run(dir+"/"+order, func(t *testing.T) {
				name, ifindex := newNsim(t, id)
				buf, err := devmem.NewUDMABuf(4<<20, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer buf.Close()
				var b *devmem.Binding
				if dir == "rx" {
					b, err = devmem.BindRX(ifindex, buf, []int{1, 3}, nil)
				} else {
					b, err = devmem.BindTX(ifindex, buf)
				}
				if err != nil {
					t.Fatalf("bind-%s on %s: %v", dir, name, err)
				}
				switch order {
				case "delete-then-close":
					if err := delNsim(id); err != nil {
						t.Fatal(err)
					}
					time.Sleep(100 * time.Millisecond)
					b.Close()
				case "close-then-delete":
					if err := b.Close(); err != nil {
						t.Errorf("unbind: %v", err)
					}
					if err := delNsim(id); err != nil {
						t.Fatal(err)
					}
				case "close-dmabuf-delete-close":
					buf.Close()
					if err := delNsim(id); err != nil {
						t.Fatal(err)
					}
					time.Sleep(100 * time.Millisecond)
					b.Close()
				}
				// Let deferred unbind work run, then look for the
				// device's page pools: none may be left.
				time.Sleep(200 * time.Millisecond)
				if b, err := os.ReadFile("/proc/net/dev"); err == nil && strings.Contains(string(b), name+":") {
					t.Errorf("%s still exists", name)
				}
				if _, err := os.Stat(filepath.Join("/sys/class/net", name)); err == nil {
					t.Errorf("%s still in sysfs", name)
				}
			})
		}
	}
}
