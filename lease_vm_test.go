//go:build vmtest

package devmem

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/devmem-go/devmem/netns"
	"github.com/devmem-go/devmem/nic"
	"github.com/devmem-go/devmem/selftest"
	"golang.org/x/sys/unix"
)

// These tests run devmem TCP inside a pod: a netns (owned by a user
// namespace of its own where the test says so) holding the peer end of a
// netkit pair, with an RX queue of the host's netdevsim port leased to it
// and the kernel's NetDrvContEnv BPF redirects (selftest.Pod). Senders sit
// in the peer netns, as the remote host does in the kernel's tests, and
// reach the pod through the host's port.
//
// Code that must run with the pod's user namespace as its own (bind-rx
// from a rootless pod) runs in a child process: this test binary, started
// by nsenter into the pod, in TestVMPodHelper.

// podNIC prepares the host's port for devmem with a nic.Setup (header
// split on, hds-thresh 0; undone at cleanup, after the pod is gone: header
// split cannot go off under a bound queue) and builds a pod.
func podNIC(t *testing.T, opts *selftest.PodOptions) (*selftest.Topology, *nic.Setup, *selftest.Pod) {
	t.Helper()
	topo := selftest.Require(t)
	n, err := nic.Open(topo.IfName)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	setup, err := nic.NewSetup(n, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := setup.Undo(); err != nil {
			t.Errorf("undo the NIC setup: %v", err)
		}
	})
	if err := setup.EnableHeaderSplit(); err != nil {
		t.Fatal(err)
	}
	pod, err := selftest.NewPod(topo, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := pod.Close(); err != nil {
			t.Errorf("pod close: %v", err)
		}
	})
	return topo, setup, pod
}

// podSteer sends the pod's flow on port to the leased physical queue and
// everything else to the queues below it, as configure_nic and
// set_flow_rule in devmem_lib.py do.
func podSteer(t *testing.T, setup *nic.Setup, pod *selftest.Pod, port uint16) {
	t.Helper()
	if err := setup.SteerRSSAway(pod.PhysQueue); err != nil {
		t.Fatal(err)
	}
	if _, err := setup.AddFlowRule(nic.FlowRule{Type: nic.FlowTCP6, Dst: pod.Addr6, DstPort: port, Queue: pod.PhysQueue}); err != nil {
		t.Fatal(err)
	}
}

func hostNetdev(t *testing.T) *Netdev {
	t.Helper()
	nd, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nd.Close() })
	return nd
}

// podNetdev is a netdev client whose socket lives in the pod's netns.
func podNetdev(t *testing.T, pod *selftest.Pod) *Netdev {
	t.Helper()
	var nd *Netdev
	if err := pod.NS.Do(func() error {
		var err error
		nd, err = DialNetdev()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nd.Close() })
	return nd
}

