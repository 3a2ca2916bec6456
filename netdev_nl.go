package devmem

import (
	"io"
	"sync"
	"sync/atomic"
)

// Direction is the direction of a queue or of a binding. The values are the
// kernel's enum netdev_queue_type.
type Direction uint32

const (
	// DirectionRX is a receive queue, or a binding made by BindRX.
	DirectionRX Direction = 0 // NETDEV_QUEUE_TYPE_RX
	// DirectionTX is a transmit queue, or a binding made by BindTX.
	DirectionTX Direction = 1 // NETDEV_QUEUE_TYPE_TX
)

// String returns "rx" or "tx" (the netlink spec's names), or
// "Direction(N)" for a value the kernel does not define.
func (d Direction) String() string {
	switch d {
	case DirectionRX:
		return "rx"
	case DirectionTX:
		return "tx"
	}
	return "Direction(" + itoa(uint64(d)) + ")"
}

// BindRXOptions are the optional parts of a bind-rx request. The zero value
// asks for nothing beyond the defaults.
type BindRXOptions struct {
	// RXPageSize, when not 0, asks the driver to use buffers of this many
	// bytes (a power of two, at least the page size) for the bound queues
	// (NETDEV_A_DMABUF_RX_PAGE_SIZE). Few drivers support it; the dma-buf's
	// scatter-gather entries must be aligned to it.
	RXPageSize uint32
}

// A Binding is a dma-buf bound to a netdev for devmem TCP, by BindRX or
// BindTX. The kernel ties the binding to the netlink socket that made it and
// unbinds when that socket is released. The Binding owns the socket as a bare
// file descriptor (close-on-exec, so child processes do not inherit it) with
// no finalizer, so its lifetime is exactly the one you give it: Close unbinds,
// and a Binding dropped without Close stays bound until the process exits. A
// garbage collection never unbinds, whether or not anything still refers to
// the Binding (a Receiver or Sender keeps it reachable anyway).
//
// Why not a finalizer: the kernel keeps receiving into the dma-buf and
// handing out tokens while it is bound, so an unbind must be an explicit
// decision of the program, never the collector's. Why a bare fd rather than
// keeping the netlink connection open: the connection wraps its fd in an
// os.File, which closes itself when collected.
//
// A Binding is safe for concurrent use.
type Binding struct {
	id      uint32
	ifindex int
	queues  []int
	dir     Direction
	size    int64

	closed atomic.Bool
	mu     sync.Mutex
	sock   io.Closer // the socket the kernel ties the binding to; nil after Close
}

// ID returns the kernel's id of the binding. It is the dmabuf_id of received
// frags and the id a TX socket names in SCM_DEVMEM_DMABUF.
func (b *Binding) ID() uint32 { return b.id }

// Ifindex returns the index of the bound netdev.
func (b *Binding) Ifindex() int { return b.ifindex }

// Queues returns the RX queues the dma-buf is bound to, in the order given to
// BindRX (nil for a TX binding).
func (b *Binding) Queues() []int {
	if b.queues == nil {
		return nil
	}
	return append([]int(nil), b.queues...)
}

// Direction reports whether the binding is for receive or transmit.
func (b *Binding) Direction() Direction { return b.dir }

// Size returns the size in bytes of the bound dma-buf, as it was when bound.
func (b *Binding) Size() int64 { return b.size }

// Closed reports whether Close has been called.
func (b *Binding) Closed() bool { return b.closed.Load() }

// Close unbinds the dma-buf by closing the binding's netlink socket. The
// kernel restarts RX queues without the dma-buf; tokens received earlier stay
// valid until they are returned. Sends through a Sender of the binding fail
// afterwards with an error matching net.ErrClosed. Close is idempotent: later
// calls return nil.
func (b *Binding) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Swap(true) {
		return nil
	}
	c := b.sock
	b.sock = nil
	if c == nil {
		return nil
	}
	if err := c.Close(); err != nil {
		return &Error{Op: "close binding", Err: err}
	}
	return nil
}

