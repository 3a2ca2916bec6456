package devmem

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReceiverYieldsToScheduler: a BlockThread receive loop never parks
// (it waits in ppoll between packets, and a socket that always has data
// does not block at all), so to the runtime it is a goroutine that never
// lets go of its P. sysmon then preempts it, or takes its P in the middle
// of a system call, every 10 ms, and after each P it takes it polls again
// every 20 µs for a millisecond and more: thousands of wake-ups a second
// where a C receiver causes none. The Receiver yields to the scheduler
// itself often enough that none of that starts, and sysmon backs off to
// its 10 ms sleeps.
//
// The sender is another process, so that this one does nothing but the
// receive. sysmon is the thread found sleeping in nanosleep(2): the
// runtime's other idle threads sleep in futex(2) or epoll_pwait(2).
func TestReceiverYieldsToScheduler(t *testing.T) {
	if testing.Short() {
		t.Skip("1.3 s of receiving per case")
	}
	for _, c := range []struct {
		name        string
		blockThread bool
		sender      string
	}{
		{"thread/trickle", true, "while :; do printf x; sleep 0.002; done"},
		{"thread/flood", true, "exec cat /dev/zero"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sysmon, calls := receiveFromProcess(t, c.blockThread, c.sender, time.Second)
			t.Logf("%d Recv calls; sysmon woke %d times", calls, sysmon)
			// Without the yields: thousands. With them sysmon sleeps
			// 10 ms at a time: about 100.
			if sysmon > 1000 {
				t.Errorf("sysmon woke %d times in 1 s of receiving: it keeps retaking the receiver's P", sysmon)
			}
		})
	}
}

// receiveFromProcess receives what a shell command writes to the other end
// of a TCP connection, and returns how often sysmon's thread was switched
// in during d (after a warm-up) and the number of Recv calls.
func receiveFromProcess(t *testing.T, blockThread bool, sender string, d time.Duration) (sysmon, calls int64) {
	c, s := tcpPair(t)
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	// The child writes with plain blocking writes (Fd makes the shared
	// file description blocking).
	cmd := exec.Command("sh", "-c", sender)
	cmd.Stdout = os.NewFile(f.Fd(), "socket")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	c.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	r, err := NewReceiver(s, testRXBinding(1), &ReceiverConfig{BlockThread: blockThread})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	stop := make(chan struct{})
	done := make(chan error, 1)
	var n atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			msg, err := r.Recv()
			if err != nil {
				done <- err
				return
			}
			n.Add(1)
			if err := r.Done(msg.Frags); err != nil {
				done <- err
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	before, n0 := threadSwitches(t), n.Load()
	inNanosleep := map[string]int{}
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
		for _, tid := range threadsIn(t, unix.SYS_NANOSLEEP) {
			inNanosleep[tid]++
		}
	}
	after := threadSwitches(t)
	calls = n.Load() - n0
	close(stop)
	cmd.Process.Kill()
	cmd.Wait()
	s.Close()
	if err := <-done; err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		t.Logf("receive ended with %v", err)
	}
	tid, seen := "", 0
	for k, v := range inNanosleep {
		if v > seen {
			tid, seen = k, v
		}
	}
	if tid == "" {
		// sysmon never in nanosleep: asleep for good (futex), so idle.
		return 0, calls
	}
	return after[tid] - before[tid], calls
}

// threadSwitches is each thread's voluntary and involuntary context switches.
func threadSwitches(t *testing.T) map[string]int64 {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/status")
		if err != nil {
			continue // the thread exited
		}
		for _, l := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(l, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				sums[task.Name()] += n
			}
		}
	}
	return sums
}

// threadsIn lists the threads blocked in system call nr right now.
func threadsIn(t *testing.T, nr int) []string {
	t.Helper()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	var in []string
	for _, task := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + task.Name() + "/syscall")
		if err != nil {
			continue
		}
		if f, _, _ := strings.Cut(string(b), " "); f == strconv.Itoa(nr) {
			in = append(in, task.Name())
		}
	}
	return in
}
