//go:build vmtest

package selftest

import (
	"context"
	"io"
	"net"
	"os"
	osexec "os/exec"
	"strings"
	"testing"
	"time"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/netns"
)

// TestVMPodFromVmexec checks the pod of vmexec -pod (run with
// -exec "vmexec -pod userns" or "-pod netns"): the lease as queue-get
// reports it, the user namespace, and TCP from the remote into the pod.
func TestVMPodFromVmexec(t *testing.T) {
	topo := Require(t)
	pod, ok := PodFromEnv(os.Getenv)
	if !ok {
		t.Skip("vmexec ran without -pod")
	}
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	q, err := nd.Queue(topo.IfIndex, devmem.DirectionRX, pod.PhysQueue)
	if err != nil {
		t.Fatal(err)
	}
	if q.Lease == nil || q.Lease.Ifindex != pod.GuestIfIndex || q.Lease.Queue != pod.Queue {
		t.Errorf("%s queue %d: lease %+v, want %s (ifindex %d) queue %d", topo.IfName, pod.PhysQueue, q.Lease, pod.GuestIfName, pod.GuestIfIndex, pod.Queue)
	}
	ns, err := netns.FromPath(pod.Netns)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if pod.UserNS != "" {
		// The netns's owner is the pod's user namespace (NS_GET_USERNS
		// is not in x/sys; compare via a process started in the pod).
		out, err := run(t, "nsenter", "--user="+pod.UserNS, "--net="+pod.Netns, "--", "cat", "/proc/self/uid_map")
		if err != nil {
			t.Fatal(err)
		}
		if f := strings.Fields(out); len(f) != 3 || f[2] != "1" {
			t.Errorf("uid_map in the pod's user namespace: %q, want root only", out)
		}
	}
	ln, err := ns.Listen(context.Background(), "tcp6", net.JoinHostPort(pod.Addr6.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	c, err := DialPeer(ctx, "tcp6", net.JoinHostPort(pod.Addr6.String(), port))
	if err != nil {
		t.Fatal(err)
	}
	go func() { io.WriteString(c, "into the pod"); c.Close() }()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	b, err := io.ReadAll(s)
	if err != nil || string(b) != "into the pod" {
		t.Errorf("pod read %q, %v", b, err)
	}
}

func run(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, err := osexec.Command(name, args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}
