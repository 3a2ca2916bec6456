//go:build linux

package selftest

import (
	"errors"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// TestPodBPFLoadUnderSignals loads a program while another goroutine
// keeps sending SIGURG (the Go runtime's preemption signal, which it sends
// its threads at any time) to the loading thread. The verifier answers a
// pending signal with EAGAIN ("processed 1 insns"), which once failed the
// pod setup in the VM, and a storm like this one outlasted 5 s of retries
// on CI's machine. loadSchedCls blocks the signals aimed at its thread for
// the call, so none of these loads may even need a retry.
func TestPodBPFLoadUnderSignals(t *testing.T) {
	prog := podForwardProg(netip.MustParsePrefix("2001:db8:2::/64"), 7)
	if fd, err := loadSchedCls("pod_forward", prog); errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) {
		t.Skipf("bpf(2) refused here: %v", err)
	} else if err == nil {
		unix.Close(fd)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := unix.Gettid()
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			unix.Tgkill(os.Getpid(), tid, unix.SIGURG)
		}
	}()
	defer func() { stop.Store(true); wg.Wait() }()
	retries := bpfLoadRetries.Load()
	for i := range 2000 {
		fd, err := loadSchedCls("pod_forward", prog)
		if err != nil {
			t.Fatalf("load %d: %v", i, err)
		}
		unix.Close(fd)
	}
	if n := bpfLoadRetries.Load() - retries; n != 0 {
		t.Errorf("%d loads were interrupted by the signals aimed at the loading thread", n)
	}
}
