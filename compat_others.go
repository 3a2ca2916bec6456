//go:build !linux

package devmem

const compatKernel = false
