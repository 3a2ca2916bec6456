//go:build !linux

package devmem

import (
	"runtime"

	"github.com/devmem-go/devmem/internal/errs"
)

// errNotSupportedOS builds the error every entry point returns outside
// Linux (the *_others.go files).
func errNotSupportedOS(op string) error {
	return errs.NotSupportedOS(op, runtime.GOOS, runtime.GOARCH)
}
