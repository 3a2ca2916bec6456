//go:build !linux

package nic

import (
	"runtime"

	"github.com/devmem-go/devmem/internal/errs"
)

var openNIC = func(string, int) (*NIC, error) {
	return nil, errs.NotSupportedOS("open nic", runtime.GOOS, runtime.GOARCH)
}
