//go:build linux

package devmem

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

const cmsgSupported = true

// nativeCmsgLayout is this architecture's ABI, straight from x/sys (which
// carries SOL_SOCKET = 0xffff on mips and the sparc64 SCM_DEVMEM_* values).
// A 32-bit task on a 64-bit kernel gets the 32-bit (compat) layout, which is
// also what a 32-bit GOARCH is.
var nativeCmsgLayout = cmsgLayout{
	wordSize:  unix.SizeofPtr,
	bigEndian: binary.NativeEndian.Uint16([]byte{0, 1}) == 1,
	level:     unix.SOL_SOCKET,
	linear:    unix.SCM_DEVMEM_LINEAR,
	dmabuf:    unix.SCM_DEVMEM_DMABUF,
}
