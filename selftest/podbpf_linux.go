//go:build linux

package selftest

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The pod's packet path is the one the kernel's NetDrvContEnv builds
// (tools/testing/selftests/drivers/net/lib/py/env.py) with
// nk_forward.bpf.c and nk_primary_rx_redirect.bpf.c: two tc ingress
// programs. Here they are the same few instructions assembled in Go, with
// the addresses and ifindexes as immediates instead of .bss variables, and
// attached through tcx links (the tc ingress hook without a qdisc, Linux
// 6.6) instead of a clsact qdisc and cls_bpf filter. No clang, tc or
// bpftool is needed, and a link detaches when its fd is closed.

// bpfInsn is one eBPF instruction.
type bpfInsn struct {
	op   uint8
	regs uint8 // dst_reg and src_reg, see insnRegs
	off  int16
	imm  int32
}

const (
	bpfR0 = iota
	bpfR1
	bpfR2
	bpfR3
	bpfR4
	bpfR5
)

// Opcodes (include/uapi/linux/bpf_common.h, bpf.h).
const (
	opMov64Reg = 0xbf // BPF_ALU64 | BPF_MOV | BPF_X
	opMov64Imm = 0xb7 // BPF_ALU64 | BPF_MOV | BPF_K
	opAdd64Imm = 0x07 // BPF_ALU64 | BPF_ADD | BPF_K
	opLdxW     = 0x61 // BPF_LDX | BPF_MEM | BPF_W
	opLdxH     = 0x69 // BPF_LDX | BPF_MEM | BPF_H
	opLdxB     = 0x71 // BPF_LDX | BPF_MEM | BPF_B
	opJgtReg   = 0x2d // BPF_JMP | BPF_JGT | BPF_X
	opJeqImm   = 0x15 // BPF_JMP | BPF_JEQ | BPF_K
	opJne32Imm = 0x56 // BPF_JMP32 | BPF_JNE | BPF_K: compares the low 32 bits
	opCall     = 0x85 // BPF_JMP | BPF_CALL
	opExit     = 0x95 // BPF_JMP | BPF_EXIT
)

// Helpers and offsets.
const (
	helperRedirectNeigh = 152
	helperRedirectPeer  = 155

	skbProtocol = 16 // offsetof(struct __sk_buff, protocol)
	skbData     = 76 // offsetof(struct __sk_buff, data)
	skbDataEnd  = 80 // offsetof(struct __sk_buff, data_end)

	ethHdrLen  = 14
	ipv6HdrLen = 40
	ethProto   = 12             // offsetof(struct ethhdr, h_proto)
	ip6Nexthdr = ethHdrLen + 6  // offsetof(struct ipv6hdr, nexthdr)
	ip6Daddr   = ethHdrLen + 24 // offsetof(struct ipv6hdr, daddr)

	tcxNext = -1 // TCX_NEXT: let the next program (or the stack) decide
)

// be16 is a 16-bit big-endian value as a load from packet memory sees it.
func be16(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

// word is 4 bytes of packet memory as a 32-bit load sees them.
func word(b []byte) int32 { return int32(binary.NativeEndian.Uint32(b)) }

// asm assembles a program whose jumps name labels: a jump's off field is
// filled with the distance to its label.
type asm struct {
	prog   []bpfInsn
	labels map[string]int
	jumps  map[int]string
}

func (a *asm) ins(op, dst, src uint8, off int16, imm int32) {
	a.prog = append(a.prog, bpfInsn{op: op, regs: insnRegs(dst, src), off: off, imm: imm})
}

// insnRegs packs struct bpf_insn's dst_reg:4, src_reg:4 bitfields, which C
// compilers lay out from the low bits on little-endian machines and from
// the high bits on big-endian ones.
func insnRegs(dst, src uint8) uint8 {
	if binary.NativeEndian.Uint16([]byte{1, 0}) == 1 {
		return dst | src<<4
	}
	return dst<<4 | src
}

func (a *asm) jmp(op, dst, src uint8, imm int32, label string) {
	if a.jumps == nil {
		a.jumps = make(map[int]string)
	}
	a.jumps[len(a.prog)] = label
	a.ins(op, dst, src, 0, imm)
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = make(map[string]int)
	}
	a.labels[name] = len(a.prog)
}

func (a *asm) assemble() []bpfInsn {
	for at, name := range a.jumps {
		to, ok := a.labels[name]
		if !ok {
			panic("bpf asm: no label " + name)
		}
		a.prog[at].off = int16(to - at - 1)
	}
	return a.prog
}

