package main

import (
	"context"
	"io"
	"net/netip"
	"strings"
	"testing"
)

func TestParseArgsCompat(t *testing.T) {
	v4 := netip.MustParseAddr("1.2.3.4")
	v4c := netip.MustParseAddr("1.2.3.5")
	v6 := netip.MustParseAddr("fd00::1")
	tests := []struct {
		name string
		args string
		want options
	}{
		{"ncdevmem server", "-l -f eth0 -s 1.2.3.4 -p 5201 -v 7",
			options{Listen: true, IfName: "eth0", ServerIP: v4, Port: 5201, Validate: 7, Mode: modeServer}},
		{"long names", "--listen --ifname eth0 --server 1.2.3.4 --port=5201 --validate 7",
			options{Listen: true, IfName: "eth0", ServerIP: v4, Port: 5201, Validate: 7, Mode: modeServer}},
		{"attached values and combined switches", "-lLn -feth0 -s1.2.3.4 -p5201",
			options{Listen: true, FailOnLinear: true, NoConfig: true, IfName: "eth0", ServerIP: v4, Port: 5201, Mode: modeServer}},
		{"5-tuple with queues", "-l -f eth0 -s 1.2.3.4 -c 1.2.3.5 -p 1 -t 2 -q 3",
			options{Listen: true, IfName: "eth0", ServerIP: v4, ClientIP: v4c, Port: 1, StartQueue: 2, NumQueues: 3, Mode: modeServer}},
		{"client with chunks", "-f eth0 -s fd00::1 -p 5201 -z 3",
			options{IfName: "eth0", ServerIP: v6, Port: 5201, TXChunk: 3, Mode: modeClient}},
		{"v4-mapped address is unmapped", "-f eth0 -s ::ffff:1.2.3.4 -p 9",
			options{IfName: "eth0", ServerIP: v4, Port: 9, Mode: modeClient}},
		{"probe", "-f eth0", options{IfName: "eth0", Mode: modeProbe}},
		{"probe with queues", "-f eth0 -t 1 -q 1", options{IfName: "eth0", StartQueue: 1, NumQueues: 1, Mode: modeProbe}},
		{"rx page size in hex like strtoul", "-f eth0 -b 0x4000", options{IfName: "eth0", RXPageSize: 16384, Mode: modeProbe}},
		{"extensions", "-f eth0 --json --buf-size 4M", options{IfName: "eth0", JSON: true, BufSize: 4 << 20, Mode: modeProbe}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseArgs(strings.Fields(tt.args))
			if err != nil {
				t.Fatal(err)
			}
			want := tt.want
			if want.StartQueue == 0 && !strings.Contains(tt.args, "-t") {
				want.StartQueue = -1
			}
			if want.NumQueues == 0 && !strings.Contains(tt.args, "-q") {
				want.NumQueues = -1
			}
			if want.BufSize == 0 {
				want.BufSize = 16000 * 4096
			}
			if *got != want {
				t.Errorf("parseArgs(%q)\n got %+v\nwant %+v", tt.args, *got, want)
			}
		})
	}
}

func TestParseArgsErrors(t *testing.T) {
	tests := []struct{ args, wantMsg string }{
		{"-l -s 1.2.3.4 -p 5201", "missing -f"},
		{"-f eth0 -x", "unknown option -x"},
		{"-f eth0 --bogus", "unknown option --bogus"},
		{"-f eth0 -l -s 1.2.3.4", "missing -p"},
		{"-f eth0 -l -c 1.2.3.4 -p 1", "missing -s"},
		{"-f eth0 -l -s 1.2.3.4 -p 1 -t 1", "missing -q"},
		{"-f eth0 -l -s 1.2.3.4 -p 1 -q 1", "missing -t"},
		{"-f eth0 -t 1", "both -t and -q"},
		{"-f eth0 -s 1.2.3.4 -p 70000", "not a port"},
		{"-f eth0 -s 1.2.3.4 -p http", "not a port"},
		{"-f eth0 -s not-an-ip -p 1", "not an IP"},
		{"-f eth0 -s 1.2.3.4 -c fd00::2 -p 1", "different address families"},
		{"-f eth0 -v seven", "not a number"},
		{"-f eth0 -t -1 -q 1", "not a queue"},
		{"-f eth0 -b 0x100000000", "invalid rx_page_size"},
		{"-f eth0 -z", "needs a value"},
		{"-f eth0 --port", "needs a value"},
		{"-f eth0 --listen=1", "takes no value"},
		{"-f eth0 extra", "unexpected argument"},
		{"-f eth0 --buf-size 0", "not a size"},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			_, err := parseArgs(strings.Fields(tt.args))
			if err == nil {
				t.Fatalf("parseArgs(%q) succeeded", tt.args)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
			if code := exitCode(err); code != exitSetup {
				t.Errorf("exit status %d, want %d", code, exitSetup)
			}
		})
	}
}

// Every ncdevmem getopt letter ("Lls:c:p:v:q:t:f:z:nb:") exists, with a
// value exactly where ncdevmem takes one, and has a long name.
func TestEveryNcdevmemFlag(t *testing.T) {
	const getopt = "Lls:c:p:v:q:t:f:z:nb:"
	want := map[rune]bool{}
	for i, r := range getopt {
		if r == ':' {
			continue
		}
		want[r] = i+1 < len(getopt) && getopt[i+1] == ':'
	}
	for r, takesValue := range want {
		var found *optionSpec
		for i := range optionSpecs {
			if optionSpecs[i].short == r {
				found = &optionSpecs[i]
			}
		}
		if found == nil {
			t.Errorf("-%c missing", r)
			continue
		}
		if (found.arg != "") != takesValue {
			t.Errorf("-%c takes a value: %v, ncdevmem: %v", r, found.arg != "", takesValue)
		}
		if found.long == "" {
			t.Errorf("-%c has no long name", r)
		}
	}
}

func TestRunUsageExitStatus(t *testing.T) {
	var stderr strings.Builder
	if code := run(context.Background(), []string{"-q"}, strings.NewReader(""), io.Discard, &stderr); code != exitSetup {
		t.Errorf("exit status %d, want %d", code, exitSetup)
	}
	if !strings.Contains(stderr.String(), "needs a value") {
		t.Errorf("stderr %q lacks the cause", stderr.String())
	}
	var stdout strings.Builder
	if code := run(context.Background(), []string{"--help"}, strings.NewReader(""), &stdout, io.Discard); code != exitOK {
		t.Errorf("--help: exit status %d", code)
	}
	for _, s := range optionSpecs {
		if !strings.Contains(stdout.String(), "--"+s.long) {
			t.Errorf("usage lacks --%s", s.long)
		}
	}
}