func physQueue(t *testing.T, nd *Netdev, ifindex, id int) *Queue {
	t.Helper()
	q, err := nd.Queue(ifindex, DirectionRX, id)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// waitQueue polls queue-get until cond holds: a netns dies in a
// workqueue, so some teardown is asynchronous.
func waitQueue(t *testing.T, nd *Netdev, ifindex, id int, what string, cond func(*Queue) bool) *Queue {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		q := physQueue(t, nd, ifindex, id)
		if cond(q) {
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %d of ifindex %d: %s did not happen (lease %+v, dmabuf %d)", id, ifindex, what, q.Lease, q.DMABuf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wantKernelError checks that err is the kernel's refusal: a *Error
// matching errno whose extended-ack message is msg.
func wantKernelError(t *testing.T, what string, err error, errno syscall.Errno, msg string) {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Errorf("%s: %v (%T), want a *devmem.Error", what, err, err)
		return
	}
	if !errors.Is(err, errno) || e.Message != msg {
		t.Errorf("%s: errno %d (%v) message %q; want %v, %q", what, e.Errno, err, e.Message, errno, msg)
		return
	}
	t.Logf("%s: %v", what, err)
}

// TestVMLeaseCreateGetTeardown leases a queue with the library's
// queue-create from inside the pod, checks both sides of queue-get, and
// that deleting the netkit pair ends the lease and frees the queue.
func TestVMLeaseCreateGetTeardown(t *testing.T) {
	topo, _, pod := podNIC(t, &selftest.PodOptions{NoLease: true})
	host := hostNetdev(t)
	in := podNetdev(t, pod)
	const phys = 3

	id, err := in.LeaseRXQueue(pod.GuestIfIndex, Lease{Ifindex: topo.IfIndex, Queue: phys, NetnsID: pod.NetnsID})
	if err != nil {
		t.Fatalf("queue-create: %v", err)
	}
	if id != 1 {
		t.Errorf("leased queue id %d on %s, want 1 (netkit's own is 0)", id, pod.GuestIfName)
	}

	// The physical side names the lease holder, in the pod's netns as the
	// init netns knows it.
	hostNS, err := netns.Current()
	if err != nil {
		t.Fatal(err)
	}
	defer hostNS.Close()
	podID, err := hostNS.PeerID(pod.NS)
	if err != nil {
		t.Fatal(err)
	}
	qs, err := host.Queues(topo.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range qs {
		var want *Lease
		if q.Type == DirectionRX && q.ID == phys {
			want = &Lease{Ifindex: pod.GuestIfIndex, Queue: id, Type: DirectionRX, NetnsID: podID}
		}
		if (q.Lease == nil) != (want == nil) || (want != nil && *q.Lease != *want) {
			t.Errorf("%s queue %s %d: lease %+v, want %+v", topo.IfName, q.Type, q.ID, q.Lease, want)
		}
	}
	// The virtual side has the new queue; it reports no lease nest (the
	// kernel fills it only on the physical side).
	vqs, err := in.Queues(pod.GuestIfIndex)
	if err != nil {
		t.Fatal(err)
	}
	rx := 0
	for _, q := range vqs {
		if q.Type == DirectionRX {
			rx++
			if q.Lease != nil {
				t.Errorf("%s queue %d reports lease %+v", pod.GuestIfName, q.ID, q.Lease)
			}
		}
	}
	if rx != 2 {
		t.Errorf("%s has %d RX queues after the lease, want 2", pod.GuestIfName, rx)
	}

	// Teardown: the lease goes with the netkit pair, synchronously.
	if err := pod.DeleteNetkit(); err != nil {
		t.Fatal(err)
	}
	if q := physQueue(t, host, topo.IfIndex, phys); q.Lease != nil || q.DMABuf != 0 {
		t.Errorf("after deleting netkit: queue %d lease %+v dmabuf %d", phys, q.Lease, q.DMABuf)
	}
	// ...and the queue is the host's again.
	buf, err := NewUDMABuf(1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	b, err := BindRX(topo.IfIndex, buf, []int{phys}, nil)
	if err != nil {
		t.Fatalf("bind-rx on the formerly leased queue: %v", err)
	}
	if q := physQueue(t, host, topo.IfIndex, phys); q.DMABuf != b.ID() {
		t.Errorf("queue %d dmabuf %d, want %d", phys, q.DMABuf, b.ID())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestVMLeaseRefusals provokes each refusal of queue-create, and of
// bind-rx around leases, on the real kernel: errno and extack text.
func TestVMLeaseRefusals(t *testing.T) {
	topo, _, pod := podNIC(t, nil) // queue 3 leased to nk_guest queue 1
	in := podNetdev(t, pod)
	host := hostNetdev(t)
	lease := func(q int) Lease { return Lease{Ifindex: topo.IfIndex, Queue: q, NetnsID: pod.NetnsID} }

	_, err := in.LeaseRXQueue(pod.GuestIfIndex, lease(pod.PhysQueue))
	wantKernelError(t, "lease a leased queue", err, unix.EBUSY, "Device queue in use due to queue leasing")

	_, err = in.LeaseRXQueue(pod.GuestIfIndex, lease(2))
	wantKernelError(t, "lease beyond netkit's num-rx-queues", err, unix.EINVAL, "netkit maximum queue limit reached")

	buf, err := NewUDMABuf(1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	bound, err := BindRX(topo.IfIndex, buf, []int{2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = in.LeaseRXQueue(pod.GuestIfIndex, lease(2))
	wantKernelError(t, "lease a bound queue", err, unix.EBUSY, "Device queue in use by memory provider")
	bound.Close()

	_, err = in.LeaseRXQueue(pod.GuestIfIndex, Lease{Ifindex: topo.IfIndex, Queue: 2, NetnsID: 99})
	wantKernelError(t, "unknown netns id", err, unix.ENONET, "")

	_, err = in.LeaseRXQueue(pod.GuestIfIndex, Lease{Ifindex: 9999, Queue: 2, NetnsID: pod.NetnsID})
	wantKernelError(t, "unknown lease ifindex", err, unix.ENODEV, "")

	_, err = in.LeaseRXQueue(9999, lease(2))
	wantKernelError(t, "unknown virtual ifindex", err, unix.ENODEV, "")

	_, err = in.LeaseRXQueue(pod.GuestIfIndex, lease(64))
	wantKernelError(t, "queue out of range", err, unix.ERANGE, "")

	_, err = in.LeaseRXQueue(pod.GuestIfIndex, Lease{Ifindex: topo.IfIndex, Queue: 2, Type: DirectionTX, NetnsID: pod.NetnsID})
	wantKernelError(t, "lease a TX queue", err, unix.EINVAL, "")

	_, err = in.LeaseRXQueue(pod.GuestIfIndex, Lease{Ifindex: pod.HostIfIndex, Queue: 0, NetnsID: pod.NetnsID})
	wantKernelError(t, "lease from a virtual device", err, unix.EINVAL, "Lease device is a virtual device")

	_, err = in.LeaseRXQueue(1, lease(2)) // lo of the pod
	wantKernelError(t, "queue-create on lo", err, unix.EINVAL, "Device does not support queue creation")

	_, err = host.LeaseRXQueue(topo.IfIndex, Lease{Ifindex: topo.IfIndex, Queue: 2, NetnsID: SameNetns})
	wantKernelError(t, "queue-create on the physical device", err, unix.EINVAL, "Device is not a virtual device")

	_, err = host.LeaseRXQueue(pod.HostIfIndex, Lease{Ifindex: topo.IfIndex, Queue: 2, NetnsID: SameNetns})
	wantKernelError(t, "queue-create on netkit's primary", err, unix.EOPNOTSUPP, "netkit can only lease against the peer device")
	if !errors.Is(err, ErrNotSupported) {
		t.Errorf("EOPNOTSUPP refusal does not match ErrNotSupported: %v", err)
	}

	// bind-rx next to a lease: the host cannot bind the leased queue, and
	// netkit's own queue has no DMA device behind it.
	_, err = BindRX(topo.IfIndex, buf, []int{pod.PhysQueue}, nil)
	wantKernelError(t, "bind-rx on the leased physical queue", err, unix.EOPNOTSUPP, "Device doesn't support DMA")
	err = pod.NS.Do(func() error {
		_, err := BindRX(pod.GuestIfIndex, buf, []int{0}, nil)
		return err
	})
	wantKernelError(t, "bind-rx on netkit's own queue 0", err, unix.EOPNOTSUPP, "Device doesn't support DMA")

	// The refusals left the lease as it was.
	if q := physQueue(t, host, topo.IfIndex, pod.PhysQueue); q.Lease == nil || q.Lease.Queue != pod.Queue {
		t.Errorf("lease after the refusals: %+v", q.Lease)
	}
}

// ip6Forwarded is the init netns's Ip6OutForwDatagrams: packets the host's
// IPv6 stack forwarded. The pod's traffic must not be among them: the BPF
// programs move it between eth0 and the netkit pair past the stack.
func ip6Forwarded(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/snmp6")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "Ip6OutForwDatagrams" {
			v, err := strconv.ParseUint(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatal("no Ip6OutForwDatagrams in /proc/net/snmp6")
	return 0
}

// podHelperResult is what a pod helper process reports on its last line.
type podHelperResult struct {
	Bytes, DMABufBytes, LinearBytes, ReadableBytes int64
	Frags, Tokens, Freed                           int
	LeaseErrno                                     int
	LeaseMessage                                   string
	UIDMap                                         string
	Sent                                           [][2]int64
}

// podHelper is a running pod helper process.
type podHelper struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr bytes.Buffer
	done   chan error
}

// startPodHelper starts this test binary inside the pod as TestVMPodHelper
// in mode, with extra environment, and waits for its "POD-READY" line,
// returning the rest of it.
func startPodHelper(t *testing.T, pod *selftest.Pod, mode string, env ...string) (*podHelper, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	h := &podHelper{lines: make(chan string, 16), done: make(chan error, 1)}
	h.cmd = pod.Command(ctx, exe, "-test.run=^TestVMPodHelper$", "-test.count=1", "-test.timeout=4m")
	h.cmd.Env = append(h.cmd.Env, "DEVMEM_POD_HELPER="+mode)
	h.cmd.Env = append(h.cmd.Env, env...)
	h.cmd.Stderr = &h.stderr
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			h.lines <- sc.Text()
		}
		close(h.lines)
		h.done <- h.cmd.Wait()
	}()
	t.Cleanup(func() { h.cmd.Process.Kill() })
	for line := range h.lines {
		if rest, ok := strings.CutPrefix(line, "POD-READY"); ok {
			return h, strings.TrimSpace(rest)
		}
		t.Logf("pod helper: %s", line)
	}
	err = <-h.done
	t.Fatalf("pod helper %s exited before it was ready: %v\n%s", mode, err, h.stderr.String())
	return nil, ""
}

// wait waits for the helper to exit and returns its result line.
func (h *podHelper) wait(t *testing.T) podHelperResult {
	t.Helper()
	var res podHelperResult
	found := false
	for line := range h.lines {
		if rest, ok := strings.CutPrefix(line, "POD-RESULT "); ok {
			if err := json.Unmarshal([]byte(rest), &res); err != nil {
				t.Fatal(err)
			}
			found = true
			continue
		}
		t.Logf("pod helper: %s", line)
	}
	if err := <-h.done; err != nil || !found {
		t.Fatalf("pod helper: %v (result found %v)\n%s", err, found, h.stderr.String())
	}
	return res
}

// TestVMLeaseUserNSRX64MiB receives 64 MiB through a leased queue in a
// process that is root only in the pod's own user namespace, and checks
// every byte where the NIC wrote it.
func TestVMLeaseUserNSRX64MiB(t *testing.T) {
	topo, setup, pod := podNIC(t, &selftest.PodOptions{UserNS: true})
	host := hostNetdev(t)
	port := vmPort()
	podSteer(t, setup, pod, port)
	const total = 64 << 20
	pkts := vmCounter(t, "devmem_rx_pkts")
	fwd := ip6Forwarded(t)

	h, ready := startPodHelper(t, pod, "rx",
		"DEVMEM_POD_HELPER_PORT="+strconv.Itoa(int(port)),
		"DEVMEM_POD_HELPER_TOTAL="+strconv.Itoa(total))
	id, err := strconv.Atoi(ready)
	if err != nil {
		t.Fatalf("helper ready line %q", ready)
	}
	// The pod's binding sits on the physical queue; its page pool is the
	// physical device's.
	if q := physQueue(t, host, topo.IfIndex, pod.PhysQueue); q.DMABuf != uint32(id) {
		t.Errorf("physical queue %d: dmabuf %d, want the pod's binding %d", pod.PhysQueue, q.DMABuf, id)
	}
	pools, err := host.PagePools(topo.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range pools {
		found = found || p.DMABuf == uint32(id)
	}
	if !found {
		t.Errorf("no page pool of %s provides binding %d: %+v", topo.IfName, id, pools)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := selftest.DialPeer(ctx, "tcp6", net.JoinHostPort(pod.Addr6.String(), strconv.Itoa(int(port))))
	if err != nil {
		t.Fatal(err)
	}
	s := newVMStream(total)
	if err := s.send(c, total); err != nil {
		t.Fatal(err)
	}
	c.Close()
	res := h.wait(t)
	t.Logf("pod receiver: %+v", res)
	if res.Bytes != total || res.DMABufBytes != total {
		t.Errorf("pod received %d bytes, %d in dma-buf frags; sent %d", res.Bytes, res.DMABufBytes, total)
	}
	if res.Freed != res.Tokens {
		t.Errorf("tokens: %d received, %d freed", res.Tokens, res.Freed)
	}
	if got := vmCounter(t, "devmem_rx_pkts") - pkts; got == 0 {
		t.Error("devmem_rx_pkts did not grow")
	}
	if n := ip6Forwarded(t) - fwd; n != 0 {
		t.Errorf("the host's IPv6 stack forwarded %d packets: the pod's traffic did not take the BPF path", n)
	}
	// The user namespace is a real one, and cannot lease queues.
	if strings.Fields(res.UIDMap)[2] == "4294967295" {
		t.Errorf("helper ran in the init user namespace (uid_map %q)", res.UIDMap)
	}
	if res.LeaseErrno != int(unix.EPERM) {
		t.Errorf("queue-create from the pod's user namespace: errno %d %q, want EPERM", res.LeaseErrno, res.LeaseMessage)
	}
	// The process is gone: so is its binding, the lease stays.
	q := waitQueue(t, host, topo.IfIndex, pod.PhysQueue, "unbind", func(q *Queue) bool { return q.DMABuf == 0 })
	if q.Lease == nil {
		t.Error("the lease went with the receiver")
	}
}

// TestVMLeaseBindTXFromPod binds a udmabuf for TX on nk_guest from the
// rootless pod and sends ranges of it to the remote; the kernel resolves
// the netkit binding to the leased queue's physical device.
func TestVMLeaseBindTXFromPod(t *testing.T) {
	topo, _, pod := podNIC(t, &selftest.PodOptions{UserNS: true})
	ln, err := selftest.ListenPeer("tcp6", net.JoinHostPort(topo.PeerAddr6.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		b, _ := io.ReadAll(c)
		c.Close()
		got <- b
	}()
	const size = 4 << 20
	fwd := ip6Forwarded(t)
	h, _ := startPodHelper(t, pod, "tx",
		"DEVMEM_POD_HELPER_ADDR="+ln.Addr().String(),
		"DEVMEM_POD_HELPER_TOTAL="+strconv.Itoa(size))
	res := h.wait(t)
	mem := podPattern(size)
	var want []byte
	for _, r := range res.Sent {
		want = append(want, mem[r[0]:r[0]+r[1]]...)
	}
	if len(res.Sent) == 0 {
		t.Fatal("helper sent nothing")
	}
	select {
	case b := <-got:
		if !bytes.Equal(b, want) {
			t.Fatalf("remote got %d bytes, want %d (equal length %v)", len(b), len(want), len(b) == len(want))
		}
		t.Logf("remote got %d bytes sent from device memory in the pod", len(b))
		if n := ip6Forwarded(t) - fwd; n != 0 {
			t.Errorf("the host's IPv6 stack forwarded %d packets: the pod's traffic did not take the BPF path", n)
		}
	case <-time.After(time.Minute):
		t.Fatal("remote did not finish reading")
	}
}

// podPattern is the content of the TX helper's udmabuf.
func podPattern(n int) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(7, 11))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// TestVMLeaseTeardown checks what happens to the lease and the binding
// when the receiving process, the netkit device or the pod's netns goes
// away: no binding left behind, the physical queue usable again.
func TestVMLeaseTeardown(t *testing.T) {
	t.Run("process", func(t *testing.T) {
		topo, _, pod := podNIC(t, &selftest.PodOptions{UserNS: true})
		host := hostNetdev(t)
		h, ready := startPodHelper(t, pod, "hold")
		id, _ := strconv.Atoi(ready)
		if q := physQueue(t, host, topo.IfIndex, pod.PhysQueue); q.DMABuf != uint32(id) || id == 0 {
			t.Fatalf("held binding %q; physical queue dmabuf %d", ready, q.DMABuf)
		}
		h.cmd.Process.Kill()
		<-h.done
		q := waitQueue(t, host, topo.IfIndex, pod.PhysQueue, "unbind after SIGKILL", func(q *Queue) bool { return q.DMABuf == 0 })
		if q.Lease == nil || q.Lease.Queue != pod.Queue {
			t.Errorf("lease after the holder died: %+v", q.Lease)
		}
		// The pod can bind its queue again.
		podBindAgain(t, pod, host, topo)
	})
	t.Run("netkit", func(t *testing.T) {
		topo, _, pod := podNIC(t, nil)
		host := hostNetdev(t)
		buf, err := NewUDMABuf(1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer buf.Close()
		// An RX and a TX binding of the pod are alive when the pair goes.
		var b, tx *Binding
		if err := pod.NS.Do(func() error {
			var err error
			if b, err = BindRX(pod.GuestIfIndex, buf, []int{pod.Queue}, nil); err != nil {
				return err
			}
			tx, err = BindTX(pod.GuestIfIndex, buf)
			return err
		}); err != nil {
			t.Fatalf("bind in the pod: %v", err)
		}
		if q := physQueue(t, host, topo.IfIndex, pod.PhysQueue); q.DMABuf != b.ID() {
			t.Fatalf("physical queue dmabuf %d, want %d", q.DMABuf, b.ID())
		}
		// Deleting the pair while the binding is alive must not wait for
		// it; the kernel uninstalls the binding from the physical queue.
		if err := pod.DeleteNetkit(); err != nil {
			t.Fatal(err)
		}
		if q := physQueue(t, host, topo.IfIndex, pod.PhysQueue); q.Lease != nil || q.DMABuf != 0 {
			t.Errorf("after deleting netkit: lease %+v dmabuf %d", q.Lease, q.DMABuf)
		}
		if err := b.Close(); err != nil {
			t.Errorf("closing the orphaned RX binding: %v", err)
		}
		if err := tx.Close(); err != nil {
			t.Errorf("closing the orphaned TX binding: %v", err)
		}
		hostBindAgain(t, host, topo, pod.PhysQueue)
	})
	t.Run("netns", func(t *testing.T) {
		topo, _, pod := podNIC(t, &selftest.PodOptions{UserNS: true})
		host := hostNetdev(t)
		h, _ := startPodHelper(t, pod, "hold")
		h.cmd.Process.Kill()
		<-h.done
		// Nothing holds the pod's namespaces once the mounts and this
		// process's handles are gone; the netns dies (in a workqueue) and
		// takes nk_guest, the pair and the lease with it.
		if err := pod.DeleteNetns(); err != nil {
			t.Fatal(err)
		}
		waitQueue(t, host, topo.IfIndex, pod.PhysQueue, "lease end with the netns", func(q *Queue) bool { return q.Lease == nil && q.DMABuf == 0 })
		deadline := time.Now().Add(10 * time.Second)
		for {
			if _, err := net.InterfaceByName(pod.HostIfName); err != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still exists after its peer's netns died", pod.HostIfName)
			}
			time.Sleep(20 * time.Millisecond)
		}
		hostBindAgain(t, host, topo, pod.PhysQueue)
	})
}

func podBindAgain(t *testing.T, pod *selftest.Pod, host *Netdev, topo *selftest.Topology) {
	t.Helper()
	buf, err := NewUDMABuf(1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	var b *Binding
	if err := pod.NS.Do(func() error {
		var err error
		b, err = BindRX(pod.GuestIfIndex, buf, []int{pod.Queue}, nil)
		return err
	}); err != nil {
		t.Fatalf("bind-rx in the pod again: %v", err)
	}
	if q := physQueue(t, host, topo.IfIndex, pod.PhysQueue); q.DMABuf != b.ID() {
		t.Errorf("physical queue dmabuf %d, want %d", q.DMABuf, b.ID())
	}
	b.Close()
}

func hostBindAgain(t *testing.T, host *Netdev, topo *selftest.Topology, queue int) {
	t.Helper()
	buf, err := NewUDMABuf(1<<20, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer buf.Close()
	b, err := BindRX(topo.IfIndex, buf, []int{queue}, nil)
	if err != nil {
		t.Fatalf("bind-rx on the physical queue after the lease: %v", err)
	}
	if q := physQueue(t, host, topo.IfIndex, queue); q.DMABuf != b.ID() {
		t.Errorf("physical queue dmabuf %d, want %d", q.DMABuf, b.ID())
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// No page pool of the device still serves the old bindings.
	pools, err := host.PagePools(topo.IfIndex)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pools {
		if p.DMABuf != 0 && p.DetachTime == 0 {
			t.Errorf("attached page pool %d still provided by binding %d", p.ID, p.DMABuf)
		}
	}
}

// podNewReceiver is the one place the pod tests make a Receiver (the
// receive API is changing; adapt here).
func podNewReceiver(conn *net.TCPConn, b *Binding) (*Receiver, error) {
	return NewReceiver(conn, b, nil)
}

// TestVMPodHelper is the pod's side of the tests above, run inside the pod
// by startPodHelper; it does nothing in a normal run.
func TestVMPodHelper(t *testing.T) {
	mode := os.Getenv("DEVMEM_POD_HELPER")
	if mode == "" {
		t.Skip("runs only inside a pod, started by the pod tests")
	}
	pod, ok := selftest.PodFromEnv(os.Getenv)
	if !ok {
		t.Fatal("no DEVMEM_POD_* environment")
	}
	var res podHelperResult
	uidMap, _ := os.ReadFile("/proc/self/uid_map")
	res.UIDMap = strings.TrimSpace(string(uidMap))
	report := func() {
		b, _ := json.Marshal(res)
		fmt.Printf("POD-RESULT %s\n", b)
	}
	envInt := func(k string) int {
		v, err := strconv.Atoi(os.Getenv(k))
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return v
	}
	switch mode {
	case "hold":
		buf, err := NewUDMABuf(1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, err := BindRX(pod.GuestIfIndex, buf, []int{pod.Queue}, nil)
		if err != nil {
			t.Fatalf("bind-rx in the pod: %v", err)
		}
		fmt.Printf("POD-READY %d\n", b.ID())
		io.Copy(io.Discard, os.Stdin) // until killed
	case "rx":
		// Only the init user namespace may lease queues.
		nd, err := DialNetdev()
		if err != nil {
			t.Fatal(err)
		}
		topo := selftest.Require(t)
		_, err = nd.LeaseRXQueue(pod.GuestIfIndex, Lease{Ifindex: topo.IfIndex, Queue: 2, NetnsID: pod.NetnsID})
		var e *Error
		if errors.As(err, &e) {
			res.LeaseErrno, res.LeaseMessage = int(e.Errno), e.Message
		}
		nd.Close()

		total := int64(envInt("DEVMEM_POD_HELPER_TOTAL"))
		x := &vmRX{}
		if x.buf, err = NewUDMABuf(32<<20, nil); err != nil {
			t.Fatal(err)
		}
		if x.mem, err = x.buf.Map(); err != nil {
			t.Fatal(err)
		}
		if x.binding, err = BindRX(pod.GuestIfIndex, x.buf, []int{pod.Queue}, nil); err != nil {
			t.Fatalf("bind-rx on %s queue %d from the pod: %v", pod.GuestIfName, pod.Queue, err)
		}
		ln, err := net.Listen("tcp6", net.JoinHostPort(pod.Addr6.String(), os.Getenv("DEVMEM_POD_HELPER_PORT")))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Printf("POD-READY %d\n", x.binding.ID())
		c, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		conn := c.(*net.TCPConn)
		conn.SetReadDeadline(time.Now().Add(3 * time.Minute))
		r, err := podNewReceiver(conn, x.binding)
		if err != nil {
			t.Fatal(err)
		}
		st := x.receive(t, r, newVMStream(uint64(total)), nil)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if r.Outstanding() != 0 {
			t.Errorf("%d tokens outstanding", r.Outstanding())
		}
		res.Bytes, res.DMABufBytes, res.LinearBytes, res.ReadableBytes = st.bytes, st.dmabufBytes, st.linearBytes, st.readableBytes
		res.Frags, res.Tokens, res.Freed = st.frags, st.tokens, st.freed
		report()
	case "tx":
		total := envInt("DEVMEM_POD_HELPER_TOTAL")
		buf, err := NewUDMABuf(int64(total), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := buf.WriteAt(podPattern(total), 0); err != nil {
			t.Fatal(err)
		}
		b, err := BindTX(pod.GuestIfIndex, buf)
		if err != nil {
			t.Fatalf("bind-tx on %s from the pod: %v", pod.GuestIfName, err)
		}
		fmt.Println("POD-READY")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		// Devmem TX needs the socket bound to the device of the binding.
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, pod.GuestIfName)
			}); err != nil {
				return err
			}
			return serr
		}}
		c, err := d.DialContext(ctx, "tcp6", os.Getenv("DEVMEM_POD_HELPER_ADDR"))
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewSender(c.(*net.TCPConn), b, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range [][2]int64{{0, 11}, {4096, 1 << 20}, {5, 3}, {int64(total) - 100, 100}, {1 << 20, 2 << 20}} {
			if _, err := s.SendContext(ctx, r[0], r[1]); err != nil {
				t.Fatalf("Send(%d, %d): %v", r[0], r[1], err)
			}
			res.Sent = append(res.Sent, r)
		}
		var comps []Completion
		for s.Pending() > 0 {
			if comps, err = s.Completions(ctx, comps); err != nil {
				t.Fatalf("completions: %v", err)
			}
		}
		if len(comps) != len(res.Sent) {
			t.Errorf("%d completions for %d sends", len(comps), len(res.Sent))
		}
		s.Close()
		c.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, c)
		c.Close()
		b.Close()
		report()
	default:
		t.Fatalf("unknown helper mode %q", mode)
	}
}

var (
	podNcdevmemOnce sync.Once
	podNcdevmemBin  string
	podNcdevmemErr  error
)

// podNcdevmem is cmd/ncdevmem of this tree: DEVMEM_NCDEVMEM_BIN if set,
// else built once.
func podNcdevmem(t *testing.T) string {
	t.Helper()
	podNcdevmemOnce.Do(func() {
		if podNcdevmemBin = os.Getenv("DEVMEM_NCDEVMEM_BIN"); podNcdevmemBin != "" {
			return
		}
		dir, err := os.MkdirTemp("", "pod-ncdevmem")
		if err != nil {
			podNcdevmemErr = err
			return
		}
		podNcdevmemBin = filepath.Join(dir, "ncdevmem")
		out, err := exec.Command("go", "build", "-o", podNcdevmemBin, "github.com/devmem-go/devmem/cmd/ncdevmem").CombinedOutput()
		if err != nil {
			podNcdevmemErr = fmt.Errorf("building ncdevmem: %v\n%s", err, out)
		}
	})
	if podNcdevmemErr != nil {
		t.Fatal(podNcdevmemErr)
	}
	return podNcdevmemBin
}

// ncdevmemPattern is what `yes "$(printf '\1\2\3\4\5\6')" | head -c n`
// writes: the stream ncdevmem -v 7 validates.
func ncdevmemPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		if s := i % 7; s == 6 {
			b[i] = '\n'
		} else {
			b[i] = byte(s + 1)
		}
	}
	return b
}

// TestVMLeaseNcdevmem runs our cmd/ncdevmem as devmem_lib.py's
// ncdevmem_rx/ncdevmem_tx do in a netkit environment: in the rootless pod,
// on nk_guest, with -t Q -q 1 -n (bind the leased queue, leave the NIC to
// the host, which set it up).
func TestVMLeaseNcdevmem(t *testing.T) {
	bin := podNcdevmem(t)
	topo, setup, pod := podNIC(t, &selftest.PodOptions{UserNS: true})

	run := func(t *testing.T, payload []byte, wantOK bool) {
		port := vmPort()
		podSteer(t, setup, pod, port)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := pod.Command(ctx, bin, "-l", "-f", pod.GuestIfName, "-s", pod.Addr6.String(), "-p", strconv.Itoa(int(port)),
			"-t", strconv.Itoa(pod.Queue), "-q", "1", "-n", "-v", "7")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		var c net.Conn
		var err error
	dial:
		for deadline := time.Now().Add(time.Minute); ; {
			c, err = selftest.DialPeer(ctx, "tcp6", net.JoinHostPort(pod.Addr6.String(), strconv.Itoa(int(port))))
			if err == nil || time.Now().After(deadline) {
				break
			}
			select {
			case werr := <-exited:
				t.Fatalf("ncdevmem exited before accepting: %v\n%s", werr, out.String())
			case <-time.After(50 * time.Millisecond):
				continue dial
			}
		}
		if err != nil {
			cmd.Process.Kill()
			<-exited
			t.Fatalf("connect to ncdevmem in the pod: %v\n%s", err, out.String())
		}
		_, werr := c.Write(payload)
		c.Close()
		err = <-exited
		t.Logf("ncdevmem: %v\n%s", err, out.String())
		// A failing ncdevmem exits at the first bad byte and closes with
		// the rest of the stream unread, which resets the connection: the
		// write may see that before it has handed over all of the payload.
		if werr != nil && (wantOK || !(errors.Is(werr, syscall.ECONNRESET) || errors.Is(werr, syscall.EPIPE))) {
			t.Fatal(werr)
		}
		if (err == nil) != wantOK {
			t.Fatalf("ncdevmem exit: %v, want success %v", err, wantOK)
		}
	}
	t.Run("rx", func(t *testing.T) { run(t, ncdevmemPattern(1<<20), true) })
	t.Run("rx-corrupt", func(t *testing.T) {
		// ncdevmem must see the bytes: a stream with bad bytes fails it.
		p := ncdevmemPattern(256 << 10)
		for i := 100000; i < 100000+64; i++ {
			p[i] ^= 0xff
		}
		run(t, p, false)
	})
	t.Run("tx", func(t *testing.T) {
		ln, err := selftest.ListenPeer("tcp6", net.JoinHostPort(topo.PeerAddr6.String(), "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		got := make(chan []byte, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				got <- nil
				return
			}
			b, _ := io.ReadAll(c)
			c.Close()
			got <- b
		}()
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := pod.Command(ctx, bin, "-f", pod.GuestIfName, "-s", topo.PeerAddr6.String(), "-p", port, "-t", "0", "-q", "1", "-n")
		cmd.Stdin = strings.NewReader("hello\nworld\n")
		out, err := cmd.CombinedOutput()
		t.Logf("ncdevmem tx: %v\n%s", err, out)
		if err != nil {
			t.Fatal(err)
		}
		select {
		case b := <-got:
			if string(b) != "hello\nworld\n" {
				t.Errorf("remote got %q", b)
			}
		case <-ctx.Done():
			t.Fatal("remote did not finish reading")
		}
	})
}
