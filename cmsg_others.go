//go:build !linux

package devmem

import "strconv"

const cmsgSupported = false

// nativeCmsgLayout only sizes DevmemCmsgSpace outside Linux: the
// asm-generic values for this word size.
var nativeCmsgLayout = cmsgLayout{wordSize: strconv.IntSize / 8, level: 1, linear: 78, dmabuf: 79}
