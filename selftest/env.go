package selftest

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
)

// Topology describes the VM's network as vmexec set it up.
type Topology struct {
	IfName  string     // DEVMEM_IFNAME: netdevsim port in the init netns
	IfIndex int        // DEVMEM_IFINDEX
	Addr4   netip.Addr // DEVMEM_ADDR4, on IfName with prefix /24
	Addr6   netip.Addr // DEVMEM_ADDR6, on IfName with prefix /64

	PeerNetns   string     // DEVMEM_PEER_NETNS: name under /run/netns
	PeerIfName  string     // DEVMEM_PEER_IFNAME: netdevsim port in PeerNetns
	PeerIfIndex int        // DEVMEM_PEER_IFINDEX (an index in PeerNetns)
	PeerAddr4   netip.Addr // DEVMEM_PEER_ADDR4
	PeerAddr6   netip.Addr // DEVMEM_PEER_ADDR6

	// NsimDebugfs is the debugfs directory of IfName's netdevsim port
	// (DEVMEM_NSIM_DEBUGFS), where the devmem counters and test knobs live.
	NsimDebugfs string
	// PeerNsimDebugfs is the same for PeerIfName (DEVMEM_PEER_NSIM_DEBUGFS);
	// debugfs is not per-netns, so it is reachable from the init netns.
	PeerNsimDebugfs string
	// CNcdevmem is the path of the kernel's own C ncdevmem
	// (DEVMEM_C_NCDEVMEM), or "" when the kernel build did not make one.
	CNcdevmem string
}

// ErrNotInVM is returned by [Env] outside the test VM.
var ErrNotInVM = errors.New("selftest: not running in the devmem test VM (DEVMEM_VM is not 1)")

// ErrNoTopology is returned by [Env] in a VM started with vmexec -no-topology.
var ErrNoTopology = errors.New("selftest: the VM has no netdevsim topology (vmexec -no-topology)")

// RunHint says how to run VM tests; skip messages and errors carry it.
const RunHint = `run with: make vmtest (or make test), or: go test -tags vmtest -exec "go run github.com/devmem-go/devmem/selftest/vmexec" ./...`

var envOnce = sync.OnceValues(func() (*Topology, error) { return parseEnv(os.Getenv) })

// Env returns the topology described by the environment. The result is
// computed once per process.
func Env() (*Topology, error) {
	return envOnce()
}

// Require returns the topology, or skips the test with instructions when
// it does not run in the test VM. A VM whose environment is malformed fails
// the test instead: that is a harness bug, not a reason to skip.
func Require(t testing.TB) *Topology {
	t.Helper()
	topo, err := Env()
	switch {
	case errors.Is(err, ErrNotInVM):
		t.Skip("needs the devmem test VM; " + RunHint)
	case errors.Is(err, ErrNoTopology):
		t.Skip("needs the netdevsim topology, but vmexec ran with -no-topology")
	case err != nil:
		t.Fatal(err)
	}
	return topo
}

// InVM reports whether the process runs in the test VM.
func InVM() bool { return os.Getenv("DEVMEM_VM") == "1" }

func parseEnv(getenv func(string) string) (*Topology, error) {
	if getenv("DEVMEM_VM") != "1" {
		return nil, ErrNotInVM
	}
	if getenv("DEVMEM_IFNAME") == "" {
		return nil, ErrNoTopology
	}
	p := envParser{getenv: getenv}
	t := &Topology{
		IfName:          p.str("DEVMEM_IFNAME"),
		IfIndex:         p.index("DEVMEM_IFINDEX"),
		Addr4:           p.addr("DEVMEM_ADDR4", true),
		Addr6:           p.addr("DEVMEM_ADDR6", false),
		PeerNetns:       p.str("DEVMEM_PEER_NETNS"),
		PeerIfName:      p.str("DEVMEM_PEER_IFNAME"),
		PeerIfIndex:     p.index("DEVMEM_PEER_IFINDEX"),
		PeerAddr4:       p.addr("DEVMEM_PEER_ADDR4", true),
		PeerAddr6:       p.addr("DEVMEM_PEER_ADDR6", false),
		NsimDebugfs:     p.str("DEVMEM_NSIM_DEBUGFS"),
		PeerNsimDebugfs: getenv("DEVMEM_PEER_NSIM_DEBUGFS"),
		CNcdevmem:       getenv("DEVMEM_C_NCDEVMEM"),
	}
	if err := errors.Join(p.errs...); err != nil {
		return nil, fmt.Errorf("selftest: malformed VM environment: %w", err)
	}
	return t, nil
}

type envParser struct {
	getenv func(string) string
	errs   []error
}

func (p *envParser) str(name string) string {
	v := p.getenv(name)
	if v == "" {
		p.errs = append(p.errs, fmt.Errorf("%s is not set", name))
	}
	return v
}

func (p *envParser) index(name string) int {
	v := p.str(name)
	if v == "" {
		return 0
	}
	i, err := strconv.Atoi(v)
	if err != nil || i <= 0 {
		p.errs = append(p.errs, fmt.Errorf("%s=%q is not an interface index", name, v))
		return 0
	}
	return i
}

func (p *envParser) addr(name string, want4 bool) netip.Addr {
	v := p.str(name)
	if v == "" {
		return netip.Addr{}
	}
	a, err := netip.ParseAddr(v)
	if err != nil || a.Is4() != want4 {
		family := "IPv6"
		if want4 {
			family = "IPv4"
		}
		p.errs = append(p.errs, fmt.Errorf("%s=%q is not an %s address", name, v, family))
		return netip.Addr{}
	}
	return a
}