// Queue is one RX or TX queue of a netdev (queue-get).
type Queue struct {
	// ID is the queue's index among the device's queues of its Type.
	ID int
	// Ifindex is the interface index of the device the queue belongs to.
	Ifindex int
	// Type says whether it is an RX or a TX queue.
	Type Direction
	// NAPIID is the id of the NAPI instance serving the queue (0 if none is
	// reported).
	NAPIID uint32
	// DMABuf is the id of the devmem binding whose dma-buf backs this RX
	// queue, 0 when none does.
	DMABuf uint32
	// IOUring is true when an io_uring zero-copy receive area backs the
	// queue.
	IOUring bool
	// XSK is true when an AF_XDP socket uses the queue.
	XSK bool
	// Lease is, on a physical device's RX queue leased to a virtual device,
	// the virtual queue holding it (Linux 7.1); nil otherwise. A leased
	// virtual queue reports the physical queue's DMABuf, IOUring and XSK.
	Lease *Lease
}

// PagePool is a kernel page pool (page-pool-get). A pool that serves a bound
// RX queue reports the binding's id in DMABuf.
type PagePool struct {
	// ID is the pool's id, unique while the pool exists.
	ID uint64
	// Ifindex is the interface index of the device the pool serves; 0
	// once the netdev is gone.
	Ifindex int
	// NAPIID is the id of the NAPI instance that allocates from the pool
	// (0 if none is reported); Queue.NAPIID says which queue it serves.
	NAPIID uint64
	// Inflight is the number of buffers handed out and not yet returned
	// (for devmem: including frags whose tokens user space still holds).
	Inflight uint64
	// InflightMem is the memory held by those buffers, in bytes.
	InflightMem uint64
	// DetachTime is when the pool's driver let go of it, in seconds of
	// CLOCK_BOOTTIME; 0 while attached. A detached pool lingers until every
	// in-flight buffer is back.
	DetachTime uint64
	// DMABuf is the id of the devmem binding providing the pool's memory, 0
	// when none does.
	DMABuf uint32
	// IOUring is true when io_uring zero-copy receive provides the memory.
	IOUring bool
}

// QStat names one queue statistics counter of qstats-get. The values are the
// kernel's NETDEV_A_QSTATS_* attribute types.
type QStat uint16

// The counters qstats-get may report. Drivers report only those they keep.
const (
	QStatRXPackets          QStat = 8  // NETDEV_A_QSTATS_RX_PACKETS
	QStatRXBytes            QStat = 9  // NETDEV_A_QSTATS_RX_BYTES
	QStatTXPackets          QStat = 10 // NETDEV_A_QSTATS_TX_PACKETS
	QStatTXBytes            QStat = 11 // NETDEV_A_QSTATS_TX_BYTES
	QStatRXAllocFail        QStat = 12 // NETDEV_A_QSTATS_RX_ALLOC_FAIL
	QStatRXHWDrops          QStat = 13 // NETDEV_A_QSTATS_RX_HW_DROPS
	QStatRXHWDropOverruns   QStat = 14 // NETDEV_A_QSTATS_RX_HW_DROP_OVERRUNS
	QStatRXCsumComplete     QStat = 15 // NETDEV_A_QSTATS_RX_CSUM_COMPLETE
	QStatRXCsumUnnecessary  QStat = 16 // NETDEV_A_QSTATS_RX_CSUM_UNNECESSARY
	QStatRXCsumNone         QStat = 17 // NETDEV_A_QSTATS_RX_CSUM_NONE
	QStatRXCsumBad          QStat = 18 // NETDEV_A_QSTATS_RX_CSUM_BAD
	QStatRXHWGROPackets     QStat = 19 // NETDEV_A_QSTATS_RX_HW_GRO_PACKETS
	QStatRXHWGROBytes       QStat = 20 // NETDEV_A_QSTATS_RX_HW_GRO_BYTES
	QStatRXHWGROWirePackets QStat = 21 // NETDEV_A_QSTATS_RX_HW_GRO_WIRE_PACKETS
	QStatRXHWGROWireBytes   QStat = 22 // NETDEV_A_QSTATS_RX_HW_GRO_WIRE_BYTES
	QStatRXHWDropRatelimits QStat = 23 // NETDEV_A_QSTATS_RX_HW_DROP_RATELIMITS
	QStatTXHWDrops          QStat = 24 // NETDEV_A_QSTATS_TX_HW_DROPS
	QStatTXHWDropErrors     QStat = 25 // NETDEV_A_QSTATS_TX_HW_DROP_ERRORS
	QStatTXCsumNone         QStat = 26 // NETDEV_A_QSTATS_TX_CSUM_NONE
	QStatTXNeedsCsum        QStat = 27 // NETDEV_A_QSTATS_TX_NEEDS_CSUM
	QStatTXHWGSOPackets     QStat = 28 // NETDEV_A_QSTATS_TX_HW_GSO_PACKETS
	QStatTXHWGSOBytes       QStat = 29 // NETDEV_A_QSTATS_TX_HW_GSO_BYTES
	QStatTXHWGSOWirePackets QStat = 30 // NETDEV_A_QSTATS_TX_HW_GSO_WIRE_PACKETS
	QStatTXHWGSOWireBytes   QStat = 31 // NETDEV_A_QSTATS_TX_HW_GSO_WIRE_BYTES
	QStatTXHWDropRatelimits QStat = 32 // NETDEV_A_QSTATS_TX_HW_DROP_RATELIMITS
	QStatTXStop             QStat = 33 // NETDEV_A_QSTATS_TX_STOP
	QStatTXWake             QStat = 34 // NETDEV_A_QSTATS_TX_WAKE
	qstatFirst                    = QStatRXPackets
	qstatLast                     = QStatTXWake
)

