package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// pageSize is the OS page size, which ncdevmem asks getpagesize() for: its
// buffer is NUM_PAGES of them and frag alignment is counted against it.
var pageSize = os.Getpagesize()

// defaultBufPages is ncdevmem's NUM_PAGES: its udmabuf is 16000 pages.
const defaultBufPages = 16000

// mode is what a command line asks for.
type mode int

const (
	modeProbe   mode = iota + 1 // neither -s nor -c: run_devmem_tests
	modeServer                  // -l: receive into device memory
	modeClient                  // otherwise: send from device memory
	modeRestore                 // --restore: undo what crashed runs left
)

func (m mode) String() string {
	switch m {
	case modeProbe:
		return "probe"
	case modeServer:
		return "server"
	case modeClient:
		return "client"
	case modeRestore:
		return "restore"
	}
	return "unknown"
}

// options are the parsed command line. Queue numbers are -1 when not given,
// as in ncdevmem, because the defaults depend on the device.
type options struct {
	Listen       bool
	ServerIP     netip.Addr
	ClientIP     netip.Addr
	Port         uint16
	IfName       string
	StartQueue   int
	NumQueues    int
	Validate     uint64 // -v modulus; 0 means off
	FailOnLinear bool
	TXChunk      int64
	NoConfig     bool
	RXPageSize   uint32

	// Extensions of ours.
	JSON    bool
	BufSize int64
	Help    bool
	Restore bool

	Mode mode
}

// optionSpec is one option: its short letter (0 for long-only), its long
// name, whether it takes a value, and how the value is stored.
type optionSpec struct {
	short rune
	long  string
	arg   string // name of the value in the usage text; "" for a switch
	help  string
	set   func(o *options, v string) error
}

var optionSpecs = []optionSpec{
	{'l', "listen", "", "server mode: receive into device memory", func(o *options, _ string) error { o.Listen = true; return nil }},
	{'s', "server", "IP", "server address (IPv4 or IPv6)", func(o *options, v string) error { return parseIP(&o.ServerIP, v) }},
	{'c', "client", "IP", "client address: 5-tuple steering (server), source bind (client)", func(o *options, v string) error { return parseIP(&o.ClientIP, v) }},
	{'p', "port", "PORT", "TCP port (the client binds the same source port with -c)", parsePort},
	{'f', "ifname", "IFNAME", "network interface (required)", func(o *options, v string) error {
		if v == "" {
			return errors.New("empty interface name")
		}
		o.IfName = v
		return nil
	}},
	{'t', "start-queue", "N", "first RX queue to bind", func(o *options, v string) error { return parseQueue(&o.StartQueue, v) }},
	{'q', "num-queues", "N", "number of RX queues to bind", func(o *options, v string) error { return parseQueue(&o.NumQueues, v) }},
	{'v', "validate", "N", "check the byte pattern 1,2,...,N-1,'\\n' repeating", func(o *options, v string) error {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return fmt.Errorf("validate: %q is not a number", v)
		}
		o.Validate = n
		return nil
	}},
	{'L', "fail-on-linear", "", "fail on any data the NIC did not split into device memory", func(o *options, _ string) error { o.FailOnLinear = true; return nil }},
	{'z', "tx-chunk", "BYTES", "client: split sends into iovecs of this many bytes", func(o *options, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("tx-chunk: %q is not a byte count", v)
		}
		o.TXChunk = n
		return nil
	}},
	{'n', "no-config", "", "leave the NIC configuration (header split, RSS, ntuple) alone", func(o *options, _ string) error { o.NoConfig = true; return nil }},
	{'b', "rx-page-size", "BYTES", "rx-page-size for bind-rx (0: driver default)", func(o *options, v string) error {
		// strtoul(optarg, NULL, 0) in ncdevmem: decimal, 0x hex or 0 octal.
		n, err := strconv.ParseUint(v, 0, 32)
		if err != nil {
			return fmt.Errorf("invalid rx_page_size: %s", v)
		}
		o.RXPageSize = uint32(n)
		return nil
	}},
	{0, "json", "", "print the summary as one JSON object on stdout", func(o *options, _ string) error { o.JSON = true; return nil }},
	{0, "buf-size", "BYTES", "udmabuf size (suffix K, M or G; default 16000 pages)", func(o *options, v string) error {
		n, err := parseSize(v)
		if err != nil {
			return err
		}
		o.BufSize = n
		return nil
	}},
	{0, "restore", "", "undo the NIC changes of ncdevmem runs that died (journals in $DEVMEM_JOURNAL_DIR or /run/devmem), then exit", func(o *options, _ string) error { o.Restore = true; return nil }},
	{'h', "help", "", "show this help", func(o *options, _ string) error { o.Help = true; return nil }},
}

func parseIP(dst *netip.Addr, v string) error {
	a, err := netip.ParseAddr(v)
	if err != nil || a.Zone() != "" {
		return fmt.Errorf("%q is not an IP address", v)
	}
	*dst = a.Unmap()
	return nil
}

func parsePort(o *options, v string) error {
	n, err := strconv.ParseUint(v, 10, 16)
	if err != nil || n == 0 {
		return fmt.Errorf("port: %q is not a port number (1-65535)", v)
	}
	o.Port = uint16(n)
	return nil
}

func parseQueue(dst *int, v string) error {
	n, err := strconv.ParseUint(v, 10, 31)
	if err != nil {
		return fmt.Errorf("queue: %q is not a queue number", v)
	}
	*dst = int(n)
	return nil
}

