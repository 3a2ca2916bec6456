package nic

import (
	"errors"

	"github.com/devmem-go/devmem/internal/errs"
)

func isUnsupported(err error) bool { return errors.Is(err, errs.ErrNotSupported) }

// errorf builds an *Error for a failure that is ours, not the kernel's.
func errorf(op, msg string) error { return &errs.Error{Op: op, Err: errors.New(msg)} }
