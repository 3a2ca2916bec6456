//go:build linux

package devmem

import (
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/devmem-go/devmem/internal/errs"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The netdev generic netlink family (include/uapi/linux/netdev.h). x/sys does
// not carry it.
const (
	_NETDEV_FAMILY_NAME = "netdev"

	_NETDEV_CMD_PAGE_POOL_GET = 5
	_NETDEV_CMD_QUEUE_GET     = 10
	_NETDEV_CMD_QSTATS_GET    = 12
	_NETDEV_CMD_BIND_RX       = 13
	_NETDEV_CMD_BIND_TX       = 15

	_NETDEV_QUEUE_TYPE_RX = 0
	_NETDEV_QUEUE_TYPE_TX = 1

	_NETDEV_QSTATS_SCOPE_QUEUE = 1

	_NETDEV_A_PAGE_POOL_ID           = 1
	_NETDEV_A_PAGE_POOL_IFINDEX      = 2
	_NETDEV_A_PAGE_POOL_NAPI_ID      = 3
	_NETDEV_A_PAGE_POOL_INFLIGHT     = 4
	_NETDEV_A_PAGE_POOL_INFLIGHT_MEM = 5
	_NETDEV_A_PAGE_POOL_DETACH_TIME  = 6
	_NETDEV_A_PAGE_POOL_DMABUF       = 7
	_NETDEV_A_PAGE_POOL_IO_URING     = 8

	_NETDEV_A_QUEUE_ID       = 1
	_NETDEV_A_QUEUE_IFINDEX  = 2
	_NETDEV_A_QUEUE_TYPE     = 3
	_NETDEV_A_QUEUE_NAPI_ID  = 4
	_NETDEV_A_QUEUE_DMABUF   = 5
	_NETDEV_A_QUEUE_IO_URING = 6
	_NETDEV_A_QUEUE_XSK      = 7

	_NETDEV_A_QSTATS_IFINDEX    = 1
	_NETDEV_A_QSTATS_QUEUE_TYPE = 2
	_NETDEV_A_QSTATS_QUEUE_ID   = 3
	_NETDEV_A_QSTATS_SCOPE      = 4

	_NETDEV_A_DMABUF_IFINDEX      = 1
	_NETDEV_A_DMABUF_QUEUES       = 2
	_NETDEV_A_DMABUF_FD           = 3
	_NETDEV_A_DMABUF_ID           = 4
	_NETDEV_A_DMABUF_RX_PAGE_SIZE = 5
)

// genlConn is the part of *genetlink.Conn this package uses; tests swap in a
// fake kernel through dialGenl.
type genlConn interface {
	Execute(m genetlink.Message, family uint16, flags netlink.HeaderFlags) ([]genetlink.Message, error)
	Close() error
}

// dialGenl opens a generic netlink socket. mdlayher/socket opens it with
// SOCK_CLOEXEC, so a binding's socket is never inherited by a child process
// (which would keep the binding alive after Close). Strict turns on extended
// acknowledgements (the kernel's error text) and strict dump checking.
var dialGenl = func() (genlConn, error) {
	return genetlink.Dial(&netlink.Config{Strict: true})
}

// genlFamily is a resolved generic netlink family.
type genlFamily struct {
	id      uint16
	version uint8
	// cmds holds the commands the kernel lists for the family; nil when it
	// listed none (then every command is tried).
	cmds map[uint8]bool
}

// has reports whether the kernel knows command cmd.
func (f genlFamily) has(cmd uint8) bool { return f.cmds == nil || f.cmds[cmd] }

// resolveFamily asks nlctrl for family name, including its command list, so
// that a command an older kernel lacks is reported as such instead of as a
// bare EOPNOTSUPP. A missing family is ErrNotSupported naming version, the
// first kernel that has it.
func resolveFamily(c genlConn, name, op, version string) (genlFamily, error) {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.CTRL_ATTR_FAMILY_NAME, name)
	b, err := ae.Encode()
	if err != nil {
		return genlFamily{}, err
	}
	msgs, err := c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: unix.CTRL_CMD_GETFAMILY, Version: 1},
		Data:   b,
	}, unix.GENL_ID_CTRL, netlink.Request)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return genlFamily{}, errNotSupportedBefore(op, "generic netlink family "+name, version)
		}
		return genlFamily{}, nlError(op, err)
	}
	if len(msgs) != 1 {
		return genlFamily{}, &Error{Op: op, Err: fmt.Errorf("nlctrl: %d replies to get-family, want 1", len(msgs))}
	}
	var f genlFamily
	ad, err := netlink.NewAttributeDecoder(msgs[0].Data)
	if err != nil {
		return genlFamily{}, &Error{Op: op, Err: err}
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.CTRL_ATTR_FAMILY_ID:
			f.id = ad.Uint16()
		case unix.CTRL_ATTR_VERSION:
			f.version = uint8(ad.Uint32())
		case unix.CTRL_ATTR_OPS:
			f.cmds = make(map[uint8]bool)
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					nad.Nested(func(oad *netlink.AttributeDecoder) error {
						for oad.Next() {
							if oad.Type() == unix.CTRL_ATTR_OP_ID {
								f.cmds[uint8(oad.Uint32())] = true
							}
						}
						return nil
					})
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return genlFamily{}, &Error{Op: op, Err: err}
	}
	if f.id == 0 {
		return genlFamily{}, errNotSupportedBefore(op, "generic netlink family "+name, version)
	}
	return f, nil
}

