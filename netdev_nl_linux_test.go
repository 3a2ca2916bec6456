//go:build linux

package devmem

import (
	"encoding/binary"
	"errors"
	"io"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

const testNetdevFamilyID = 0x22

var testNetdevFamily = genetlink.Family{ID: testNetdevFamilyID, Version: 1, Name: "netdev"}

// countingConn counts Close calls on a fake genetlink connection.
type countingConn struct {
	*genetlink.Conn
	closes int
}

func (c *countingConn) Close() error {
	c.closes++
	return c.Conn.Close()
}

// fakeKernel points dialGenl at a fake netdev family served by fn and returns
// the connections it handed out.
func fakeKernel(t *testing.T, fam genetlink.Family, fn genltest.Func) *[]*countingConn {
	t.Helper()
	var conns []*countingConn
	old := dialGenl
	dialGenl = func() (genlConn, error) {
		c := &countingConn{Conn: genltest.Dial(genltest.ServeFamily(fam, fn))}
		conns = append(conns, c)
		return c, nil
	}
	// The fake connections have no fd to duplicate: the binding keeps
	// them, so the tests can count their closes.
	oldHold := holdBindingSocket
	holdBindingSocket = func(c genlConn) (io.Closer, error) { return c, nil }
	t.Cleanup(func() { dialGenl, holdBindingSocket = old, oldHold })
	return &conns
}

func nlU32(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
func nlU64(v uint64) []byte { return binary.NativeEndian.AppendUint64(nil, v) }

// nla builds one attribute by hand, so expectations do not lean on the
// encoder under test.
func nlAttr(typ uint16, data []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(data)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func nlCat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

func genlReply(cmd uint8, attrs ...[]byte) []genetlink.Message {
	return []genetlink.Message{{Header: genetlink.Header{Command: cmd, Version: 1}, Data: nlCat(attrs...)}}
}

func TestBindRXEncoding(t *testing.T) {
	var got genetlink.Message
	var gotFlags netlink.HeaderFlags
	conns := fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		got, gotFlags = greq, nreq.Header.Flags
		if nreq.Header.Type != testNetdevFamilyID {
			t.Errorf("family id %d, want %d", nreq.Header.Type, testNetdevFamilyID)
		}
		return genlReply(_NETDEV_CMD_BIND_RX, nlAttr(_NETDEV_A_DMABUF_ID, nlU32(7))), nil
	})

	b, err := bindRX(3, 42, []int{14, 15}, &BindRXOptions{RXPageSize: 16384})
	if err != nil {
		t.Fatal(err)
	}
	want := nlCat(
		nlAttr(1, nlU32(3)),  // IFINDEX
		nlAttr(3, nlU32(42)), // FD
		nlAttr(2|unix.NLA_F_NESTED, nlCat(nlAttr(1, nlU32(14)), nlAttr(3, nlU32(0)))), // QUEUES {ID, TYPE=RX}
		nlAttr(2|unix.NLA_F_NESTED, nlCat(nlAttr(1, nlU32(15)), nlAttr(3, nlU32(0)))),
		nlAttr(5, nlU32(16384)), // RX_PAGE_SIZE
	)
	if got.Header.Command != 13 {
		t.Errorf("command %d, want 13", got.Header.Command)
	}
	if diff := cmp.Diff(want, got.Data); diff != "" {
		t.Errorf("request attributes (-want +got):\n%s", diff)
	}
	if gotFlags&netlink.Request == 0 || gotFlags&netlink.Dump != 0 {
		t.Errorf("flags %v, want a do request", gotFlags)
	}
	if b.ID() != 7 || b.Ifindex() != 3 || b.Direction() != DirectionRX || !cmp.Equal(b.Queues(), []int{14, 15}) {
		t.Errorf("binding %d/%d/%v/%v", b.ID(), b.Ifindex(), b.Direction(), b.Queues())
	}

	if len(*conns) != 1 {
		t.Fatalf("%d connections dialed, want 1", len(*conns))
	}
	c := (*conns)[0]
	if c.closes != 0 {
		t.Fatal("binding socket closed before Close")
	}
	for range 3 {
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if c.closes != 1 {
		t.Errorf("socket closed %d times, want 1", c.closes)
	}
}

func TestBindRXNoPageSize(t *testing.T) {
	var got []byte
	fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		got = greq.Data
		return genlReply(_NETDEV_CMD_BIND_RX, nlAttr(_NETDEV_A_DMABUF_ID, nlU32(1))), nil
	})
	b, err := bindRX(1, 5, []int{0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	want := nlCat(nlAttr(1, nlU32(1)), nlAttr(3, nlU32(5)), nlAttr(2|unix.NLA_F_NESTED, nlCat(nlAttr(1, nlU32(0)), nlAttr(3, nlU32(0)))))
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestBindTXEncoding(t *testing.T) {
	var got genetlink.Message
	fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		got = greq
		return genlReply(_NETDEV_CMD_BIND_TX, nlAttr(_NETDEV_A_DMABUF_ID, nlU32(9))), nil
	})
	b, err := bindTX(4, 11)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if got.Header.Command != 15 {
		t.Errorf("command %d, want 15", got.Header.Command)
	}
	if diff := cmp.Diff(nlCat(nlAttr(1, nlU32(4)), nlAttr(3, nlU32(11))), got.Data); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if b.ID() != 9 || b.Direction() != DirectionTX || b.Queues() != nil {
		t.Errorf("binding %d %v %v", b.ID(), b.Direction(), b.Queues())
	}
}

func TestBindErrors(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		errno   unix.Errno
		message string
		is      []error
	}{
		{
			name:    "hds disabled",
			err:     &netlink.OpError{Op: "receive", Err: unix.EINVAL, Message: "tcp-data-split is disabled"},
			errno:   unix.EINVAL,
			message: "tcp-data-split is disabled",
			is:      []error{unix.EINVAL},
		},
		{
			name:    "queue busy",
			err:     &netlink.OpError{Op: "receive", Err: unix.EEXIST, Message: "designated queue already memory provider bound"},
			errno:   unix.EEXIST,
			message: "designated queue already memory provider bound",
			is:      []error{unix.EEXIST},
		},
		{name: "permission", err: genltest.Error(int(unix.EPERM)), errno: unix.EPERM, is: []error{os.ErrPermission, unix.EPERM}},
		{name: "no device", err: genltest.Error(int(unix.ENODEV)), errno: unix.ENODEV, is: []error{os.ErrNotExist}},
		{
			name:    "driver",
			err:     &netlink.OpError{Op: "receive", Err: unix.EOPNOTSUPP, Message: "Device doesn't support DMA"},
			errno:   unix.EOPNOTSUPP,
			message: "Device doesn't support DMA",
			is:      []error{ErrNotSupported},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conns := fakeKernel(t, testNetdevFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
				return nil, tt.err
			})
			b, err := bindRX(1, 3, []int{0}, nil)
			if b != nil {
				t.Fatal("got a binding")
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v, want *Error", err, err)
			}
			if e.Op != "bind-rx" || e.Errno != tt.errno || e.Message != tt.message {
				t.Errorf("got Op %q Errno %v Message %q", e.Op, e.Errno, e.Message)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(%v, %v) = false", err, target)
				}
			}
			if tt.message != "" && !strings.Contains(err.Error(), tt.message) {
				t.Errorf("Error() = %q lacks the kernel message", err)
			}
			if (*conns)[0].closes != 1 {
				t.Errorf("failed bind closed its socket %d times, want 1", (*conns)[0].closes)
			}
		})
	}
}

