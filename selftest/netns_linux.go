package selftest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"

	"golang.org/x/sys/unix"
)

// InPeer runs fn on a locked OS thread that has joined the peer netns, and
// returns fn's error. Sockets fn creates belong to the peer netns for their
// whole life and may be used from any goroutine afterwards; goroutines fn
// starts do not run in the peer netns.
//
// Should the thread fail to return to its original netns, it stays locked
// and dies with its goroutine rather than run other goroutines in the wrong
// netns.
func InPeer(fn func() error) error {
	topo, err := Env()
	if err != nil {
		return err
	}
	peer, err := os.Open("/run/netns/" + topo.PeerNetns)
	if err != nil {
		return fmt.Errorf("selftest: peer netns: %w", err)
	}
	defer peer.Close()
	return InNetns(peer, fn)
}

// InNetns runs fn on a locked OS thread that joined the netns ns (an open
// /proc/PID/ns/net or /run/netns/NAME file) and returns fn's error. Should
// the thread fail to return to its original netns, it stays locked and dies
// with its goroutine rather than run other goroutines in the wrong netns.
func InNetns(ns *os.File, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		// orig is closed before each send on errc: a deferred Close would
		// race the caller, who may count its descriptors as soon as it
		// has the result (TestInPeerRestoresNetns did, under load).
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			orig.Close()
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns: %w", err)
			return
		}
		ferr := fn()
		err = unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET)
		orig.Close()
		if err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return // the thread stays locked and exits with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// PeerCommand returns a command that runs name in the peer netns, through
// "ip netns exec", which also gives it a /sys showing the peer's devices.
func PeerCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	netns := "peer"
	if topo, err := Env(); err == nil {
		netns = topo.PeerNetns
	}
	return exec.CommandContext(ctx, ipTool(), append([]string{"netns", "exec", netns, name}, args...)...)
}

// DialPeer connects FROM the peer netns: the socket is created there, so
// the connection leaves through the peer's netdevsim port towards address,
// typically a listener on the host side (Addr4/Addr6). The connection is
// usable from any goroutine.
func DialPeer(ctx context.Context, network, address string) (net.Conn, error) {
	var c net.Conn
	err := InPeer(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// ListenPeer listens in the peer netns, e.g. on PeerAddr4, for connections
// from the host side. Accept may be called from any goroutine.
func ListenPeer(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := InPeer(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

func ipTool() string {
	if p, err := exec.LookPath("ip"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "ip"
}