var qstatNames = [...]string{
	"rx-packets", "rx-bytes", "tx-packets", "tx-bytes", "rx-alloc-fail",
	"rx-hw-drops", "rx-hw-drop-overruns", "rx-csum-complete",
	"rx-csum-unnecessary", "rx-csum-none", "rx-csum-bad", "rx-hw-gro-packets",
	"rx-hw-gro-bytes", "rx-hw-gro-wire-packets", "rx-hw-gro-wire-bytes",
	"rx-hw-drop-ratelimits", "tx-hw-drops", "tx-hw-drop-errors",
	"tx-csum-none", "tx-needs-csum", "tx-hw-gso-packets", "tx-hw-gso-bytes",
	"tx-hw-gso-wire-packets", "tx-hw-gso-wire-bytes", "tx-hw-drop-ratelimits",
	"tx-stop", "tx-wake",
}

// String returns the kernel's name of the counter, such as "rx-alloc-fail".
func (s QStat) String() string {
	if s >= qstatFirst && s <= qstatLast {
		return qstatNames[s-qstatFirst]
	}
	return "QStat(" + itoa(uint64(s)) + ")"
}

// QStats is one record of qstats-get: the counters of one queue, or of a
// whole netdev.
type QStats struct {
	// Ifindex is the interface index of the device counted.
	Ifindex int
	// PerQueue is true for a queue's record; then Type and QueueID say which
	// queue.
	PerQueue bool
	// Type is the counted queue's direction (only when PerQueue).
	Type Direction
	// QueueID is the counted queue's ID (only when PerQueue).
	QueueID int
	// Values holds the counters the driver reported. A counter the driver
	// does not keep is absent, not 0.
	Values map[QStat]uint64
}

// Get returns the value of counter s and whether the driver reported it.
func (q *QStats) Get(s QStat) (uint64, bool) {
	v, ok := q.Values[s]
	return v, ok
}

// BindRX binds buf to RX queues of the netdev with index ifindex
// (bind-rx, Linux 6.12). It needs CAP_NET_ADMIN, tcp-data-split enabled and
// hds-thresh 0 on the device (see NIC). queues must name at least one queue,
// each once. opts may be nil.
//
// The returned Binding owns a new netlink socket; Close it to unbind. buf may
// be closed once BindRX returns: the kernel holds its own reference.
//
// Kernel refusals are *Error values carrying the kernel's message; errors.Is
// matches their errno (for example unix.EINVAL, unix.EEXIST for a queue that
// is already bound), os.ErrPermission, os.ErrNotExist (no such device,
// including ifindex 0) and ErrNotSupported (driver, or a kernel before 6.12).
// What the kernel would refuse with a bare errno (no queues, a queue twice, a
// negative queue) is refused here with EINVAL and a message saying why; a
// closed buf is refused with an error matching net.ErrClosed.
func BindRX(ifindex int, buf *DMABuf, queues []int, opts *BindRXOptions) (*Binding, error) {
	const op = "bind-rx"
	if err := checkBindArgs(op, ifindex, buf); err != nil {
		return nil, err
	}
	if err := checkQueues(op, queues); err != nil {
		return nil, err
	}
	fd, err := buf.acquire(op)
	if err != nil {
		return nil, err
	}
	defer buf.release()
	b, err := bindRX(ifindex, fd, queues, opts)
	if err != nil {
		return nil, err
	}
	b.size = buf.Size()
	return b, nil
}

