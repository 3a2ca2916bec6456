//go:build !linux

package devmem

const sockoptSupported = false

func (r *TokenReleaser) dontneed(fd uintptr) {}
