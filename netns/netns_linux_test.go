//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needNetns skips unless the test may create network namespaces (root, or
// CAP_SYS_ADMIN, with CONFIG_NET_NS).
func needNetns(t *testing.T) *Handle {
	t.Helper()
	h, err := New()
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// threadNetnsIno is the netns inode of the thread the goroutine runs on
// right now.
func threadNetnsIno() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(threadSelf, &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// watch starts goroutines that keep checking that the thread they run on
// is in the netns with inode want, as every goroutine outside Do must be.
// stop ends them and returns how many foreign sightings there were.
func watch(t *testing.T, n int, want uint64) (stop func() int64) {
	t.Helper()
	var bad atomic.Int64
	var firstErr atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				ino, err := threadNetnsIno()
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				if ino != want {
					bad.Add(1)
				}
				runtime.Gosched()
			}
		}()
	}
	return func() int64 {
		close(done)
		wg.Wait()
		if err, ok := firstErr.Load().(error); ok {
			t.Fatal(err)
		}
		return bad.Load()
	}
}

func TestDoEntersAndRestores(t *testing.T) {
	h := needNetns(t)
	orig, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	if orig.Equal(h) {
		t.Fatal("New returned the current netns")
	}
	var inside *Handle
	err = h.Do(func() error {
		var err error
		inside, err = Current()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer inside.Close()
	if !inside.Equal(h) {
		t.Errorf("inside Do: %v, want %v", inside, h)
	}
	// The function's error comes back as is.
	sentinel := errors.New("sentinel")
	if err := h.Do(func() error { return sentinel }); err != sentinel {
		t.Errorf("Do returned %v, want the function's error", err)
	}
}

// TestDoNoLeakConcurrent runs many Do calls, nested ones included, on
// several goroutines while watchers check that no goroutine outside Do ever
// runs on a thread in another netns.
func TestDoNoLeakConcurrent(t *testing.T) {
	a := needNetns(t)
	b := needNetns(t)
	orig, err := threadNetnsIno()
	if err != nil {
		t.Fatal(err)
	}
	stop := watch(t, 8, orig)
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, other := a, b
			if g%2 == 1 {
				h, other = b, a
			}
			for i := range 200 {
				err := h.Do(func() error {
					if ino, _ := threadNetnsIno(); ino != h.Inode() {
						return fmt.Errorf("in Do: thread in %d, want %d", ino, h.Inode())
					}
					runtime.Gosched() // a locked thread keeps its goroutine
					if i%10 == 0 {
						err := other.Do(func() error {
							if ino, _ := threadNetnsIno(); ino != other.Inode() {
								return fmt.Errorf("nested Do: thread in %d, want %d", ino, other.Inode())
							}
							return nil
						})
						if err != nil {
							return err
						}
						if ino, _ := threadNetnsIno(); ino != h.Inode() {
							return fmt.Errorf("after nested Do: thread in %d, want %d", ino, h.Inode())
						}
					}
					return nil
				})
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if n := stop(); n != 0 {
		t.Errorf("%d sightings of a goroutine outside Do on a thread in a foreign netns", n)
	}
}

// TestDoRestoreFailureDiscardsThread makes the restoring setns fail and
// checks that Do reports it and that the thread, still in the foreign
// netns, exits instead of running other goroutines.
func TestDoRestoreFailureDiscardsThread(t *testing.T) {
	h := needNetns(t)
	orig, err := threadNetnsIno()
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	setns = func(fd int, nstype int) error {
		if calls.Add(1) == 2 { // the restore
			return unix.EPERM
		}
		return unix.Setns(fd, nstype)
	}
	defer func() { setns = unix.Setns }()

	stop := watch(t, 4, orig)
	var tid int
	err = h.Do(func() error {
		tid = unix.Gettid()
		return nil
	})
	if err == nil || !errors.Is(err, unix.EPERM) {
		t.Fatalf("Do with a failing restore returned %v, want an error matching EPERM", err)
	}
	t.Logf("Do: %v", err)
	// The runtime terminates a thread whose goroutine exits locked, except
	// the main thread, which it wedges (parks for good: on Linux the
	// process would otherwise become a zombie). Either way no goroutine
	// runs on it again; the watchers check that below.
	if tid == os.Getpid() {
		t.Logf("Do ran on the main thread, which the runtime wedges instead of terminating")
		time.Sleep(50 * time.Millisecond)
		if n := stop(); n != 0 {
			t.Errorf("%d sightings of a goroutine on a thread in a foreign netns", n)
		}
		return
	}
	task := "/proc/self/task/" + strconv.Itoa(tid)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(task); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d, left in the foreign netns, still exists", tid)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	// Keep the scheduler busy a little longer: no goroutine may land on a
	// thread in h.
	time.Sleep(50 * time.Millisecond)
	if n := stop(); n != 0 {
		t.Errorf("%d sightings of a goroutine on a thread in a foreign netns", n)
	}
}

func TestDoPanicAndGoexit(t *testing.T) {
	h := needNetns(t)
	orig, err := threadNetnsIno()
	if err != nil {
		t.Fatal(err)
	}
	stop := watch(t, 4, orig)
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the function's panic value", r)
			}
		}()
		h.Do(func() error { panic("boom") })
		t.Error("Do returned after a panic")
	}()
	err = h.Do(func() error {
		runtime.Goexit()
		return nil
	})
	if err == nil {
		t.Error("Do after runtime.Goexit returned nil")
	}
	if n := stop(); n != 0 {
		t.Errorf("%d sightings of a goroutine on a thread in a foreign netns", n)
	}
}