// BindTX binds buf to the netdev with index ifindex for devmem transmit
// (bind-tx, Linux 6.16; no privilege needed). Close the Binding to unbind.
// Errors are as for BindRX.
func BindTX(ifindex int, buf *DMABuf) (*Binding, error) {
	const op = "bind-tx"
	if err := checkBindArgs(op, ifindex, buf); err != nil {
		return nil, err
	}
	fd, err := buf.acquire(op)
	if err != nil {
		return nil, err
	}
	defer buf.release()
	b, err := bindTX(ifindex, fd)
	if err != nil {
		return nil, err
	}
	b.size = buf.Size()
	return b, nil
}

// checkBindArgs refuses what the kernel refuses without saying why: ifindex 0
// fails its policy with ERANGE, which reads as anything but "no such
// device".
func checkBindArgs(op string, ifindex int, buf *DMABuf) error {
	if buf == nil {
		return &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: "nil *DMABuf"}
	}
	if ifindex <= 0 || ifindex > 1<<31-1 {
		return &Error{Op: op, Errno: _ENODEV, Err: _ENODEV,
			Message: "ifindex " + itoaInt(ifindex) + " names no network device (ifindexes start at 1)"}
	}
	return nil
}

// checkQueues refuses a queue list the kernel would refuse with a bare
// EINVAL (none given) or accept oddly (a queue twice: bound once, reported
// twice).
func checkQueues(op string, queues []int) error {
	if len(queues) == 0 {
		return &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: "no queues given: name at least one RX queue to bind"}
	}
	for i, q := range queues {
		if q < 0 || q > 1<<31-1 {
			return &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: "queue " + itoaInt(q) + " is not a queue index"}
		}
		for _, p := range queues[:i] {
			if p == q {
				return &Error{Op: op, Errno: _EINVAL, Err: _EINVAL, Message: "queue " + itoaInt(q) + " is listed twice"}
			}
		}
	}
	return nil
}

// itoaInt formats a possibly negative int.
func itoaInt(v int) string {
	if v < 0 {
		return "-" + itoa(uint64(-int64(v)))
	}
	return itoa(uint64(v))
}

// Netdev is a client of the netdev generic netlink family for queries. It is
// not safe for concurrent use. Bind with the package functions BindRX and
// BindTX: every binding owns a socket of its own.
type Netdev struct {
	c *netdevConn
}

// DialNetdev opens a netdev netlink client. Close it when done.
func DialNetdev() (*Netdev, error) {
	c, err := dialNetdev()
	if err != nil {
		return nil, err
	}
	return &Netdev{c: c}, nil
}

// Close closes the client's socket.
func (n *Netdev) Close() error { return n.c.close() }

// Queues lists the RX and TX queues of a netdev (queue-get dump, Linux
// 6.12 for the dmabuf attribute). A bound RX queue reports its binding's id
// in DMABuf.
func (n *Netdev) Queues(ifindex int) ([]Queue, error) { return n.c.queues(ifindex) }

// Queue describes one queue (queue-get). An unknown queue matches
// os.ErrNotExist only if the kernel reports ENOENT/ENODEV; most report
// EINVAL.
func (n *Netdev) Queue(ifindex int, typ Direction, id int) (*Queue, error) {
	return n.c.queue(ifindex, typ, id)
}

// PagePools lists the page pools of a netdev (page-pool-get dump); ifindex 0
// lists those of every netdev, including orphaned ones.
func (n *Netdev) PagePools(ifindex int) ([]PagePool, error) { return n.c.pagePools(ifindex) }

// QStats returns the queue statistics of a netdev (qstats-get dump): one
// record for the whole device, or one per queue when perQueue is set.
// ifindex 0 covers every netdev.
func (n *Netdev) QStats(ifindex int, perQueue bool) ([]QStats, error) {
	return n.c.qstats(ifindex, perQueue)
}
