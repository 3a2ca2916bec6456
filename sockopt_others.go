//go:build !linux

package devmem

import "syscall"

const sockoptSupported = false

func (r *TokenReleaser) dontneed(fd uintptr) {}

func checkTCPSocket(rc syscall.RawConn) error { return ErrNotSupported }