// podForwardProg is nk_forward.bpf.c: on the physical device's ingress,
// IPv6 packets for the pod's /64 go straight to the netkit peer in the pod
// (bpf_redirect_peer into hostIfindex's peer), past the host's stack, as
// Cilium does. The rest goes on (TCX_NEXT).
func podForwardProg(prefix netip.Prefix, hostIfindex int) []bpfInsn {
	p := prefix.Addr().As16()
	var a asm
	a.ins(opLdxW, bpfR2, bpfR1, skbProtocol, 0)
	a.jmp(opJne32Imm, bpfR2, 0, be16(unix.ETH_P_IPV6), "pass")
	a.ins(opLdxW, bpfR2, bpfR1, skbData, 0)
	a.ins(opLdxW, bpfR3, bpfR1, skbDataEnd, 0)
	a.ins(opMov64Reg, bpfR4, bpfR2, 0, 0)
	a.ins(opAdd64Imm, bpfR4, 0, 0, ethHdrLen+ipv6HdrLen)
	a.jmp(opJgtReg, bpfR4, bpfR3, 0, "pass")
	// The first 64 bits of the destination: the pod's /64.
	a.ins(opLdxW, bpfR5, bpfR2, ip6Daddr, 0)
	a.jmp(opJne32Imm, bpfR5, 0, word(p[0:4]), "pass")
	a.ins(opLdxW, bpfR5, bpfR2, ip6Daddr+4, 0)
	a.jmp(opJne32Imm, bpfR5, 0, word(p[4:8]), "pass")
	a.ins(opMov64Imm, bpfR1, 0, 0, int32(hostIfindex))
	a.ins(opMov64Imm, bpfR2, 0, 0, 0)
	a.ins(opCall, 0, 0, 0, helperRedirectPeer)
	a.ins(opExit, 0, 0, 0, 0)
	a.label("pass")
	a.ins(opMov64Imm, bpfR0, 0, 0, tcxNext)
	a.ins(opExit, 0, 0, 0, 0)
	return a.assemble()
}

// podPrimaryRedirectProg is nk_primary_rx_redirect.bpf.c: on the host end
// of the netkit pair, what the pod sends (IPv6 but ICMPv6, which neighbour
// discovery needs on the host) leaves through the physical device after a
// FIB and neighbour lookup (bpf_redirect_neigh).
func podPrimaryRedirectProg(physIfindex int) []bpfInsn {
	var a asm
	a.ins(opLdxW, bpfR2, bpfR1, skbData, 0)
	a.ins(opLdxW, bpfR3, bpfR1, skbDataEnd, 0)
	a.ins(opMov64Reg, bpfR4, bpfR2, 0, 0)
	a.ins(opAdd64Imm, bpfR4, 0, 0, ethHdrLen+ipv6HdrLen)
	a.jmp(opJgtReg, bpfR4, bpfR3, 0, "pass")
	a.ins(opLdxH, bpfR5, bpfR2, ethProto, 0)
	a.jmp(opJne32Imm, bpfR5, 0, be16(unix.ETH_P_IPV6), "pass")
	a.ins(opLdxB, bpfR5, bpfR2, ip6Nexthdr, 0)
	a.jmp(opJeqImm, bpfR5, 0, unix.IPPROTO_ICMPV6, "pass")
	a.ins(opMov64Imm, bpfR1, 0, 0, int32(physIfindex))
	a.ins(opMov64Imm, bpfR2, 0, 0, 0) // params: NULL
	a.ins(opMov64Imm, bpfR3, 0, 0, 0) // plen
	a.ins(opMov64Imm, bpfR4, 0, 0, 0) // flags
	a.ins(opCall, 0, 0, 0, helperRedirectNeigh)
	a.ins(opExit, 0, 0, 0, 0)
	a.label("pass")
	a.ins(opMov64Imm, bpfR0, 0, 0, tcxNext)
	a.ins(opExit, 0, 0, 0, 0)
	return a.assemble()
}

// The bpf(2) attributes used here, laid out as union bpf_attr.
type bpfProgLoadAttr struct {
	progType           uint32
	insnCnt            uint32
	insns              uint64
	license            uint64
	logLevel           uint32
	logSize            uint32
	logBuf             uint64
	kernVersion        uint32
	progFlags          uint32
	progName           [16]byte
	progIfindex        uint32
	expectedAttachType uint32
}

type bpfLinkCreateAttr struct {
	progFd        uint32
	targetIfindex uint32
	attachType    uint32
	flags         uint32
	relative      uint32
	_             uint32
	expectedRev   uint64
}

const (
	bpfProgTypeSchedCls = 3  // BPF_PROG_TYPE_SCHED_CLS
	bpfTCXIngress       = 46 // BPF_TCX_INGRESS
	bpfCmdProgLoad      = 5  // BPF_PROG_LOAD
	bpfCmdLinkCreate    = 28 // BPF_LINK_CREATE
)

