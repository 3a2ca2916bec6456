//go:build linux

package selftest

import (
	"errors"
	"net/netip"
	"testing"

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
