//go:build !linux

package netns

import (
	"context"
	"net"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// Current returns ErrNotSupported outside Linux.
func Current() (*Handle, error) { return nil, ErrNotSupported }

// FromPid returns ErrNotSupported outside Linux.
func FromPid(pid int) (*Handle, error) { return nil, ErrNotSupported }

// FromName returns ErrNotSupported outside Linux.
func FromName(name string) (*Handle, error) { return nil, ErrNotSupported }

// FromPath returns ErrNotSupported outside Linux.
func FromPath(path string) (*Handle, error) { return nil, ErrNotSupported }

// New returns ErrNotSupported outside Linux.
func New() (*Handle, error) { return nil, ErrNotSupported }

// NewNamed returns ErrNotSupported outside Linux.
func NewNamed(name string) (*Handle, error) { return nil, ErrNotSupported }

// DeleteNamed returns ErrNotSupported outside Linux.
func DeleteNamed(name string) error { return ErrNotSupported }

// Do returns ErrNotSupported outside Linux.
func (h *Handle) Do(fn func() error) error { return ErrNotSupported }

// Socket returns ErrNotSupported outside Linux.
func (h *Handle) Socket(domain, typ, proto int) (int, error) { return -1, ErrNotSupported }

// Listen returns ErrNotSupported outside Linux.
func (h *Handle) Listen(ctx context.Context, network, address string) (net.Listener, error) {
	return nil, ErrNotSupported
}

// ListenPacket returns ErrNotSupported outside Linux.
func (h *Handle) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	return nil, ErrNotSupported
}

// Dial returns ErrNotSupported outside Linux.
func (h *Handle) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	return nil, ErrNotSupported
}

// DialWith returns ErrNotSupported outside Linux.
func (h *Handle) DialWith(ctx context.Context, d *net.Dialer, network, address string) (net.Conn, error) {
	return nil, ErrNotSupported
}

// PeerID returns ErrNotSupported outside Linux.
func (h *Handle) PeerID(peer *Handle) (int, error) { return -1, ErrNotSupported }

// SetPeerID returns ErrNotSupported outside Linux.
func (h *Handle) SetPeerID(peer *Handle, id int) error { return ErrNotSupported }

// DialNetlink returns ErrNotSupported outside Linux.
func (h *Handle) DialNetlink(family int, cfg *netlink.Config) (*netlink.Conn, error) {
	return nil, ErrNotSupported
}

// DialGenetlink returns ErrNotSupported outside Linux.
func (h *Handle) DialGenetlink(cfg *netlink.Config) (*genetlink.Conn, error) {
	return nil, ErrNotSupported
}
