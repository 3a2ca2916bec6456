//go:build vmtest

package nictest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"

	"github.com/devmem-go/devmem/selftest"
)

// rssControl creates, modifies and deletes additional RSS contexts whose
// indirection table spreads over n queues from start.
type rssControl interface {
	create(t *testing.T, topo *selftest.Topology, start, n int) string
	modify(t *testing.T, topo *selftest.Topology, ctx string, start, n int)
	delete(topo *selftest.Topology, ctx string) error
}

// ethtoolRSS is ethtool(8)'s -X, which uses the ETHTOOL_SRSSH ioctl.
type ethtoolRSS struct{}

func (ethtoolRSS) create(t *testing.T, topo *selftest.Topology, start, n int) string {
	t.Helper()
	out := ethtool(t, "-X", topo.IfName, "context", "new", "start", itoa(start), "equal", itoa(n))
	m := regexp.MustCompile(`New RSS context is (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ethtool -X context new: %q", out)
	}
	return m[1]
}

func (ethtoolRSS) modify(t *testing.T, topo *selftest.Topology, ctx string, start, n int) {
	t.Helper()
	ethtool(t, "-X", topo.IfName, "context", ctx, "start", itoa(start), "equal", itoa(n))
}

func (ethtoolRSS) delete(topo *selftest.Topology, ctx string) error {
	out, err := ethtoolErr("-X", topo.IfName, "context", ctx, "delete")
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// ethtool netlink (Documentation/netlink/specs/ethtool.yaml, 7.3 numbers
// from include/uapi/linux/ethtool_netlink_generated.h).
const (
	ethtoolMsgRSSGet       = 38
	ethtoolMsgRSSSet       = 48
	ethtoolMsgRSSCreateAct = 49
	ethtoolMsgRSSDeleteAct = 50

	ethtoolAHeaderDevIndex = 1
	ethtoolARSSHeader      = 1
	ethtoolARSSContext     = 2
	ethtoolARSSIndir       = 4
)

// netlinkRSS is what a devmem receiver that speaks ethtool netlink does
// (rss-create-act and friends), with the indirection table given as n
// entries, which the kernel repeats over the device's table.
type netlinkRSS struct {
	c      *genetlink.Conn
	family genetlink.Family
}

func newNetlinkRSS(t *testing.T, _ *selftest.Topology) rssControl {
	t.Helper()
	c, err := genetlink.Dial(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f, err := c.GetFamily("ethtool")
	if err != nil {
		t.Fatal(err)
	}
	return &netlinkRSS{c: c, family: f}
}

func (r *netlinkRSS) do(cmd uint8, ifindex int, ctx uint32, indir []uint32) ([]genetlink.Message, error) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(ethtoolARSSHeader, func(nae *netlink.AttributeEncoder) error {
		nae.Uint32(ethtoolAHeaderDevIndex, uint32(ifindex))
		return nil
	})
	if ctx != 0 {
		ae.Uint32(ethtoolARSSContext, ctx)
	}
	if indir != nil {
		b := make([]byte, 4*len(indir))
		for i, q := range indir {
			binary.NativeEndian.PutUint32(b[4*i:], q)
		}
		ae.Bytes(ethtoolARSSIndir, b)
	}
	data, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	msg := genetlink.Message{Header: genetlink.Header{Command: cmd, Version: r.family.Version}, Data: data}
	// get and create answer with a message; set and delete only with an
	// ack. Asking for an ack on top of a reply would leave it queued for
	// the next request to trip on.
	flags := netlink.Request
	if cmd == ethtoolMsgRSSSet || cmd == ethtoolMsgRSSDeleteAct {
		flags |= netlink.Acknowledge
	}
	return r.c.Execute(msg, r.family.ID, flags)
}

// rssContext parses a reply's context id and indirection table.
func rssContext(m genetlink.Message) (ctx uint32, indir []uint32, err error) {
	ad, err := netlink.NewAttributeDecoder(m.Data)
	if err != nil {
		return 0, nil, err
	}
	for ad.Next() {
		switch ad.Type() {
		case ethtoolARSSContext:
			ctx = ad.Uint32()
		case ethtoolARSSIndir:
			b := ad.Bytes()
			for i := 0; i+4 <= len(b); i += 4 {
				indir = append(indir, binary.NativeEndian.Uint32(b[i:]))
			}
		}
	}
	return ctx, indir, ad.Err()
}

func span(start, n int) []uint32 {
	s := make([]uint32, n)
	for i := range s {
		s[i] = uint32(start + i)
	}
	return s
}

// checkTable reads the context back (rss-get) and checks that its table
// uses exactly the queues from start to start+n-1, in turn.
func (r *netlinkRSS) checkTable(t *testing.T, topo *selftest.Topology, ctx uint32, start, n int) {
	t.Helper()
	msgs, err := r.do(ethtoolMsgRSSGet, topo.IfIndex, ctx, nil)
	if err != nil || len(msgs) != 1 {
		t.Fatalf("rss-get context %d: %d replies, %v", ctx, len(msgs), err)
	}
	got, indir, err := rssContext(msgs[0])
	if err != nil {
		t.Fatal(err)
	}
	if got != ctx || len(indir) == 0 {
		t.Fatalf("rss-get context %d: context %d, table %v", ctx, got, indir)
	}
	for i, q := range indir {
		if q != uint32(start+i%n) {
			t.Fatalf("context %d table %v, want queues %d-%d in turn", ctx, indir, start, start+n-1)
		}
	}
}

func (r *netlinkRSS) create(t *testing.T, topo *selftest.Topology, start, n int) string {
	t.Helper()
	msgs, err := r.do(ethtoolMsgRSSCreateAct, topo.IfIndex, 0, span(start, n))
	if err != nil {
		t.Fatalf("rss-create-act: %v", err)
	}
	if len(msgs) != 1 {
		t.Fatalf("rss-create-act: %d replies", len(msgs))
	}
	ctx, _, err := rssContext(msgs[0])
	if err != nil || ctx == 0 {
		t.Fatalf("rss-create-act reply: context %d, %v", ctx, err)
	}
	r.checkTable(t, topo, ctx, start, n)
	return strconv.FormatUint(uint64(ctx), 10)
}

func (r *netlinkRSS) modify(t *testing.T, topo *selftest.Topology, ctx string, start, n int) {
	t.Helper()
	id, _ := strconv.ParseUint(ctx, 10, 32)
	if _, err := r.do(ethtoolMsgRSSSet, topo.IfIndex, uint32(id), span(start, n)); err != nil {
		t.Fatalf("rss-set context %s: %v", ctx, err)
	}
	r.checkTable(t, topo, uint32(id), start, n)
}

func (r *netlinkRSS) delete(topo *selftest.Topology, ctx string) error {
	id, _ := strconv.ParseUint(ctx, 10, 32)
	if _, err := r.do(ethtoolMsgRSSDeleteAct, topo.IfIndex, uint32(id), nil); err != nil {
		return err
	}
	// Gone: rss-get of it fails.
	if _, err := r.do(ethtoolMsgRSSGet, topo.IfIndex, uint32(id), nil); err == nil {
		return errors.New("rss-get still answers for the deleted context " + ctx)
	}
	return nil
}