// nlError turns an error of a netlink request into an *Error carrying the
// errno and the kernel's extended-ack message.
func nlError(op string, err error) error { return errs.FromNetlink(op, err) }

// netdevConn is a netdev generic netlink socket with the family resolved.
type netdevConn struct {
	c   genlConn
	fam genlFamily
}

func dialNetdevConn(op, version string) (*netdevConn, error) {
	c, err := dialGenl()
	if err != nil {
		return nil, nlError(op, err)
	}
	fam, err := resolveFamily(c, _NETDEV_FAMILY_NAME, op, version)
	if err != nil {
		c.Close()
		return nil, err
	}
	return &netdevConn{c: c, fam: fam}, nil
}

func dialNetdev() (*netdevConn, error) {
	// The family came with Linux 6.3; the queue and qstats commands
	// later (each command checks its own).
	return dialNetdevConn("dial netdev", "6.3")
}

func (n *netdevConn) close() error { return n.c.Close() }

// netdevCmds names each command for errors and the first kernel that has it.
var netdevCmds = map[uint8]struct{ op, version string }{
	_NETDEV_CMD_PAGE_POOL_GET: {"page-pool-get", "6.8"},
	_NETDEV_CMD_QUEUE_GET:     {"queue-get", "6.12"},
	_NETDEV_CMD_QSTATS_GET:    {"qstats-get", "6.10"},
	_NETDEV_CMD_BIND_RX:       {"bind-rx", "6.12"},
	_NETDEV_CMD_BIND_TX:       {"bind-tx", "6.16"},
}

// execute sends one request of cmd with attributes built by enc.
func (n *netdevConn) execute(cmd uint8, flags netlink.HeaderFlags, enc func(ae *netlink.AttributeEncoder)) ([]genetlink.Message, error) {
	info := netdevCmds[cmd]
	if !n.fam.has(cmd) {
		return nil, errNotSupportedBefore(info.op, "netdev "+info.op, info.version)
	}
	ae := netlink.NewAttributeEncoder()
	if enc != nil {
		enc(ae)
	}
	b, err := ae.Encode()
	if err != nil {
		return nil, &Error{Op: info.op, Err: err}
	}
	msgs, err := n.c.Execute(genetlink.Message{
		Header: genetlink.Header{Command: cmd, Version: n.fam.version},
		Data:   b,
	}, n.fam.id, netlink.Request|flags)
	if err != nil {
		return nil, nlError(info.op, err)
	}
	return msgs, nil
}

func (n *netdevConn) queues(ifindex int) ([]Queue, error) {
	msgs, err := n.execute(_NETDEV_CMD_QUEUE_GET, netlink.Dump, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(_NETDEV_A_QUEUE_IFINDEX, uint32(ifindex))
	})
	if err != nil {
		return nil, err
	}
	qs := make([]Queue, 0, len(msgs))
	for _, m := range msgs {
		q, err := decodeQueue(m.Data)
		if err != nil {
			return nil, err
		}
		qs = append(qs, q)
	}
	return qs, nil
}

func (n *netdevConn) queue(ifindex int, typ Direction, id int) (*Queue, error) {
	msgs, err := n.execute(_NETDEV_CMD_QUEUE_GET, 0, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(_NETDEV_A_QUEUE_IFINDEX, uint32(ifindex))
		ae.Uint32(_NETDEV_A_QUEUE_TYPE, uint32(typ))
		ae.Uint32(_NETDEV_A_QUEUE_ID, uint32(id))
	})
	if err != nil {
		return nil, err
	}
	if len(msgs) != 1 {
		return nil, &Error{Op: "queue-get", Err: fmt.Errorf("%d replies, want 1", len(msgs))}
	}
	q, err := decodeQueue(msgs[0].Data)
	if err != nil {
		return nil, err
	}
	return &q, nil
}

