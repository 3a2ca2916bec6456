//go:build linux

// Command bench runs, inside the devmem test VM, every receiver worth
// comparing on the same transfers over the same netdevsim pair, alternating,
// and prints tables of medians: throughput, receiver CPU per GiB (user+sys),
// the whole VM's CPU per GiB, recvmsg and SO_DEVMEM_DONTNEED calls per GiB,
// DONTNEED calls per frag, tokens outstanding at most, allocations. The
// receivers:
//
//	tcp     plain TCP (fastrx -m tcp / tcp-touch): the link's limit, and
//	        what a copy receive costs when every byte is read once
//	fastrx  the optimized C devmem receiver (fastrx/fastrx.c)
//	C       the kernel's C ncdevmem (tools/testing/selftests/.../ncdevmem.c)
//	ours    our cmd/ncdevmem
//	gorx    the minimal receive loop on the library (gorx/)
//
// tcp, fastrx and gorx get their NIC setup from this driver (nicsetup.go)
// and the dma-buf as an inherited fd; C and ours configure the NIC
// themselves. The senders are goroutines of this driver in netns peer.
// Then the scaling matrix (flows x bound queues, one thread or goroutine per
// flow) and a mixed workload (request/response next to a bulk flow on the
// same binding). selftest/bench/run.sh builds everything and boots the VM;
// see docs/PERFORMANCE.md.
package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/devmem-go/devmem/selftest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

type config struct {
	ours, theirs, shim, fastrx, gorx, gorxB string
	size, scaleSize, mixedSize              int64
	runs                                    int
	modes, receivers                        []string
	scale                                   [][2]int // flows, queues
	scaleReceivers, mixedReceivers          []string
	geom2Receivers                          []string
	rrTime                                  time.Duration
	req, resp                               int
	port                                    int
	keepLogs                                bool
	perf, perfSystem                        string
	geoms                                   []geometry
}

// A geometry is a setting of the simulated NIC's frag-geometry knobs
// (netdevsim debugfs), under a label.
type geometry struct {
	label string
	knobs [][2]string
}

// pageSizeKnob is the geometry knob for bind-rx's rx-page-size (the size
// of the buffers the bound queues post), a property of the binding, not of
// the NIC: bind:rx-page-size=32768.
const pageSizeKnob = "bind:rx-page-size"

// pageSize is the geometry's rx-page-size, 0 for the driver's default.
func (g geometry) pageSize() (uint32, error) {
	for _, kv := range g.knobs {
		if kv[0] == pageSizeKnob {
			n, err := strconv.ParseUint(kv[1], 10, 32)
			if err != nil {
				return 0, fmt.Errorf("geometry %s: %s=%s: %w", g.label, kv[0], kv[1], err)
			}
			return uint32(n), nil
		}
	}
	return 0, nil
}

type geomFlags []geometry

func (g *geomFlags) String() string { return fmt.Sprint(*g) }
func (g *geomFlags) Set(s string) error {
	label, rest, _ := strings.Cut(s, ":")
	geo := geometry{label: label}
	for _, kv := range strings.Split(rest, ",") {
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("geometry %q: %q is not knob=value", s, kv)
		}
		geo.knobs = append(geo.knobs, [2]string{k, v})
	}
	*g = append(*g, geo)
	return nil
}

