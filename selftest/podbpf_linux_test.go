//go:build linux

package selftest

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"runtime"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestPodBPFProgramsLoad runs the hand-assembled programs through the
// running kernel's verifier (needs root; skipped where bpf(2) is refused).
func TestPodBPFProgramsLoad(t *testing.T) {
	progs := map[string][]bpfInsn{
		"pod_forward":  podForwardProg(netip.MustParsePrefix("2001:db8:2::/64"), 7),
		"pod_redirect": podPrimaryRedirectProg(3),
	}
	for name, prog := range progs {
		fd, err := loadSchedCls(name, prog)
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) {
			t.Skipf("bpf(2) refused here: %v", err)
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		unix.Close(fd)
	}
}

func TestBPFAsmJumps(t *testing.T) {
	var a asm
	a.jmp(opJeqImm, bpfR1, 0, 0, "end")
	a.ins(opMov64Imm, bpfR0, 0, 0, 1)
	a.ins(opExit, 0, 0, 0, 0)
	a.label("end")
	a.ins(opMov64Imm, bpfR0, 0, 0, 0)
	p := a.assemble()
	if p[0].off != 2 {
		t.Errorf("jump offset %d, want 2", p[0].off)
	}
}

// testRun runs a loaded tc program once on an Ethernet frame
// (BPF_PROG_TEST_RUN) and returns its verdict.
func testRun(t *testing.T, fd int, frame []byte) int32 {
	t.Helper()
	type testRunAttr struct {
		progFd      uint32
		retval      uint32
		dataSizeIn  uint32
		dataSizeOut uint32
		dataIn      uint64
		dataOut     uint64
		repeat      uint32
		duration    uint32
		ctxSizeIn   uint32
		ctxSizeOut  uint32
		ctxIn       uint64
		ctxOut      uint64
		flags       uint32
		cpu         uint32
		batchSize   uint32
		_           uint32
	}
	attr := testRunAttr{
		progFd:     uint32(fd),
		dataSizeIn: uint32(len(frame)),
		dataIn:     uint64(uintptr(unsafe.Pointer(&frame[0]))),
		repeat:     1,
	}
	_, _, errno := unix.Syscall(unix.SYS_BPF, 10 /* BPF_PROG_TEST_RUN */, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	runtime.KeepAlive(frame)
	if errno == unix.EPERM || errno == unix.EOPNOTSUPP || errno == 524 /* ENOTSUPP */ {
		t.Skipf("BPF_PROG_TEST_RUN: %v", errno)
	}
	if errno != 0 {
		t.Fatalf("BPF_PROG_TEST_RUN: %v", errno)
	}
	return int32(attr.retval)
}

// frame6 is an Ethernet + IPv6 frame to dst with next header proto and a
// 20-byte payload.
func frame6(dst netip.Addr, proto byte) []byte {
	f := make([]byte, ethHdrLen+ipv6HdrLen+20)
	binary.BigEndian.PutUint16(f[ethProto:], unix.ETH_P_IPV6)
	ip := f[ethHdrLen:]
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], 20)
	ip[6] = proto
	ip[7] = 64
	src := netip.MustParseAddr("2001:db8::2").As16()
	copy(ip[8:], src[:])
	d := dst.As16()
	copy(ip[24:], d[:])
	return f
}

func frame4() []byte {
	f := make([]byte, ethHdrLen+20+20)
	binary.BigEndian.PutUint16(f[ethProto:], unix.ETH_P_IP)
	f[ethHdrLen] = 0x45
	return f
}

// TestPodBPFVerdicts runs both programs on crafted frames: what must be
// redirected is (TC_ACT_REDIRECT, 7), everything else goes on (TCX_NEXT).
// (The kernel's test run refuses IPv6 frames shorter than the header, so
// the programs' own length checks are left to the verifier, which insists
// on them.)
func TestPodBPFVerdicts(t *testing.T) {
	const redirect, next = 7, tcxNext
	load := func(name string, prog []bpfInsn) int {
		fd, err := loadSchedCls(name, prog)
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) {
			t.Skipf("bpf(2) refused here: %v", err)
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { unix.Close(fd) })
		return fd
	}
	fwd := load("pod_forward", podForwardProg(netip.MustParsePrefix("2001:db8:2::/64"), 7))
	rdr := load("pod_redirect", podPrimaryRedirectProg(3))
	for _, tt := range []struct {
		name  string
		fd    int
		frame []byte
		want  int32
	}{
		{"forward: TCP to the pod", fwd, frame6(netip.MustParseAddr("2001:db8:2::2"), unix.IPPROTO_TCP), redirect},
		{"forward: ICMPv6 to the pod", fwd, frame6(netip.MustParseAddr("2001:db8:2::99"), unix.IPPROTO_ICMPV6), redirect},
		{"forward: the host's address", fwd, frame6(netip.MustParseAddr("2001:db8::1"), unix.IPPROTO_TCP), next},
		{"forward: same first word, other /64", fwd, frame6(netip.MustParseAddr("2001:db8:3::2"), unix.IPPROTO_TCP), next},
		{"forward: IPv4", fwd, frame4(), next},
		{"redirect: TCP from the pod", rdr, frame6(netip.MustParseAddr("2001:db8::2"), unix.IPPROTO_TCP), redirect},
		{"redirect: UDP from the pod", rdr, frame6(netip.MustParseAddr("2001:db8::2"), unix.IPPROTO_UDP), redirect},
		{"redirect: ICMPv6 (neighbour discovery)", rdr, frame6(netip.MustParseAddr("fe80::1"), unix.IPPROTO_ICMPV6), next},
		{"redirect: IPv4", rdr, frame4(), next},
	} {
		if got := testRun(t, tt.fd, tt.frame); got != tt.want {
			t.Errorf("%s: verdict %d, want %d", tt.name, got, tt.want)
		}
	}
}
