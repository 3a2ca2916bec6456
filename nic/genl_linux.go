//go:build linux

package nic

import (
	"errors"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/devmem-go/devmem/internal/errs"
)

// genlConn is the part of *genetlink.Conn this package uses; tests serve a
// fake kernel through it.
type genlConn interface {
	Execute(m genetlink.Message, family uint16, flags netlink.HeaderFlags) ([]genetlink.Message, error)
	GetFamily(name string) (genetlink.Family, error)
	Close() error
}

// dialGenl opens a generic netlink socket (close-on-exec, by
// mdlayher/socket) with extended acknowledgements on.
var dialGenl = func() (genlConn, error) {
	return genetlink.Dial(&netlink.Config{Strict: true})
}

// genlFamily is a resolved generic netlink family.
type genlFamily struct {
	id      uint16
	version uint8
}

// resolveFamily looks family name up; a missing family is ErrNotSupported
// naming version, the first kernel that has it.
func resolveFamily(c genlConn, name, op, version string) (genlFamily, error) {
	f, err := c.GetFamily(name)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return genlFamily{}, errs.NotSupportedBefore(op, "generic netlink family "+name, version)
		}
		return genlFamily{}, nlError(op, err)
	}
	return genlFamily{id: f.ID, version: f.Version}, nil
}

// nlError turns the error of a netlink request into an *Error carrying the
// errno and the kernel's extended-ack message.
func nlError(op string, err error) error { return errs.FromNetlink(op, err) }

// decode runs fn for each attribute of b.
func decode(b []byte, fn func(ad *netlink.AttributeDecoder)) error {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return err
	}
	for ad.Next() {
		fn(ad)
	}
	return ad.Err()
}