func TestFamilyMissing(t *testing.T) {
	fakeKernel(t, genetlink.Family{ID: 0x30, Version: 1, Name: "not-netdev"}, nil)
	old := dialGenl
	dialGenl = func() (genlConn, error) {
		return genltest.Dial(func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
			return nil, genltest.Error(int(unix.ENOENT))
		}), nil
	}
	defer func() { dialGenl = old }()

	_, err := bindRX(1, 3, []int{0}, nil)
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("err %v, want ErrNotSupported", err)
	}
	if !strings.Contains(err.Error(), "6.12") {
		t.Errorf("%q does not name the minimum kernel", err)
	}
	if _, err := DialNetdev(); !errors.Is(err, ErrNotSupported) {
		t.Errorf("DialNetdev: %v, want ErrNotSupported", err)
	}
}

// familyWithOps serves a get-family reply that lists only cmds, as an older
// kernel would.
func familyWithOps(cmds ...uint32) genltest.Func {
	return func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		if nreq.Header.Type != unix.GENL_ID_CTRL {
			return nil, genltest.Error(int(unix.EOPNOTSUPP))
		}
		var ops [][]byte
		for i, c := range cmds {
			ops = append(ops, nlAttr(uint16(i+1)|unix.NLA_F_NESTED, nlCat(nlAttr(unix.CTRL_ATTR_OP_ID, nlU32(c)), nlAttr(unix.CTRL_ATTR_OP_FLAGS, nlU32(0)))))
		}
		return genlReply(unix.CTRL_CMD_NEWFAMILY,
			nlAttr(unix.CTRL_ATTR_FAMILY_ID, binary.NativeEndian.AppendUint16(nil, testNetdevFamilyID)),
			nlAttr(unix.CTRL_ATTR_FAMILY_NAME, []byte("netdev\x00")),
			nlAttr(unix.CTRL_ATTR_VERSION, nlU32(1)),
			nlAttr(unix.CTRL_ATTR_OPS|unix.NLA_F_NESTED, nlCat(ops...)),
		), nil
	}
}

