//go:build !linux

package selftest

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
)

var errNotLinux = errors.New("selftest: network namespaces need Linux")

// InPeer needs Linux.
func InPeer(fn func() error) error { return errNotLinux }

// PeerCommand needs Linux; the command it returns fails to start.
func PeerCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", "peer", name}, args...)...)
}

// DialPeer needs Linux.
func DialPeer(ctx context.Context, network, address string) (net.Conn, error) {
	return nil, errNotLinux
}

// ListenPeer needs Linux.
func ListenPeer(network, address string) (net.Listener, error) { return nil, errNotLinux }

// InNetns needs Linux.
func InNetns(ns *os.File, fn func() error) error { return errNotLinux }
