package main

import (
	"errors"
	"fmt"
	"io"
)

// undoStack records how to put back each change made to the system, and
// puts them back in reverse order: the binding goes before the NIC state,
// since the kernel refuses to turn header split off under a bound queue.
// Every step runs even when an earlier one failed.
type undoStack struct {
	steps []undoStep
	log   io.Writer
}

type undoStep struct {
	name string
	fn   func() error
}

func (u *undoStack) push(name string, fn func() error) {
	u.steps = append(u.steps, undoStep{name, fn})
}

// run undoes everything, newest first, and returns the failures as setup
// errors (the system was left changed).
func (u *undoStack) run() error {
	var errs []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		s := u.steps[i]
		if err := s.fn(); err != nil {
			errs = append(errs, fmt.Errorf("restore %s: %w", s.name, err))
			if u.log != nil {
				fmt.Fprintf(u.log, "ncdevmem: restore %s failed: %v\n", s.name, err)
			}
		}
	}
	u.steps = nil
	if len(errs) == 0 {
		return nil
	}
	return &setupError{errors.Join(errs...)}
}