func parseSize(v string) (int64, error) {
	mult := int64(1)
	num := v
	switch {
	case strings.HasSuffix(v, "K"):
		mult, num = 1<<10, v[:len(v)-1]
	case strings.HasSuffix(v, "M"):
		mult, num = 1<<20, v[:len(v)-1]
	case strings.HasSuffix(v, "G"):
		mult, num = 1<<30, v[:len(v)-1]
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("buf-size: %q is not a size", v)
	}
	return n * mult, nil
}

// usageError is a command line that cannot run; it exits with status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// parseArgs parses a command line the way ncdevmem's getopt does (short
// options, combined switches like -lL, values attached or separate,
// arguments in any order) and accepts --long and --long=value too. It then
// applies ncdevmem's checks that do not need the device.
func parseArgs(args []string) (*options, error) {
	o := &options{StartQueue: -1, NumQueues: -1, BufSize: defaultBufPages * int64(pageSize)}
	byShort := map[rune]*optionSpec{}
	byLong := map[string]*optionSpec{}
	for i := range optionSpecs {
		s := &optionSpecs[i]
		if s.short != 0 {
			byShort[s.short] = s
		}
		byLong[s.long] = s
	}
	apply := func(s *optionSpec, name, v string) error {
		if err := s.set(o, v); err != nil {
			return usagef("%s: %v", name, err)
		}
		return nil
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			if rest := args[i+1:]; len(rest) > 0 {
				return nil, usagef("unexpected argument %q", rest[0])
			}
			i = len(args)
		case strings.HasPrefix(a, "--"):
			name, v, hasValue := strings.Cut(a[2:], "=")
			s := byLong[name]
			if s == nil {
				return nil, usagef("unknown option --%s", name)
			}
			if s.arg == "" {
				if hasValue {
					return nil, usagef("option --%s takes no value", name)
				}
			} else if !hasValue {
				if i+1 >= len(args) {
					return nil, usagef("option --%s needs a value (%s)", name, s.arg)
				}
				i++
				v = args[i]
			}
			if err := apply(s, "--"+name, v); err != nil {
				return nil, err
			}
		case strings.HasPrefix(a, "-") && len(a) > 1:
			letters := []rune(a[1:])
			for j := 0; j < len(letters); j++ {
				letter := letters[j]
				s := byShort[letter]
				if s == nil {
					return nil, usagef("unknown option -%c", letter)
				}
				v := ""
				if s.arg != "" {
					if rest := string(letters[j+1:]); rest != "" {
						v = rest
					} else if i+1 < len(args) {
						i++
						v = args[i]
					} else {
						return nil, usagef("option -%c needs a value (%s)", letter, s.arg)
					}
					j = len(letters)
				}
				if err := apply(s, "-"+string(letter), v); err != nil {
					return nil, err
				}
			}
		default:
			return nil, usagef("unexpected argument %q", a)
		}
	}
	if o.Help {
		return o, nil
	}
	return o, o.check()
}

// check applies ncdevmem's main() checks that need no device, in its order.
func (o *options) check() error {
	if o.Restore {
		// Every NIC of the network namespace; nothing else applies.
		o.Mode = modeRestore
		return nil
	}
	if o.IfName == "" {
		return usagef("missing -f argument (interface)")
	}
	if !o.ServerIP.IsValid() && !o.ClientIP.IsValid() {
		o.Mode = modeProbe
		if (o.StartQueue < 0) != (o.NumQueues < 0) {
			return usagef("both -t and -q are required")
		}
		return nil
	}
	o.Mode = modeClient
	if o.Listen {
		o.Mode = modeServer
	}
	switch {
	case o.StartQueue < 0 && o.NumQueues >= 0:
		return usagef("missing -t argument (start queue)")
	case o.NumQueues < 0 && o.StartQueue >= 0:
		return usagef("missing -q argument (number of queues)")
	case !o.ServerIP.IsValid():
		return usagef("missing -s argument (server address)")
	case o.Port == 0:
		return usagef("missing -p argument (port)")
	case o.ClientIP.IsValid() && o.ClientIP.Is4() != o.ServerIP.Is4():
		return usagef("-s %v and -c %v are of different address families", o.ServerIP, o.ClientIP)
	}
	if o.NumQueues == 0 && o.Mode == modeServer {
		return usagef("-q 0: nothing to bind")
	}
	return nil
}

// usage is the help text.
func usage() string {
	var b strings.Builder
	b.WriteString("usage: ncdevmem -f IFNAME [-l] [-s SERVER_IP] [-c CLIENT_IP] [-p PORT] [-t START_QUEUE -q NUM_QUEUES]\n")
	b.WriteString("                [-v N] [-L] [-z CHUNK] [-n] [-b RX_PAGE_SIZE] [--json] [--buf-size SIZE]\n")
	b.WriteString("       ncdevmem --restore\n")
	b.WriteString("server: -l -s IP -p PORT; client: -s IP -p PORT (stdin is sent); neither -s nor -c: probe the NIC\n\n")
	for _, s := range optionSpecs {
		name := "    --" + s.long
		if s.short != 0 {
			name = fmt.Sprintf("-%c, --%s", s.short, s.long)
		}
		if s.arg != "" {
			name += " " + s.arg
		}
		fmt.Fprintf(&b, "  %-28s %s\n", name, s.help)
	}
	b.WriteString("\nexit status: 0 ok, 1 data or validation error, 2 usage or setup error\n")
	return b.String()
}
