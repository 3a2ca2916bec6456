package devmem

import (
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
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
// its 10 ms sleeps. An idle connection too: its receiver waits in polls of
// up to 8 ms, each a system call sysmon could take the P from.
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
		maxSysmon   int64
	}{
		// Without the yields: thousands.
		{"thread/trickle", true, "while :; do printf x; sleep 0.002; done", 1000},
		{"thread/flood", true, "exec cat /dev/zero", 1000},
		{"thread/idle", true, "exec sleep 100", 1000},
		// Waits of 9 ms, each starting up to 5 ms after the last yield:
		// 600-1100 while a poll could outlast the runtime's 10 ms.
		{"thread/trickle9ms", true, "while :; do printf x; sleep 0.009; done", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			sysmon, calls := receiveFromProcess(t, c.blockThread, c.sender, time.Second)
			t.Logf("%d Recv calls; sysmon woke %d times", calls, sysmon)
			// With them sysmon sleeps 10 ms at a time: about 100.
			if sysmon > c.maxSysmon {
				t.Errorf("sysmon woke %d times in 1 s of receiving: it keeps retaking the receiver's P", sysmon)
			}
		})
	}
}

// TestYieldWakesNoThread: the receive loop's yield gives up the P without
// waking another thread. runtime.Gosched wakes an idle P's thread (wakep),
// which looks for work, finds none and sleeps again: a voluntary context
// switch per yield and tens of µs of futex wake-up. goyield queues the
// goroutine on its own P and wakes nobody. Gosched does not wake a thread
// every time (in some rounds the runtime has none to wake), so rounds where
// it did are compared; the rest of the count is sysmon's sleeps.
func TestYieldWakesNoThread(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("needs an idle P to wake: GOMAXPROCS < 2")
	}
	perYield := func(yield func()) float64 {
		const n = 200
		yield() // the idle P's thread exists and sleeps
		time.Sleep(time.Millisecond)
		before := voluntarySwitches(t)
		for range n {
			// Work between yields, as a receive loop has: long enough
			// for a woken thread to go back to sleep.
			spin(time.Millisecond)
			yield()
		}
		return float64(voluntarySwitches(t)-before) / n
	}
	ours := receiverYield()
	compared := 0
	for range 5 {
		gosched, recv := perYield(runtime.Gosched), perYield(ours)
		t.Logf("voluntary context switches per yield: runtime.Gosched %.2f, the receiver's %.2f", gosched, recv)
		if gosched < 0.8 {
			continue
		}
		compared++
		if recv > gosched/2 {
			t.Errorf("the receiver's yield caused %.2f voluntary context switches per call, runtime.Gosched %.2f: it wakes a thread too", recv, gosched)
		}
	}
	if compared == 0 {
		t.Skip("runtime.Gosched woke no thread per call in any round: nothing to compare")
	}
}

// BenchmarkYield is what one yield of the receive loop costs against
// runtime.Gosched, with 1 ms of work between yields as a receive loop has
// (the yield comes every 5 ms there): ns/op is the time inside the yield
// alone, vcsw/op the process's voluntary context switches per yield (a
// woken thread going back to sleep; sysmon's sleeps are in both).
func BenchmarkYield(b *testing.B) {
	for _, bc := range []struct {
		name  string
		yield func()
	}{
		{"Gosched", runtime.Gosched},
		{"receiver", receiverYield()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var in time.Duration
			sw := voluntarySwitches(b)
			for b.Loop() {
				spin(time.Millisecond)
				t0 := time.Now()
				bc.yield()
				in += time.Since(t0)
			}
			b.ReportMetric(float64(in.Nanoseconds())/float64(b.N), "ns/op")
			b.ReportMetric(float64(voluntarySwitches(b)-sw)/float64(b.N), "vcsw/op")
		})
	}
}

// receiverYield is the receive loop's yield, made due at every call.
func receiverYield() func() {
	var s recvSys
	return func() { s.yieldedAt = -yieldEvery; s.yield() }
}

// spin keeps the CPU busy for d.
func spin(d time.Duration) {
	for st := time.Now(); time.Since(st) < d; {
	}
}

func voluntarySwitches(t testing.TB) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return int64(ru.Nvcsw)
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