// setLoUp brings the loopback device of the calling thread's netns up.
func setLoUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return err
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}

func netnsCookie(t *testing.T, fd int) uint64 {
	t.Helper()
	v, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		t.Skipf("SO_NETNS_COOKIE: %v", err)
	}
	return v
}

// TestSocketsKeepTheirNetns creates a listener, a connection and a raw
// socket in a new netns, uses them from other goroutines, and checks that
// they belong to it: the listener is unreachable from the original netns,
// and their SO_NETNS_COOKIE matches.
func TestSocketsKeepTheirNetns(t *testing.T) {
	h := needNetns(t)
	if err := h.Do(setLoUp); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ln, err := h.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()

	// From the original netns nobody listens there.
	if c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr); err == nil {
		c.Close()
		t.Fatalf("dial %s from the original netns succeeded; the listener is not in the new netns", addr)
	}

	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer c.Close()
		_, err = io.Copy(c, c) // echo
		accepted <- err
	}()
	c, err := h.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // used from another goroutine than the one that made it
		defer wg.Done()
		c.Write([]byte("hello from another goroutine"))
		c.(*net.TCPConn).CloseWrite()
	}()
	got, err := io.ReadAll(c)
	wg.Wait()
	c.Close()
	if err != nil || string(got) != "hello from another goroutine" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}

	// Cookies: a raw socket of h and the listener share h's, which differs
	// from the original netns's.
	fd, err := h.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != nil || fl&unix.FD_CLOEXEC == 0 {
		t.Errorf("Socket's fd is not close-on-exec (%#x, %v)", fl, err)
	}
	hostFd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(hostFd)
	rc, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var lnCookie uint64
	rc.Control(func(lfd uintptr) { lnCookie = netnsCookie(t, int(lfd)) })
	if got, host := netnsCookie(t, fd), netnsCookie(t, hostFd); got != lnCookie || got == host {
		t.Errorf("netns cookies: Socket %d, listener %d, original netns %d", got, lnCookie, host)
	}

	// Netlink: the route dump of a socket made in Do lists h's devices.
	var ifs []net.Interface
	if err := h.Do(func() error {
		var err error
		ifs, err = net.Interfaces()
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// A new netns has lo, plus the down fallback devices of any tunnel
	// driver built in (sit0, ip6tnl0, tunl0, ...); the caller's netns has
	// up devices besides lo.
	hasLo := false
	for _, i := range ifs {
		switch {
		case i.Name == "lo":
			hasLo = true
		case i.Flags&net.FlagUp != 0:
			t.Errorf("interfaces of the new netns: %v, want lo and only down fallback devices", ifs)
		}
	}
	if !hasLo {
		t.Errorf("interfaces of the new netns: %v, no lo", ifs)
	}
	nl, err := h.DialGenetlink(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	if _, err := nl.GetFamily("nlctrl"); err != nil {
		t.Errorf("generic netlink in the new netns: %v", err)
	}
}

func TestClosedHandle(t *testing.T) {
	h := needNetns(t)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := h.Do(func() error { return nil }); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Do on a closed handle: %v, want net.ErrClosed", err)
	}
	if _, err := h.Socket(unix.AF_INET, unix.SOCK_DGRAM, 0); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Socket on a closed handle: %v, want net.ErrClosed", err)
	}
	if h.Fd() != -1 {
		t.Errorf("Fd of a closed handle: %d", h.Fd())
	}
	var zero Handle
	if err := zero.Do(func() error { return nil }); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Do on a zero Handle: %v, want net.ErrClosed", err)
	}
}

