package main

import (
	"errors"
	"fmt"
)

// Exit statuses.
const (
	exitOK    = 0
	exitData  = 1 // the transfer failed: validation, flow steering, -L, I/O
	exitSetup = 2 // the command line or the setup failed before any data
)

// setupError wraps a failure before the data transfer: the NIC, the buffer,
// the binding, the socket.
type setupError struct{ err error }

func (e *setupError) Error() string { return e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

// dataError wraps a failure of the transfer itself.
type dataError struct{ err error }

func (e *dataError) Error() string { return e.err.Error() }
func (e *dataError) Unwrap() error { return e.err }

func setupf(format string, args ...any) error {
	return &setupError{fmt.Errorf(format, args...)}
}

func dataf(format string, args ...any) error {
	return &dataError{fmt.Errorf(format, args...)}
}

// exitCode maps an error to the exit status. Errors of no class count as
// data errors: something went wrong after setup.
func exitCode(err error) int {
	var ue *usageError
	var se *setupError
	var de *dataError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		return exitSetup
	case errors.As(err, &de):
		// Checked before setupError: a data error that happened while
		// restoring setup is still a data error.
		return exitData
	case errors.As(err, &se):
		return exitSetup
	}
	return exitData
}