func decodeQueue(b []byte) (Queue, error) {
	var q Queue
	err := decode(b, func(ad *netlink.AttributeDecoder) {
		switch ad.Type() {
		case _NETDEV_A_QUEUE_ID:
			q.ID = int(ad.Uint32())
		case _NETDEV_A_QUEUE_IFINDEX:
			q.Ifindex = int(ad.Uint32())
		case _NETDEV_A_QUEUE_TYPE:
			q.Type = Direction(ad.Uint32())
		case _NETDEV_A_QUEUE_NAPI_ID:
			q.NAPIID = ad.Uint32()
		case _NETDEV_A_QUEUE_DMABUF:
			q.DMABuf = ad.Uint32()
		case _NETDEV_A_QUEUE_IO_URING:
			q.IOUring = true
		case _NETDEV_A_QUEUE_XSK:
			q.XSK = true
		case _NETDEV_A_QUEUE_LEASE:
			q.Lease = decodeLease(ad) // lease_linux.go
		}
	})
	if err != nil {
		return Queue{}, &Error{Op: "queue-get", Err: err}
	}
	return q, nil
}

func (n *netdevConn) pagePools(ifindex int) ([]PagePool, error) {
	msgs, err := n.execute(_NETDEV_CMD_PAGE_POOL_GET, netlink.Dump, func(ae *netlink.AttributeEncoder) {
		if ifindex > 0 {
			ae.Uint32(_NETDEV_A_PAGE_POOL_IFINDEX, uint32(ifindex))
		}
	})
	if err != nil {
		return nil, err
	}
	pools := make([]PagePool, 0, len(msgs))
	for _, m := range msgs {
		var p PagePool
		err := decode(m.Data, func(ad *netlink.AttributeDecoder) {
			switch ad.Type() {
			case _NETDEV_A_PAGE_POOL_ID:
				p.ID = nlUint(ad)
			case _NETDEV_A_PAGE_POOL_IFINDEX:
				p.Ifindex = int(ad.Uint32())
			case _NETDEV_A_PAGE_POOL_NAPI_ID:
				p.NAPIID = nlUint(ad)
			case _NETDEV_A_PAGE_POOL_INFLIGHT:
				p.Inflight = nlUint(ad)
			case _NETDEV_A_PAGE_POOL_INFLIGHT_MEM:
				p.InflightMem = nlUint(ad)
			case _NETDEV_A_PAGE_POOL_DETACH_TIME:
				p.DetachTime = nlUint(ad)
			case _NETDEV_A_PAGE_POOL_DMABUF:
				p.DMABuf = ad.Uint32()
			case _NETDEV_A_PAGE_POOL_IO_URING:
				p.IOUring = true
			}
		})
		if err != nil {
			return nil, &Error{Op: "page-pool-get", Err: err}
		}
		// Pools whose netdev is gone lose their ifindex; a filtered dump
		// never returns them, an unfiltered one does.
		if ifindex > 0 && p.Ifindex != ifindex {
			continue
		}
		pools = append(pools, p)
	}
	return pools, nil
}

func (n *netdevConn) qstats(ifindex int, perQueue bool) ([]QStats, error) {
	msgs, err := n.execute(_NETDEV_CMD_QSTATS_GET, netlink.Dump, func(ae *netlink.AttributeEncoder) {
		if ifindex > 0 {
			ae.Uint32(_NETDEV_A_QSTATS_IFINDEX, uint32(ifindex))
		}
		if perQueue {
			ae.Uint32(_NETDEV_A_QSTATS_SCOPE, _NETDEV_QSTATS_SCOPE_QUEUE)
		}
	})
	if err != nil {
		return nil, err
	}
	out := make([]QStats, 0, len(msgs))
	for _, m := range msgs {
		s := QStats{Values: make(map[QStat]uint64)}
		err := decode(m.Data, func(ad *netlink.AttributeDecoder) {
			switch t := ad.Type(); {
			case t == _NETDEV_A_QSTATS_IFINDEX:
				s.Ifindex = int(ad.Uint32())
			case t == _NETDEV_A_QSTATS_QUEUE_TYPE:
				s.PerQueue = true
				s.Type = Direction(ad.Uint32())
			case t == _NETDEV_A_QSTATS_QUEUE_ID:
				s.PerQueue = true
				s.QueueID = int(ad.Uint32())
			case t >= uint16(qstatFirst):
				s.Values[QStat(t)] = nlUint(ad)
			}
		})
		if err != nil {
			return nil, &Error{Op: "qstats-get", Err: err}
		}
		out = append(out, s)
	}
	return out, nil
}

