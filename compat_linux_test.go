//go:build linux

package devmem

import "testing"

// TestCompatDetection checks that a 32-bit program on a 64-bit kernel sizes
// for it, and nothing else does.
func TestCompatDetection(t *testing.T) {
	m := unameMachine()
	want := devmemCmsgSpace == 36 && is64BitMachine(m)
	if compatKernel != want {
		t.Fatalf("compatKernel = %v on %q with cmsg space %d", compatKernel, m, devmemCmsgSpace)
	}
	if compatKernel && devmemCmsgNeed != 40 {
		t.Fatalf("compat: devmemCmsgNeed = %d, want 40", devmemCmsgNeed)
	}
	t.Logf("machine %q, cmsg space %d, need %d, compat %v", m, devmemCmsgSpace, devmemCmsgNeed, compatKernel)
}
