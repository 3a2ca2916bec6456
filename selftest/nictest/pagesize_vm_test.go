//go:build vmtest

package nictest

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/devmem-go/devmem"
	"github.com/devmem-go/devmem/selftest"
	"golang.org/x/sys/unix"
)

// reserveHugepages makes sure n free 2 MiB hugepages exist, or skips.
func reserveHugepages(t *testing.T, n int) {
	t.Helper()
	if err := selftest.ReserveHugepages(n); errors.Is(err, selftest.ErrNoHugepages) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
}

// TestRXPageSize binds with every rx-page-size the NIC accepts (PAGE_SIZE
// to 32 KiB, bnxt's range) and receives through it: each buffer of the
// page pool is that big, payloads are packed into it and every byte lands
// where the frags say. Sizes outside the range are refused with the
// driver's message.
func TestRXPageSize(t *testing.T) {
	const bufSize = 8 << 20
	// Each subtest takes its own: freed pages come back only once the
	// unbound page pool lets go of the dma-buf.
	reserveHugepages(t, 5*bufSize>>21)
	nd, err := devmem.DialNetdev()
	if err != nil {
		t.Fatal(err)
	}
	defer nd.Close()
	for _, size := range []uint32{4096, 8192, 16384, 32768} {
		t.Run(strconv.Itoa(int(size)), func(t *testing.T) {
			topo, nic := prepareNIC(t)
			nextPort++
			x := &rx{topo: topo, nic: nic, queue: 3, port: nextPort}
			if x.buf, err = devmem.NewUDMABuf(bufSize, &devmem.UDMABufConfig{HugePageSize: 2 << 20}); err != nil {
				t.Fatal(err)
			}
			defer x.buf.Close()
			if x.mem, err = x.buf.Map(); err != nil {
				t.Fatal(err)
			}
			if x.binding, err = devmem.BindRX(topo.IfIndex, x.buf, []int{3}, &devmem.BindRXOptions{RXPageSize: size}); err != nil {
				t.Fatalf("bind-rx with rx-page-size %d: %v", size, err)
			}
			defer x.binding.Close()
			if err := nic.setup.SteerRSSAway(3); err != nil {
				t.Fatal(err)
			}
			x.steer(t, x.port, 3)
			p := boundPool(t, nd, x)
			if p.Inflight == 0 || p.InflightMem != p.Inflight*uint64(size) {
				t.Errorf("pool %d: %d buffers in flight, %d bytes: not %d-byte buffers", p.ID, p.Inflight, p.InflightMem, size)
			}
			frags := x.transfer(t, x.topo.Addr4, 2<<20)
			g := measure(frags, uint64(size))
			t.Logf("%d frags, %d crossings, up to %d per buffer", g.frags, g.crossings, g.maxPerNiov)
			if g.crossings == 0 || g.maxPerNiov < 2 {
				t.Errorf("not packed into %d-byte buffers: %+v", size, g)
			}
			if g.maxSize > size {
				t.Errorf("frag of %d bytes in %d-byte buffers", g.maxSize, size)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		topo, _ := prepareNIC(t)
		buf, err := devmem.NewUDMABuf(bufSize, &devmem.UDMABufConfig{HugePageSize: 2 << 20})
		if err != nil {
			t.Fatal(err)
		}
		defer buf.Close()
		b, err := devmem.BindRX(topo.IfIndex, buf, []int{3}, &devmem.BindRXOptions{RXPageSize: 65536})
		if err == nil {
			b.Close()
			t.Fatal("bind-rx with rx-page-size 65536 succeeded")
		}
		if !errors.Is(err, unix.ERANGE) || !strings.Contains(err.Error(), "rx_page_size") {
			t.Errorf("rx-page-size 65536: %v, want ERANGE with the driver's message", err)
		}
	})
}