// TestCloseRacesDo closes handles while other goroutines run Do on them:
// each Do either runs in the netns or fails with net.ErrClosed.
func TestCloseRacesDo(t *testing.T) {
	needNetns(t)
	orig, err := threadNetnsIno()
	if err != nil {
		t.Fatal(err)
	}
	stop := watch(t, 4, orig)
	for range 20 {
		h, err := New()
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 20 {
					err := h.Do(func() error {
						if ino, _ := threadNetnsIno(); ino != h.Inode() {
							return fmt.Errorf("thread in %d, want %d", ino, h.Inode())
						}
						return nil
					})
					if err != nil && !errors.Is(err, net.ErrClosed) {
						t.Error(err)
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.Gosched()
			h.Close()
		}()
		wg.Wait()
	}
	if n := stop(); n != 0 {
		t.Errorf("%d sightings of a goroutine on a thread in a foreign netns", n)
	}
}

func TestFromPathRefusesOtherFiles(t *testing.T) {
	for _, p := range []string{"/proc/self/ns/user", "/proc/self/ns/mnt", "/dev/null"} {
		h, err := FromPath(p)
		if err == nil {
			h.Close()
			t.Errorf("FromPath(%s) succeeded", p)
			continue
		}
		if !errors.Is(err, ErrNotNetns) {
			t.Errorf("FromPath(%s): %v, want ErrNotNetns", p, err)
		}
	}
	if _, err := FromPath("/nonexistent/netns"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FromPath of a missing file: %v, want os.ErrNotExist", err)
	}
	for _, name := range []string{"", ".", "..", "a/b", "../../proc/self/ns/net"} {
		if h, err := FromName(name); err == nil {
			h.Close()
			t.Errorf("FromName(%q) succeeded", name)
		}
	}
	if _, err := FromPid(0); err == nil {
		t.Error("FromPid(0) succeeded")
	}
	// A child forked from an ordinary thread is in the netns every
	// goroutine runs in. (FromPid(os.Getpid()) names the main thread's,
	// which an earlier failed restore may have wedged elsewhere.)
	child := exec.Command("sleep", "10")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { child.Process.Kill(); child.Wait() }()
	byPid, err := FromPid(child.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	defer byPid.Close()
	cur, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	defer cur.Close()
	if !byPid.Equal(cur) {
		t.Errorf("FromPid(child) %v != Current %v", byPid, cur)
	}
	if want := fmt.Sprintf("net:[%d]", cur.Inode()); cur.String() != want {
		t.Errorf("String: %s, want %s", cur, want)
	}
	link, _ := os.Readlink(threadSelf)
	if link != cur.String() {
		t.Errorf("String %s, /proc says %s", cur, link)
	}
}

func TestNamedAndPeerID(t *testing.T) {
	needNetns(t)
	name := fmt.Sprintf("devmem-netns-test-%d", os.Getpid())
	h, err := NewNamed(name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	deleted := false
	defer func() {
		if !deleted {
			DeleteNamed(name)
		}
	}()
	if _, err := NewNamed(name); !errors.Is(err, os.ErrExist) {
		t.Errorf("NewNamed of an existing name: %v, want os.ErrExist", err)
	}
	byName, err := FromName(name)
	if err != nil {
		t.Fatal(err)
	}
	defer byName.Close()
	if !byName.Equal(h) {
		t.Errorf("FromName %v, NewNamed %v", byName, h)
	}

	orig, err := Current()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	id, err := h.PeerID(orig)
	if err != nil {
		t.Fatal(err)
	}
	if id < 0 {
		t.Fatalf("PeerID: %d", id)
	}
	if again, err := h.PeerID(orig); err != nil || again != id {
		t.Errorf("second PeerID: %d, %v; first %d", again, err, id)
	}
	if err := h.SetPeerID(orig, id+1); !errors.Is(err, unix.EEXIST) {
		t.Errorf("SetPeerID of a peer with an id: %v, want EEXIST", err)
	}
	other := needNetns(t)
	if err := h.SetPeerID(other, id); !errors.Is(err, unix.EEXIST) {
		t.Errorf("SetPeerID with a taken id: %v, want EEXIST", err)
	}
	if err := h.SetPeerID(other, 42); err != nil {
		t.Fatal(err)
	}
	if got, err := h.PeerID(other); err != nil || got != 42 {
		t.Errorf("PeerID after SetPeerID 42: %d, %v", got, err)
	}

	if err := DeleteNamed(name); err != nil {
		t.Fatal(err)
	}
	deleted = true
	if _, err := FromName(name); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("FromName after DeleteNamed: %v, want os.ErrNotExist", err)
	}
	// The handles still hold the namespace.
	if err := h.Do(func() error { return nil }); err != nil {
		t.Errorf("Do on a deleted named netns still held open: %v", err)
	}
}
