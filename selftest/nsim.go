package selftest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// NsimKnob reads a file of the host-side netdevsim port's debugfs
// directory, such as the devmem test knobs "devmem_linear_bytes" or
// "devmem_readable_every".
func NsimKnob(name string) (string, error) {
	path, err := nsimPath(name)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// SetNsimKnob writes value to a file of the host-side port's debugfs
// directory. Knobs are global to the port: tests that set one must restore
// it (t.Cleanup) and must not run in parallel with tests that depend on it.
func SetNsimKnob(name, value string) error {
	path, err := nsimPath(name)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(value), 0)
}

// NsimCounter reads a numeric debugfs file of the host-side port, such as
// "devmem_rx_pkts", "devmem_rx_bytes" or "devmem_rx_drops".
func NsimCounter(name string) (uint64, error) {
	v, err := NsimKnob(name)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(v, 0, 64)
	if err != nil {
		return 0, fmt.Errorf("netdevsim %s: %q is not a number", name, v)
	}
	return n, nil
}

func nsimPath(name string) (string, error) {
	topo, err := Env()
	if err != nil {
		return "", err
	}
	if name == "" || strings.Contains(name, "/") {
		return "", fmt.Errorf("selftest: bad netdevsim debugfs file name %q", name)
	}
	return filepath.Join(topo.NsimDebugfs, name), nil
}
