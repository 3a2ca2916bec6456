//go:build linux

// Command gorx is the smallest receiver worth measuring that uses the
// library as documented: per flow one goroutine with a devmem.Receiver, the
// payload validated in place in the dma-buf's mapping, the tokens returned
// through a TokenBatcher. It is the Go counterpart of fastrx (the optimized
// C receiver) and takes the same flags, so selftest/bench runs both on the
// same binding: the NIC setup and bind-rx are done by the caller, which
// passes the dma-buf as an inherited fd (-d); gorx binds it to the queues
// the caller steered the flows to (-I IFINDEX -Q QUEUES), as the Receiver
// needs the *Binding. max_outstanding is the sum of the flows' peaks
// (ReceiverStats.PeakOutstanding): exact for one flow, an upper bound for
// several.
//
// At exit it prints one line, fastrx's plus the allocation counts:
//
//	bytes=N recvmsg=N frags=N linear=N readable=N dontneed=N tokens=N
//	max_outstanding=N responses=N mismatches=N allocs=N allocs_steady=N
//	recvmsg_steady=N cpu_us=N
//
// cpu_us is the process's user+sys time from the last accept to the end.
// allocs is every heap allocation of the process from the first accept to
// the end; allocs_steady those between the moment every flow made its
// warm-up recvmsg calls and the first EOF, over recvmsg_steady calls.
package main

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

func main() {
	var c config
	flag.StringVar(&c.mode, "m", "devmem", "devmem (the only mode: plain TCP is fastrx's)")
	addr := flag.String("a", "0.0.0.0", "address to listen on")
	port := flag.Int("p", 5201, "port to listen on")
	flag.IntVar(&c.flows, "n", 1, "connections to accept, one goroutine each")
	fd := flag.Int("d", -1, "inherited dma-buf fd")
	flag.IntVar(&c.ifindex, "I", 0, "bind the dma-buf to this interface's -Q queues (the Receiver needs its *Binding)")
	queues := flag.String("Q", "", "queues to bind, comma-separated")
	flag.UintVar(&c.pageSize, "S", 0, "bind-rx rx-page-size (0: the driver's default)")
	flag.IntVar(&c.validate, "v", 0, "validate ncdevmem's -v pattern with this modulus (7), 0: off")
	flag.IntVar(&c.batch, "b", 0, "ReceiverConfig.ReleaseBatch (0: the library's default)")
	flag.BoolVar(&c.blockThread, "t", false, "ReceiverConfig.BlockThread: wait for data in poll(2) on the flow's thread")
	flag.IntVar(&c.peerBase, "P", 0, "peer port of flow 0 (flow index = peer port - P)")
	flag.IntVar(&c.rrFlows, "r", 0, "the last R flows are request/response")
	flag.IntVar(&c.req, "q", 256, "request size of request/response flows")
	flag.IntVar(&c.resp, "R", 64, "response size")
	flag.IntVar(&c.warmup, "w", 8, "recvmsg calls per flow before the steady-state allocation count starts")
	flag.Parse()
	for _, q := range strings.Split(*queues, ",") {
		if n, err := strconv.Atoi(q); err == nil {
			c.queues = append(c.queues, n)
		}
	}
	if err := run(&c, *addr, *port, *fd); err != nil {
		fmt.Fprintf(os.Stderr, "gorx: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	mode                         string
	flows, validate, batch       int
	blockThread                  bool
	peerBase, rrFlows, req, resp int
	warmup                       int
	ifindex                      int
	queues                       []int
	pageSize                     uint
}

func run(c *config, addr string, port, fd int) error {
	if c.mode != "devmem" || c.flows < 1 || c.rrFlows < 0 || c.rrFlows > c.flows ||
		c.req < 1 || c.resp < 1 || c.validate < 0 || c.validate > 256 {
		return fmt.Errorf("bad flags")
	}
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return err
	}
	buf, mem, err := openBuffer(fd, c.validate != 0)
	if err != nil {
		return err
	}
	defer buf.Close()
	binding, err := bind(c, buf)
	if err != nil {
		return err
	}
	defer binding.Close()
	// Listen only once bound: the driver connects as soon as it sees the
	// listener, and data reaching the queue before bind-rx stays readable.
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(port))))
	if err != nil {
		return err
	}
	conns := make([]*net.TCPConn, c.flows)
	for i := range conns {
		if conns[i], err = ln.AcceptTCP(); err != nil {
			return err
		}
	}
	ln.Close()

	// GORX_CPUPROFILE=FILE: a pprof CPU profile of the receive loop.
	if path := os.Getenv("GORX_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	// GORX_MEMPROFILE=FILE: every allocation's site (MemProfileRate 1),
	// written at the end.
	if path := os.Getenv("GORX_MEMPROFILE"); path != "" {
		runtime.MemProfileRate = 1
		defer func() {
			if f, err := os.Create(path); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	// CPU time from here on: the receive loop, not the setup.
	cpu0, sys0, vcsw0, ivcsw0 := cpuTime()
	st := newStats(c.flows, c.warmup)
	flows := make([]*flow, c.flows)
	var wg sync.WaitGroup
	for i, conn := range conns {
		index := i
		if c.peerBase != 0 {
			index = conn.RemoteAddr().(*net.TCPAddr).Port - c.peerBase
		}
		f := &flow{index: index, rr: c.rrFlows > 0 && index >= c.flows-c.rrFlows}
		flows[i] = f
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer conn.Close()
			f.err = receiveFlow(c, st, f, conn, binding, buf, mem)
		}()
	}
	wg.Wait()
	cpu, sys, vcsw, ivcsw := cpuTime()
	cpu, sys, vcsw, ivcsw = cpu-cpu0, sys-sys0, vcsw-vcsw0, ivcsw-ivcsw0

	var t flowCounts
	var errs []error
	for _, f := range flows {
		t.add(&f.flowCounts)
		if f.err != nil {
			errs = append(errs, fmt.Errorf("flow %d: %w", f.index, f.err))
		}
	}
	allocs, steady, steadyCalls := st.allocCounts()
	if os.Getenv("GORX_CPUPROFILE") != "" || os.Getenv("GORX_MEMPROFILE") != "" {
		steady = "n/a" // the profile writer allocates in this process
	}
	fmt.Printf("bytes=%d recvmsg=%d frags=%d linear=%d readable=%d dontneed=%d tokens=%d max_outstanding=%d responses=%d mismatches=%d allocs=%d allocs_steady=%s recvmsg_steady=%d cpu_us=%d cpu_sys_us=%d csw_vol=%d csw_invol=%d\n",
		t.bytes, t.recvmsgs, t.frags, t.linear, t.readable, t.dontneed, t.tokens,
		t.peak, t.responses, t.mismatches, allocs, steady, steadyCalls, cpu, sys, vcsw, ivcsw)
	for _, err := range errs {
		fmt.Fprintf(os.Stderr, "gorx: %v\n", err)
	}
	if len(errs) > 0 {
		os.Exit(1)
	}
	return nil
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// cpuTime is the process's user+sys time and its sys time in
// microseconds, and its threads' voluntary and involuntary context
// switches.
func cpuTime() (total, sys, vcsw, ivcsw int64) {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return (ru.Utime.Nano() + ru.Stime.Nano()) / 1000, ru.Stime.Nano() / 1000, int64(ru.Nvcsw), int64(ru.Nivcsw)
}
