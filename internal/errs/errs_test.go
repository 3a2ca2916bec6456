package errs

import (
	"errors"
	"net"
	"os"
	"testing"
)

func TestNotSupportedMatches(t *testing.T) {
	for name, err := range map[string]error{
		"sentinel":       ErrNotSupported,
		"before":         NotSupportedBefore("bind-tx", "netdev bind-tx", "6.16"),
		"os":             NotSupportedOS("bind-rx", "plan9", "amd64"),
		"errno":          &Error{Op: "bind-rx", Errno: EOPNOTSUPP, Err: EOPNOTSUPP},
		"errno, no Err":  &Error{Op: "bind-rx", Errno: EOPNOTSUPP},
		"wrapped struct": &NotSupportedError{Op: "x", Feature: "y"},
	} {
		if !errors.Is(err, ErrNotSupported) || !errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%s: %v does not match ErrNotSupported and errors.ErrUnsupported", name, err)
		}
	}
	for name, err := range map[string]error{
		"EINVAL": &Error{Op: "bind-rx", Errno: EINVAL, Err: EINVAL},
		"closed": &Error{Op: "recvmsg", Err: net.ErrClosed},
	} {
		if errors.Is(err, ErrNotSupported) || errors.Is(err, errors.ErrUnsupported) {
			t.Errorf("%s: %v matches not-supported", name, err)
		}
	}
}

func TestNotSupportedBeforeFields(t *testing.T) {
	err := NotSupportedBefore("bind-tx", "netdev bind-tx", "6.16")
	var e *Error
	var nse *NotSupportedError
	if !errors.As(err, &e) || e.Op != "bind-tx" {
		t.Errorf("%#v: no *Error with Op bind-tx", err)
	}
	if !errors.As(err, &nse) || nse.MinKernel != "6.16" || nse.Feature != "netdev bind-tx" || nse.Op != "bind-tx" {
		t.Errorf("%#v: no *NotSupportedError with the version", err)
	}
	if want := "devmem: bind-tx: not supported: netdev bind-tx requires Linux 6.16 or later"; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}

func TestErrorIsPortable(t *testing.T) {
	cases := []struct {
		errno  Errno
		target error
	}{
		{EPERM, os.ErrPermission}, {EACCES, os.ErrPermission},
		{ENODEV, os.ErrNotExist}, {ENOENT, os.ErrNotExist},
	}
	for _, c := range cases {
		err := &Error{Op: "op", Errno: c.errno, Err: c.errno, Message: "extack"}
		if !errors.Is(err, c.target) || !errors.Is(err, c.errno) {
			t.Errorf("%v: not %v / errno", err, c.target)
		}
	}
	e := &Error{Op: "bind-rx", Errno: EINVAL, Err: EINVAL, Message: "tcp-data-split is disabled"}
	if want := "devmem: bind-rx: " + EINVAL.Error() + ": tcp-data-split is disabled"; e.Error() != want {
		t.Errorf("message %q, want %q", e, want)
	}
}