func run() error {
	var c config
	var modes, receivers, geom2Recv, scale, scaleRecv, mixedRecv string
	var geoms geomFlags
	flag.StringVar(&c.ours, "ours", "bin/ncdevmem", "our cmd/ncdevmem binary")
	flag.StringVar(&c.theirs, "theirs", os.Getenv("DEVMEM_C_NCDEVMEM"), "the kernel's C ncdevmem binary")
	flag.StringVar(&c.shim, "shim", "", "countsys.so, the LD_PRELOAD counter for the C tool")
	flag.StringVar(&c.fastrx, "fastrx", "bin/fastrx", "the optimized C receiver (selftest/bench/fastrx)")
	flag.StringVar(&c.gorx, "gorx", "bin/gorx", "the minimal library receive loop (selftest/bench/gorx)")
	flag.StringVar(&c.gorxB, "gorx-b", "", "another build of gorx, to compare two versions of the library in one boot: receivers gorx@b, gorxt@b")
	flag.Int64Var(&c.size, "size", 128<<20, "bytes per transfer")
	flag.IntVar(&c.runs, "runs", 3, "runs per receiver and mode")
	flag.StringVar(&modes, "modes", "on,off", "validation modes: on (every byte checked: -v 7), off (payload not looked at; the tools write it to /dev/null)")
	flag.StringVar(&receivers, "receivers", "tcp,fastrx,C,ours,gorx,gorx1,gorxt", "receivers of the single-flow table")
	flag.StringVar(&geom2Recv, "geom2-receivers", "tcp,fastrx,C,ours,gorx,gorxt", "receivers of the single-flow table on the other geometries (plain TCP depends on HW-GRO, not on the packing)")
	flag.StringVar(&scale, "scale", "1x1,2x1,4x1,8x1,1x2,2x2,4x2,8x2,1x4,2x4,4x4,8x4", "scaling matrix: FLOWSxQUEUES, validation on; empty: none")
	flag.StringVar(&scaleRecv, "scale-receivers", "fastrx,gorx", "receivers of the scaling matrix")
	flag.Int64Var(&c.scaleSize, "scale-size", 0, "bytes per scaling transfer, over all flows (0: min(size/4, 128 MiB))")
	flag.StringVar(&mixedRecv, "mixed-receivers", "tcp,fastrx,gorx", "receivers of the mixed workload; empty: none")
	flag.Int64Var(&c.mixedSize, "mixed-size", 0, "bulk bytes of the mixed workload (0: min(size/2, 64 MiB))")
	flag.DurationVar(&c.rrTime, "rr-time", 3*time.Second, "request/response alone: how long")
	flag.IntVar(&c.req, "rr-req", 256, "request size")
	flag.IntVar(&c.resp, "rr-resp", 64, "response size")
	flag.IntVar(&c.port, "port", 5300, "first TCP port; each job takes the next ones")
	flag.BoolVar(&c.keepLogs, "v", false, "print each receiver's stderr tail")
	flag.StringVar(&c.perf, "perf", "", "run each receiver under this perf binary (perf record -e cpu-clock) and print the top of its profile; the timings then include perf")
	flag.StringVar(&c.perfSystem, "perf-system", "", "record every CPU of the VM with this perf binary during each transfer and print the top of the profile")
	flag.Var(&geoms, "geom", "LABEL:KNOB=V,KNOB=V: a frag geometry of the simulated NIC (netdevsim debugfs knobs, ethtool:FEATURE=on|off for ethtool -K, bind:rx-page-size=N for the binding's buffers); repeatable, the first is primary (scaling and mixed run on it); none: hw-like and packet-per-niov where the kernel has devmem_rx_buf_per_pkt, else the NIC as booted")
	flag.Parse()
	c.modes = splitList(modes)
	c.receivers = splitList(receivers)
	c.scaleReceivers = splitList(scaleRecv)
	c.mixedReceivers = splitList(mixedRecv)
	c.geoms = geoms
	c.geom2Receivers = splitList(geom2Recv)
	if c.scaleSize == 0 {
		c.scaleSize = min(c.size/4, 128<<20)
	}
	if c.mixedSize == 0 {
		c.mixedSize = min(c.size/2, 64<<20)
	}
	for _, s := range splitList(scale) {
		f, q, ok := strings.Cut(s, "x")
		fn, err1 := strconv.Atoi(f)
		qn, err2 := strconv.Atoi(q)
		if !ok || err1 != nil || err2 != nil || fn < 1 || qn < 1 {
			return fmt.Errorf("-scale: %q is not FLOWSxQUEUES", s)
		}
		c.scale = append(c.scale, [2]int{fn, qn})
	}
	topo, err := selftest.Env()
	if err != nil {
		return err
	}
	// Which accelerator: TCG and KVM figures are not comparable, and a host
	// whose /dev/kvm hangs guests falls back to TCG without a word.
	fmt.Printf("VM: accelerator %s, %d CPUs\n", cmp.Or(os.Getenv("DEVMEM_VM_ACCEL_USED"), "unknown"), runtime.NumCPU())
	if c.theirs == "" {
		c.theirs = topo.CNcdevmem
	}
	if slices.Contains(c.receivers, "C") && (c.theirs == "" || c.shim == "") {
		return errors.New("-theirs and -shim are required for receiver C (run.sh passes them)")
	}
	if len(c.geoms) == 0 {
		c.geoms = defaultGeometries()
	}
	ns, err := openNICSetup(topo)
	if err != nil {
		return fmt.Errorf("NIC setup: %w", err)
	}
	defer ns.Close()
	restoreHW, hw, err := ns.receiveLikeHardware()
	if err != nil {
		return fmt.Errorf("NIC setup: %w", err)
	}
	defer restoreHW()
	printMachine()
	if hw {
		fmt.Printf("every rx queue receives like hardware (netdevsim %s=1): plain TCP gets wire segments in page pool pages too\n", hwKnob)
	} else {
		fmt.Printf("netdevsim without %s: plain TCP gets the peer's TSO skbs as they are (no segmentation, no DMA copy)\n", hwKnob)
	}
	fmt.Printf("single flow: %d MiB per transfer, %d runs per receiver and mode, modes %s, receivers %s, alternating\n",
		c.size>>20, c.runs, strings.Join(c.modes, ","), strings.Join(c.receivers, ","))

	b := &bench{c: &c, topo: topo, ns: ns, port: c.port}
	var acc []accept
	for gi, g := range c.geoms {
		restore, err := setKnobs(g, topo.IfName)
		if err != nil {
			return err
		}
		if ns.pageSize, err = g.pageSize(); err != nil {
			restore()
			return err
		}
		fmt.Printf("\n## geometry %s %s\n\n", g.label, describeKnobs(g))
		recvs := c.receivers
		if gi > 0 {
			recvs = c.geom2Receivers
		}
		if len(recvs) == 0 {
			fmt.Printf("no single-flow receivers for this geometry\n")
		} else {
			single, err := b.single(recvs)
			if err != nil {
				restore()
				return err
			}
			printSingle(&c, recvs, single)
			acc = append(acc, acceptance(&c, g.label, single)...)
		}
		if gi == 0 && len(c.scale) > 0 && len(c.scaleReceivers) > 0 {
			sc, err := b.scaling()
			if err != nil {
				restore()
				return err
			}
			acc = append(acc, printScaling(&c, sc)...)
		}
		if gi == 0 && len(c.mixedReceivers) > 0 {
			mx, err := b.mixed()
			if err != nil {
				restore()
				return err
			}
			printMixed(&c, mx)
		}
		if err := restore(); err != nil {
			return err
		}
	}
	printAcceptance(acc)
	return nil
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func describeKnobs(g geometry) string {
	if len(g.knobs) == 0 {
		return "(netdevsim knobs as booted)"
	}
	var s []string
	for _, kv := range g.knobs {
		s = append(s, kv[0]+"="+kv[1])
	}
	return "(" + strings.Join(s, " ") + ")"
}

// frameKnob is knic's netdevsim knob: 0 packs the MSS-sized packets of a
// flow into 4K net_iovs one after the other (several frags per net_iov,
// non-zero offsets, payloads crossing net_iov boundaries, like fbnic); 1
// gives every packet a fresh net_iov at offset 0.
const frameKnob = "devmem_rx_buf_per_pkt"

// defaultGeometries: on a kernel with frameKnob, the hardware-like geometry
// (primary) and the one-packet-per-net_iov one; else the NIC as booted.
func defaultGeometries() []geometry {
	if _, err := selftest.NsimKnob(frameKnob); err != nil {
		return []geometry{{label: "default"}}
	}
	gs := []geometry{
		{label: "hw-like", knobs: [][2]string{{frameKnob, "0"}}},
		{label: "packet-per-niov", knobs: [][2]string{{frameKnob, "1"}}},
	}
	// HW-GRO (bnxt's TPA): a flow's segments aggregated, buffer-sized
	// frags. On a kernel whose netdevsim can.
	if topo, err := selftest.Env(); err == nil {
		if _, err := selftest.EthtoolFeature(topo.IfName, "rx-gro-hw"); err == nil {
			hwgro := [][2]string{{frameKnob, "0"}, {featurePrefix + "rx-gro-hw", "on"}}
			// And with the 32 KiB buffers bnxt can post for a
			// binding (rx-page-size): frags of up to 32 KiB.
			gs = append(gs, geometry{label: "hw-gro", knobs: hwgro},
				geometry{label: "hw-gro-32k", knobs: append(slices.Clone(hwgro), [2]string{pageSizeKnob, "32768"})})
		}
	}
	return gs
}

// featurePrefix marks a geometry knob that is an ethtool feature of the
// receiving NIC (ethtool -K), not a netdevsim debugfs knob:
// ethtool:rx-gro-hw=on.
const featurePrefix = "ethtool:"

// setKnobs applies a geometry to ifname and returns what restores the old
// values.
func setKnobs(g geometry, ifname string) (func() error, error) {
	get := func(k string) (string, error) {
		if f, ok := strings.CutPrefix(k, featurePrefix); ok {
			return selftest.EthtoolFeature(ifname, f)
		}
		return selftest.NsimKnob(k)
	}
	set := func(k, v string) error {
		if f, ok := strings.CutPrefix(k, featurePrefix); ok {
			return selftest.SetEthtoolFeature(ifname, f, v)
		}
		return selftest.SetNsimKnob(k, v)
	}
	var old [][2]string
	restore := func() error {
		var errs []error
		for _, kv := range slices.Backward(old) {
			errs = append(errs, set(kv[0], kv[1]))
		}
		return errors.Join(errs...)
	}
	for _, kv := range g.knobs {
		if kv[0] == pageSizeKnob {
			continue // the binding's, see nicSetup
		}
		v, err := get(kv[0])
		if err != nil {
			restore()
			return nil, fmt.Errorf("geometry %s: knob %s: %w (is this the kernel with it?)", g.label, kv[0], err)
		}
		old = append(old, [2]string{kv[0], v})
		if err := set(kv[0], kv[1]); err != nil {
			restore()
			return nil, fmt.Errorf("geometry %s: %s=%s: %w", g.label, kv[0], kv[1], err)
		}
	}
	return restore, nil
}

type bench struct {
	c    *config
	topo *selftest.Topology
	ns   *nicSetup
	port int
}

// do runs one job on fresh ports; a job that fails is tried once more (a
// receiver that dies under an overloaded host should not void an hour of
// runs), and the first failure is printed.
func (b *bench) do(j job) (result, error) {
	res, err := b.try(j)
	if err == nil {
		return res, nil
	}
	fmt.Printf("%s failed, once more: %v\n", j.label(), err)
	return b.try(j)
}

func (b *bench) try(j job) (result, error) {
	port := b.port
	b.port += max(1, j.flows)
	if j.req == 0 {
		j.req, j.resp = b.c.req, b.c.resp
	}
	if j.rrTime == 0 {
		j.rrTime = b.c.rrTime
	}
	if j.recv == "C" || j.recv == "ours" {
		return transferTool(b.c, b.topo, j, port)
	}
	return runJob(b.c, b.topo, b.ns, j, port)
}

// results are the runs of each key.
type results map[string][]result

func key(parts ...any) string { return fmt.Sprint(parts...) }

func (b *bench) single(receivers []string) (results, error) {
	rs := results{}
	for r := range b.c.runs {
		for _, mode := range b.c.modes {
			for _, recv := range receivers {
				j := job{recv: recv, validate: mode == "on", flows: 1, queues: 1, size: b.c.size}
				res, err := b.do(j)
				if err != nil {
					return nil, fmt.Errorf("run %d, %s: %w", r+1, j.label(), err)
				}
				fmt.Printf("run %d  %-6s  validation %-3s  %8.2f MB/s  cpu %6.2f s (sys %5.2f)  vm cpu %6.2f s  recvmsg %7d  dontneed %7d  frags %7d  max out %5d  csw %d/%d\n",
					r+1, recv, mode, res.mbps(), res.cpu.Seconds(), res.cpuSys.Seconds(), res.vmCPU.Seconds(), res.recvmsg, res.dontneed, res.frags, res.maxOut, res.cswVol, res.cswInvol)
				rs[key(mode, "/", recv)] = append(rs[key(mode, "/", recv)], res)
			}
		}
	}
	return rs, nil
}

func (b *bench) scaling() (results, error) {
	fmt.Printf("\nscaling: %d MiB per transfer over all flows, validation on, %d runs, receivers %s\n",
		b.c.scaleSize>>20, b.c.runs, strings.Join(b.c.scaleReceivers, ","))
	rs := results{}
	for r := range b.c.runs {
		for _, fq := range b.c.scale {
			for _, recv := range b.c.scaleReceivers {
				j := job{recv: recv, validate: true, flows: fq[0], queues: fq[1], size: b.c.scaleSize}
				res, err := b.do(j)
				if err != nil {
					return nil, fmt.Errorf("run %d, %s: %w", r+1, j.label(), err)
				}
				fmt.Printf("run %d  %-6s  %d flows over %d queues  %8.2f MB/s  cpu %6.2f s  vm cpu %6.2f s of %.2f s x %d\n",
					r+1, recv, fq[0], fq[1], res.mbps(), res.cpu.Seconds(), res.vmCPU.Seconds(), res.wall.Seconds(), res.ncpu)
				k := key(recv, "/", fq[0], "x", fq[1])
				rs[k] = append(rs[k], res)
			}
		}
	}
	return rs, nil
}

func (b *bench) mixed() (results, error) {
	fmt.Printf("\nmixed: request/response (%d-byte requests, %d-byte responses) alone for %v, then next to a %d MiB bulk flow on the same queue and binding; validation on; %d runs; receivers %s\n",
		b.c.req, b.c.resp, b.c.rrTime, b.c.mixedSize>>20, b.c.runs, strings.Join(b.c.mixedReceivers, ","))
	rs := results{}
	for r := range b.c.runs {
		for _, recv := range b.c.mixedReceivers {
			for _, kind := range []string{"rr", "rr+bulk", "bulk"} {
				j := job{recv: recv, validate: true, flows: 1, queues: 1}
				switch kind {
				case "rr":
					j.rrFlows = 1
				case "rr+bulk":
					j.flows, j.rrFlows, j.size = 2, 1, b.c.mixedSize
				case "bulk":
					j.size = b.c.mixedSize
				}
				res, err := b.do(j)
				if err != nil {
					return nil, fmt.Errorf("run %d, %s: %w", r+1, j.label(), err)
				}
				fmt.Printf("run %d  %-6s  %-7s  bulk %8.2f MB/s  rr %6d tx %8.0f tx/s p50 %7.0f us p99 %7.0f us  dontneed %6d frags %7d\n",
					r+1, recv, kind, float64(res.bulk)/1e6/res.wall.Seconds(), res.rrTx, float64(res.rrTx)/res.wall.Seconds(),
					us(res.rrP50), us(res.rrP99), res.dontneed, res.frags)
				rs[key(recv, "/", kind)] = append(rs[key(recv, "/", kind)], res)
			}
		}
	}
	return rs, nil
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
