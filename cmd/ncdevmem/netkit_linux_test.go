package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"testing"
)

// The kernel's netkit selftests (tools/testing/selftests/drivers/net/hw/
// devmem_lib.py) run ncdevmem in the guest netns on a netkit device, which
// has no channels, with the queue given and no configuration:
//
//	ncdevmem -l -f NK -s IPV6 -p PORT -t Q -q 1 -n [-v 7] [-L]
//	ncdevmem -f NK -s IPV6 -p PORT -t 0 -q 1 -n
//
// Like the C tool, ours must then read no channels and touch no NIC
// setting. On lo (no channels either, like netkit) the runs get past NIC
// setup and fail later, at the udmabuf or at bind-rx (lo cannot bind), with
// exit status 2.
func TestNetkitInvocationsReadNoChannels(t *testing.T) {
	if _, err := net.InterfaceByName("lo"); err != nil {
		t.Skip("no lo:", err)
	}
	// Not even a journal may be written: -n means no NIC setup at all.
	dir := t.TempDir()
	t.Setenv("DEVMEM_JOURNAL_DIR", dir)
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	defer ln.Close()
	busy := strings.TrimPrefix(ln.Addr().String(), "[::1]:")
	for _, args := range [][]string{
		{"-l", "-L", "-f", "lo", "-s", "::1", "-p", "5201", "-t", "0", "-q", "1", "-n"},
		{"-l", "-f", "lo", "-s", "::1", "-p", "5201", "-t", "0", "-q", "1", "-n", "-v", "7"},
		{"-f", "lo", "-s", "::1", "-p", busy, "-t", "0", "-q", "1", "-n"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), args, strings.NewReader("x"), &stdout, &stderr)
			if strings.Contains(stderr.String(), "channels-get") || strings.Contains(stderr.String(), "reading channels") {
				t.Errorf("read channels with -t/-q given:\n%s", stderr.String())
			}
			if code != exitSetup {
				t.Errorf("exit %d, want %d (setup: no udmabuf here, or lo cannot bind):\n%s", code, exitSetup, stderr.String())
			}
			if ents, _ := os.ReadDir(dir); len(ents) != 0 {
				t.Errorf("-n wrote NIC journals: %v", ents)
			}
		})
	}
}

// TestPageSizeFromOS: the buffer is ncdevmem's NUM_PAGES of the OS's pages
// (getpagesize()), not of 4 KiB ones.
func TestPageSizeFromOS(t *testing.T) {
	o, err := parseArgs([]string{"-f", "eth0"})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(defaultBufPages) * int64(os.Getpagesize()); o.BufSize != want {
		t.Errorf("default buffer %d bytes, want %d pages of %d", o.BufSize, defaultBufPages, os.Getpagesize())
	}
}