// decode runs fn on each attribute of b.
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

// nlUint reads an NLA_UINT, which the kernel sends as 4 bytes when the value
// fits and as 8 otherwise.
func nlUint(ad *netlink.AttributeDecoder) uint64 {
	if len(ad.Bytes()) == 4 {
		return uint64(ad.Uint32())
	}
	return ad.Uint64()
}

func bindRX(ifindex, fd int, queues []int, opts *BindRXOptions) (*Binding, error) {
	return bind(_NETDEV_CMD_BIND_RX, ifindex, fd, func(ae *netlink.AttributeEncoder) {
		for _, q := range queues {
			// One nest per queue; Nested sets NLA_F_NESTED, which strict
			// validation demands.
			ae.Nested(_NETDEV_A_DMABUF_QUEUES, func(nae *netlink.AttributeEncoder) error {
				nae.Uint32(_NETDEV_A_QUEUE_ID, uint32(q))
				nae.Uint32(_NETDEV_A_QUEUE_TYPE, _NETDEV_QUEUE_TYPE_RX)
				return nil
			})
		}
		if opts != nil && opts.RXPageSize != 0 {
			ae.Uint32(_NETDEV_A_DMABUF_RX_PAGE_SIZE, opts.RXPageSize)
		}
	}, append([]int{}, queues...), DirectionRX)
}

func bindTX(ifindex, fd int) (*Binding, error) {
	return bind(_NETDEV_CMD_BIND_TX, ifindex, fd, nil, nil, DirectionTX)
}

// bind opens the socket the binding will own, sends bind-rx or bind-tx on
// it and hands the socket to the Binding.
func bind(cmd uint8, ifindex, fd int, enc func(*netlink.AttributeEncoder), queues []int, dir Direction) (*Binding, error) {
	info := netdevCmds[cmd]
	n, err := dialNetdevConn(info.op, netdevCmds[_NETDEV_CMD_BIND_RX].version)
	if err != nil {
		return nil, err
	}
	msgs, err := n.execute(cmd, 0, func(ae *netlink.AttributeEncoder) {
		ae.Uint32(_NETDEV_A_DMABUF_IFINDEX, uint32(ifindex))
		ae.Uint32(_NETDEV_A_DMABUF_FD, uint32(fd))
		if enc != nil {
			enc(ae)
		}
	})
	if err != nil {
		n.close()
		return nil, err
	}
	var id uint32
	for _, m := range msgs {
		decode(m.Data, func(ad *netlink.AttributeDecoder) {
			if ad.Type() == _NETDEV_A_DMABUF_ID {
				id = ad.Uint32()
			}
		})
	}
	if id == 0 {
		n.close()
		return nil, &Error{Op: info.op, Err: errors.New("kernel reply carries no binding id")}
	}
	sock, err := holdBindingSocket(n.c)
	if err != nil {
		// Closing the connection unbinds what was just bound.
		n.close()
		return nil, &Error{Op: info.op, Err: err, Message: "keeping the binding's socket"}
	}
	return &Binding{id: id, ifindex: ifindex, queues: queues, dir: dir, sock: sock}, nil
}

// holdBindingSocket turns the connection a binding was made on into what the
// Binding keeps: a duplicate of its file descriptor, as a bare fd with no
// finalizer, after which the connection itself is closed. The duplicate
// refers to the same socket, so the binding lives on until the Binding closes
// it. The connection cannot be kept instead: mdlayher/socket wraps its fd in
// an os.File, whose finalizer would close it (and unbind) once the Binding
// is unreachable. Tests with a fake kernel, whose connections have no fd,
// replace this.
var holdBindingSocket = func(c genlConn) (io.Closer, error) {
	sc, ok := c.(interface {
		SyscallConn() (syscall.RawConn, error)
	})
	if !ok {
		return nil, errors.New("netlink connection exposes no file descriptor")
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	dup := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, errnoError("fcntl F_DUPFD_CLOEXEC", derr)
	}
	// The connection's own close no longer unbinds: dup holds the socket.
	_ = c.Close()
	return socketFD(dup), nil
}

// socketFD is a file descriptor closed only by Close: no os.File, no
// finalizer.
type socketFD int

func (fd socketFD) Close() error {
	if err := unix.Close(int(fd)); err != nil {
		return errnoError("close", err)
	}
	return nil
}