func TestCommandUnknown(t *testing.T) {
	old := dialGenl
	dialGenl = func() (genlConn, error) { return genltest.Dial(familyWithOps(1, 5, 10, 12, 13)), nil }
	defer func() { dialGenl = old }()

	_, err := bindTX(1, 3)
	if !errors.Is(err, ErrNotSupported) || !strings.Contains(err.Error(), "6.16") {
		t.Fatalf("bind-tx on a 6.12-like kernel: %v", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Op != "bind-tx" {
		t.Errorf("error %#v, want Op bind-tx", err)
	}
	// bind-rx is listed, so it is sent (and the fake refuses it).
	_, err = bindRX(1, 3, []int{0}, nil)
	if !errors.Is(err, unix.EOPNOTSUPP) {
		t.Errorf("bind-rx: %v", err)
	}
}

func TestQueues(t *testing.T) {
	var got genetlink.Message
	var flags netlink.HeaderFlags
	fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		got, flags = greq, nreq.Header.Flags
		msgs := genlReply(_NETDEV_CMD_QUEUE_GET, nlAttr(1, nlU32(0)), nlAttr(2, nlU32(3)), nlAttr(3, nlU32(0)), nlAttr(4, nlU32(8193)), nlAttr(5, nlU32(7)))
		msgs = append(msgs, genlReply(_NETDEV_CMD_QUEUE_GET, nlAttr(1, nlU32(1)), nlAttr(2, nlU32(3)), nlAttr(3, nlU32(0)), nlAttr(6|unix.NLA_F_NESTED, nil))...)
		msgs = append(msgs, genlReply(_NETDEV_CMD_QUEUE_GET, nlAttr(1, nlU32(0)), nlAttr(2, nlU32(3)), nlAttr(3, nlU32(1)), nlAttr(7|unix.NLA_F_NESTED, nil))...)
		return msgs, nil
	})
	n, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	qs, err := n.Queues(3)
	if err != nil {
		t.Fatal(err)
	}
	if got.Header.Command != 10 || flags&netlink.Dump != netlink.Dump {
		t.Errorf("command %d flags %v, want queue-get dump", got.Header.Command, flags)
	}
	if diff := cmp.Diff(nlAttr(2, nlU32(3)), got.Data); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	want := []Queue{
		{ID: 0, Ifindex: 3, Type: DirectionRX, NAPIID: 8193, DMABuf: 7},
		{ID: 1, Ifindex: 3, Type: DirectionRX, IOUring: true},
		{ID: 0, Ifindex: 3, Type: DirectionTX, XSK: true},
	}
	if diff := cmp.Diff(want, qs); diff != "" {
		t.Errorf("queues (-want +got):\n%s", diff)
	}
}