// loadSchedCls loads prog as a tc program and returns its fd. The
// verifier's log comes with a refusal.
func loadSchedCls(name string, prog []bpfInsn) (int, error) {
	insns := make([]byte, 0, 8*len(prog))
	for _, in := range prog {
		insns = append(insns, in.op, in.regs)
		insns = binary.NativeEndian.AppendUint16(insns, uint16(in.off))
		insns = binary.NativeEndian.AppendUint32(insns, uint32(in.imm))
	}
	license := []byte("Dual MIT/GPL\x00")
	logBuf := make([]byte, 64<<10)
	attr := bpfProgLoadAttr{
		progType: bpfProgTypeSchedCls,
		insnCnt:  uint32(len(prog)),
		insns:    uint64(uintptr(unsafe.Pointer(&insns[0]))),
		license:  uint64(uintptr(unsafe.Pointer(&license[0]))),
		logLevel: 1,
		logSize:  uint32(len(logBuf)),
		logBuf:   uint64(uintptr(unsafe.Pointer(&logBuf[0]))),
	}
	copy(attr.progName[:15], name)
	// The verifier gives up with EAGAIN when a signal is pending, and the
	// Go runtime signals its threads (SIGURG preemption) at any time. With
	// the asynchronous signals blocked on this thread for the call, those
	// aimed at it wait until it returns; process-wide ones that still land
	// here (another thread may have them blocked too) get another try, as
	// cilium/ebpf gives them, for up to 5 s.
	var fd uintptr
	var errno unix.Errno
	err := withAsyncSignalsBlocked(func() {
		for deadline := time.Now().Add(5 * time.Second); ; {
			fd, _, errno = unix.Syscall(unix.SYS_BPF, bpfCmdProgLoad, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
			if errno != unix.EAGAIN || time.Now().After(deadline) {
				break
			}
			bpfLoadRetries.Add(1)
		}
	})
	if err != nil {
		return -1, err
	}
	runtime.KeepAlive(insns)
	runtime.KeepAlive(license)
	if errno != 0 {
		log := string(logBuf[:clen(logBuf)])
		return -1, fmt.Errorf("bpf prog load %s: %w\n%s", name, errno, log)
	}
	unix.CloseOnExec(int(fd))
	return int(fd), nil
}

// bpfLoadRetries counts the BPF_PROG_LOAD calls that a signal interrupted.
var bpfLoadRetries atomic.Uint64

// withAsyncSignalsBlocked runs fn on the calling thread with every signal
// blocked but the synchronous ones a fault raises (a fault with its signal
// blocked kills the process), and restores the thread's mask after. A
// thread whose mask could not be restored stays locked, so that the
// runtime ends it with the goroutine rather than reuse it.
func withAsyncSignalsBlocked(fn func()) error {
	runtime.LockOSThread()
	var block, old unix.Sigset_t
	bits := uint(unsafe.Sizeof(block.Val[0])) * 8
	for i := range block.Val {
		block.Val[i] = ^block.Val[i]
	}
	for _, sig := range []unix.Signal{unix.SIGSEGV, unix.SIGBUS, unix.SIGFPE, unix.SIGILL, unix.SIGTRAP} {
		n := uint(sig) - 1
		block.Val[n/bits] &^= 1 << (n % bits)
	}
	if err := unix.PthreadSigmask(unix.SIG_BLOCK, &block, &old); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("block signals: %w", err)
	}
	fn()
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil); err != nil {
		return fmt.Errorf("restore signal mask: %w", err)
	}
	runtime.UnlockOSThread()
	return nil
}

func clen(b []byte) int {
	for i, c := range b {
		if c == 0 {
			return i
		}
	}
	return len(b)
}

// attachTCXIngress attaches the program to ifindex's tc ingress hook and
// returns the link's fd; closing it detaches the program.
func attachTCXIngress(progFd, ifindex int) (int, error) {
	attr := bpfLinkCreateAttr{progFd: uint32(progFd), targetIfindex: uint32(ifindex), attachType: bpfTCXIngress}
	fd, _, errno := unix.Syscall(unix.SYS_BPF, bpfCmdLinkCreate, uintptr(unsafe.Pointer(&attr)), unsafe.Sizeof(attr))
	if errno != 0 {
		return -1, fmt.Errorf("bpf link create (tcx ingress, ifindex %d): %w", ifindex, errno)
	}
	unix.CloseOnExec(int(fd))
	return int(fd), nil
}

// attachProg loads prog and attaches it to ifindex's ingress; the program
// fd is closed, the link holds the program.
func attachProg(name string, prog []bpfInsn, ifindex int) (int, error) {
	pfd, err := loadSchedCls(name, prog)
	if err != nil {
		return -1, err
	}
	defer unix.Close(pfd)
	return attachTCXIngress(pfd, ifindex)
}
