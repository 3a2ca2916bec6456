package selftest

import (
	"errors"
	"net/netip"
	"os"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func vmEnv() map[string]string {
	return map[string]string{
		"DEVMEM_VM":                "1",
		"DEVMEM_IFNAME":            "eth0",
		"DEVMEM_IFINDEX":           "2",
		"DEVMEM_ADDR4":             "192.0.2.1",
		"DEVMEM_ADDR6":             "2001:db8::1",
		"DEVMEM_PEER_NETNS":        "peer",
		"DEVMEM_PEER_IFNAME":       "eth0",
		"DEVMEM_PEER_IFINDEX":      "2",
		"DEVMEM_PEER_ADDR4":        "192.0.2.2",
		"DEVMEM_PEER_ADDR6":        "2001:db8::2",
		"DEVMEM_NSIM_DEBUGFS":      "/sys/kernel/debug/netdevsim/netdevsim1/ports/0",
		"DEVMEM_PEER_NSIM_DEBUGFS": "/sys/kernel/debug/netdevsim/netdevsim2/ports/0",
		"DEVMEM_C_NCDEVMEM":        "/k/ncdevmem",
	}
}

func TestParseEnv(t *testing.T) {
	env := vmEnv()
	got, err := parseEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	want := &Topology{
		IfName: "eth0", IfIndex: 2,
		Addr4: netip.MustParseAddr("192.0.2.1"), Addr6: netip.MustParseAddr("2001:db8::1"),
		PeerNetns: "peer", PeerIfName: "eth0", PeerIfIndex: 2,
		PeerAddr4: netip.MustParseAddr("192.0.2.2"), PeerAddr6: netip.MustParseAddr("2001:db8::2"),
		NsimDebugfs:     "/sys/kernel/debug/netdevsim/netdevsim1/ports/0",
		PeerNsimDebugfs: "/sys/kernel/debug/netdevsim/netdevsim2/ports/0",
		CNcdevmem:       "/k/ncdevmem",
	}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("parseEnv (-want +got):\n%s", diff)
	}
}

func TestParseEnvErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change map[string]string
		want   error // nil: any malformed-environment error
	}{
		{"outside VM", map[string]string{"DEVMEM_VM": ""}, ErrNotInVM},
		{"no topology", map[string]string{"DEVMEM_IFNAME": ""}, ErrNoTopology},
		{"bad index", map[string]string{"DEVMEM_IFINDEX": "x"}, nil},
		{"zero index", map[string]string{"DEVMEM_PEER_IFINDEX": "0"}, nil},
		{"v6 as v4", map[string]string{"DEVMEM_ADDR4": "2001:db8::1"}, nil},
		{"v4 as v6", map[string]string{"DEVMEM_PEER_ADDR6": "192.0.2.2"}, nil},
		{"missing debugfs", map[string]string{"DEVMEM_NSIM_DEBUGFS": ""}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := vmEnv()
			for k, v := range tc.change {
				env[k] = v
			}
			_, err := parseEnv(func(k string) string { return env[k] })
			switch {
			case err == nil:
				t.Fatal("parseEnv succeeded, want an error")
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("parseEnv error %v, want %v", err, tc.want)
			case tc.want == nil && (errors.Is(err, ErrNotInVM) || errors.Is(err, ErrNoTopology)):
				t.Fatalf("parseEnv error %v, want a malformed-environment error", err)
			}
		})
	}
}

// TestRequireSkipsOutsideVM runs where DEVMEM_VM is unset, i.e. on the host.
func TestRequireSkipsOutsideVM(t *testing.T) {
	if InVM() {
		t.Skip("inside the VM Require does not skip")
	}
	var skipped bool
	t.Run("inner", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Require(t)
		t.Error("Require returned outside the VM")
	})
	if !skipped {
		t.Fatal("Require did not skip outside the VM")
	}
}

func TestOpenFDs(t *testing.T) {
	before, err := OpenFDs()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	during, _ := OpenFDs()
	f.Close()
	after, _ := OpenFDs()
	if during != before+1 || after != before {
		t.Fatalf("OpenFDs: before %d, with one more file %d, after closing it %d", before, during, after)
	}
}