func TestQueueDo(t *testing.T) {
	var got genetlink.Message
	fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		got = greq
		return genlReply(_NETDEV_CMD_QUEUE_GET, nlAttr(1, nlU32(2)), nlAttr(2, nlU32(5)), nlAttr(3, nlU32(0)), nlAttr(5, nlU32(11))), nil
	})
	n, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	q, err := n.Queue(5, DirectionRX, 2)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nlCat(nlAttr(2, nlU32(5)), nlAttr(3, nlU32(0)), nlAttr(1, nlU32(2))), got.Data); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&Queue{ID: 2, Ifindex: 5, DMABuf: 11}, q); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestPagePools(t *testing.T) {
	fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		if diff := cmp.Diff(nlAttr(2, nlU32(3)), greq.Data); diff != "" {
			t.Errorf("request (-want +got):\n%s", diff)
		}
		msgs := genlReply(_NETDEV_CMD_PAGE_POOL_GET,
			nlAttr(1, nlU32(12)), nlAttr(2, nlU32(3)), nlAttr(3, nlU32(8193)),
			nlAttr(4, nlU32(64)), nlAttr(5, nlU64(1<<33)), nlAttr(7, nlU32(7)))
		msgs = append(msgs, genlReply(_NETDEV_CMD_PAGE_POOL_GET,
			nlAttr(1, nlU64(1<<40)), nlAttr(2, nlU32(3)), nlAttr(4, nlU64(0)), nlAttr(5, nlU32(0)),
			nlAttr(6, nlU32(1234)), nlAttr(8|unix.NLA_F_NESTED, nil))...)
		// Another device's pool (a kernel that ignores the filter).
		msgs = append(msgs, genlReply(_NETDEV_CMD_PAGE_POOL_GET, nlAttr(1, nlU32(99)), nlAttr(2, nlU32(4)))...)
		return msgs, nil
	})
	n, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	pools, err := n.PagePools(3)
	if err != nil {
		t.Fatal(err)
	}
	want := []PagePool{
		{ID: 12, Ifindex: 3, NAPIID: 8193, Inflight: 64, InflightMem: 1 << 33, DMABuf: 7},
		{ID: 1 << 40, Ifindex: 3, DetachTime: 1234, IOUring: true},
	}
	if diff := cmp.Diff(want, pools); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestQStats(t *testing.T) {
	var got genetlink.Message
	fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		got = greq
		return append(
			genlReply(_NETDEV_CMD_QSTATS_GET, nlAttr(1, nlU32(3)), nlAttr(2, nlU32(0)), nlAttr(3, nlU32(1)),
				nlAttr(8, nlU32(10)), nlAttr(9, nlU64(1<<35)), nlAttr(12, nlU32(2)), nlAttr(13, nlU64(0))),
			genlReply(_NETDEV_CMD_QSTATS_GET, nlAttr(1, nlU32(3)), nlAttr(2, nlU32(1)), nlAttr(3, nlU32(0)),
				nlAttr(10, nlU32(5)), nlAttr(11, nlU32(500)))...), nil
	})
	n, err := DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	st, err := n.QStats(3, true)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(nlCat(nlAttr(1, nlU32(3)), nlAttr(4, nlU32(1))), got.Data); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	want := []QStats{
		{Ifindex: 3, PerQueue: true, Type: DirectionRX, QueueID: 1, Values: map[QStat]uint64{
			QStatRXPackets: 10, QStatRXBytes: 1 << 35, QStatRXAllocFail: 2, QStatRXHWDrops: 0,
		}},
		{Ifindex: 3, PerQueue: true, Type: DirectionTX, QueueID: 0, Values: map[QStat]uint64{
			QStatTXPackets: 5, QStatTXBytes: 500,
		}},
	}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, ok := st[1].Get(QStatRXHWDrops); ok {
		t.Error("absent counter reported present")
	}
	if QStatRXAllocFail.String() != "rx-alloc-fail" || QStatTXWake.String() != "tx-wake" {
		t.Error("QStat names")
	}
}

// realSocketFakeKernel is a real netlink socket (it has an fd, held in an
// os.File as mdlayher/socket does) whose requests a fake kernel answers: the
// binding code keeps the real socket exactly as it would one the kernel
// bound.
type realSocketFakeKernel struct {
	*genetlink.Conn // the real socket
	fake            *genetlink.Conn
}

func (c *realSocketFakeKernel) Execute(m genetlink.Message, family uint16, flags netlink.HeaderFlags) ([]genetlink.Message, error) {
	return c.fake.Execute(m, family, flags)
}

func (c *realSocketFakeKernel) Close() error {
	c.fake.Close()
	return c.Conn.Close()
}

// countSockets counts the process's open socket fds.
func countSockets(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// collect runs the garbage collector and the finalizers it queues, several
// times.
func collect() {
	for range 5 {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // finalizers run on their own goroutine
	}
}

// TestBindingSurvivesGC: a Binding nobody refers to any more keeps its
// socket (and so the kernel's binding) through garbage collections, until
// Close. It failed when the Binding kept the netlink connection, whose
// os.File closed the socket when collected.
func TestBindingSurvivesGC(t *testing.T) {
	old := dialGenl
	dialGenl = func() (genlConn, error) {
		real, err := genetlink.Dial(&netlink.Config{Strict: true})
		if err != nil {
			return nil, err
		}
		fake := genltest.Dial(genltest.ServeFamily(testNetdevFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
			return genlReply(greq.Header.Command, nlAttr(_NETDEV_A_DMABUF_ID, nlU32(3))), nil
		}))
		return &realSocketFakeKernel{Conn: real, fake: fake}, nil
	}
	t.Cleanup(func() { dialGenl = old })

	before := countSockets(t)
	ref := func() *Binding {
		b, err := bindTX(1, 0)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}()
	if n := countSockets(t); n != before+1 {
		t.Fatalf("%d sockets with a binding, want %d", n, before+1)
	}
	// Drop every reference but a weak one (the kernel's view: does the
	// socket survive while the Binding is unreachable).
	id := ref.ID()
	weak := weakPointer(ref)
	ref = nil
	collect()
	if n := countSockets(t); n != before+1 {
		t.Fatalf("binding %d: %d sockets after a GC, want %d: the collector unbound a dropped Binding", id, n, before+1)
	}
	if b := weak(); b != nil {
		// Still reachable somehow; close through it to check Close.
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if n := countSockets(t); n != before {
			t.Errorf("%d sockets after Close, want %d", n, before)
		}
	}

	// And with a reference kept: Close releases the socket, once.
	b, err := bindRX(1, 0, []int{0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	collect()
	if n := countSockets(t); n != before+1 && n != before+2 {
		t.Fatalf("%d sockets with a binding", n)
	}
	n0 := countSockets(t)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countSockets(t); n != n0-1 {
		t.Errorf("%d sockets after Close, want %d", n, n0-1)
	}
	if !b.Closed() {
		t.Error("Closed() = false after Close")
	}
}

// TestBindArgsRefusedBeforeKernel: arguments the kernel refuses without
// saying why (or accepts oddly) are refused here with a clear error, and the
// kernel is never asked.
func TestBindArgsRefusedBeforeKernel(t *testing.T) {
	asked := 0
	fakeKernel(t, testNetdevFamily, func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
		asked++
		return genlReply(greq.Header.Command, nlAttr(_NETDEV_A_DMABUF_ID, nlU32(1))), nil
	})
	memfd, err := unix.MemfdCreate("buf", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	buf := &DMABuf{fd: memfd, size: 4096}
	defer buf.Close()
	for _, tt := range []struct {
		name    string
		bind    func() (*Binding, error)
		is      []error
		message string
	}{
		{"rx no queues", func() (*Binding, error) { return BindRX(1, buf, nil, nil) }, []error{unix.EINVAL}, "no queues"},
		{"rx empty queues", func() (*Binding, error) { return BindRX(1, buf, []int{}, nil) }, []error{unix.EINVAL}, "no queues"},
		{"rx queue twice", func() (*Binding, error) { return BindRX(1, buf, []int{3, 3}, nil) }, []error{unix.EINVAL}, "queue 3 is listed twice"},
		{"rx queue twice apart", func() (*Binding, error) { return BindRX(1, buf, []int{1, 2, 1}, nil) }, []error{unix.EINVAL}, "queue 1 is listed twice"},
		{"rx negative queue", func() (*Binding, error) { return BindRX(1, buf, []int{-1}, nil) }, []error{unix.EINVAL}, "queue -1"},
		{"rx ifindex 0", func() (*Binding, error) { return BindRX(0, buf, []int{0}, nil) }, []error{os.ErrNotExist, unix.ENODEV}, "ifindex 0"},
		{"rx ifindex negative", func() (*Binding, error) { return BindRX(-2, buf, []int{0}, nil) }, []error{os.ErrNotExist}, "ifindex -2"},
		{"tx ifindex 0", func() (*Binding, error) { return BindTX(0, buf) }, []error{os.ErrNotExist}, "ifindex 0"},
		{"rx nil buf", func() (*Binding, error) { return BindRX(1, nil, []int{0}, nil) }, []error{unix.EINVAL}, "nil *DMABuf"},
		{"tx nil buf", func() (*Binding, error) { return BindTX(1, nil) }, []error{unix.EINVAL}, "nil *DMABuf"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.bind()
			if b != nil {
				b.Close()
				t.Fatal("got a binding")
			}
			var e *Error
			if !errors.As(err, &e) || !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("error %v, want an *Error saying %q", err, tt.message)
			}
			for _, target := range tt.is {
				if !errors.Is(err, target) {
					t.Errorf("errors.Is(%v, %v) = false", err, target)
				}
			}
		})
	}
	if asked != 0 {
		t.Errorf("the kernel was asked %d times", asked)
	}
	// Valid arguments do reach it, and the binding reports what it was
	// given.
	b, err := BindRX(1, buf, []int{2, 0}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if asked != 1 || !cmp.Equal(b.Queues(), []int{2, 0}) || b.Size() != 4096 || b.Direction() != DirectionRX {
		t.Errorf("asked %d, queues %v, size %d, direction %v", asked, b.Queues(), b.Size(), b.Direction())
	}
}
