package selftest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// EthtoolFeature is a feature's state in ethtool -k IFNAME, "on" or "off";
// an error if the NIC has no such feature or it is fixed.
func EthtoolFeature(ifname, feature string) (string, error) {
	out, err := exec.Command("ethtool", "-k", ifname).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("ethtool -k %s: %v: %s", ifname, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(l), ": ")
		if !ok || k != feature {
			continue
		}
		if strings.Contains(v, "[fixed]") {
			return "", fmt.Errorf("%s: %s is fixed", ifname, feature)
		}
		return strings.Fields(v)[0], nil
	}
	return "", fmt.Errorf("%s has no feature %s", ifname, feature)
}

// SetEthtoolFeature turns a feature on or off (ethtool -K IFNAME FEATURE
// on|off).
func SetEthtoolFeature(ifname, feature, state string) error {
	if out, err := exec.Command("ethtool", "-K", ifname, feature, state).CombinedOutput(); err != nil {
		return fmt.Errorf("ethtool -K %s %s %s: %v: %s", ifname, feature, state, err, out)
	}
	return nil
}

// ErrNoHugepages: the machine has no 2 MiB hugepages, or not as many free
// as asked for after growing the pool.
var ErrNoHugepages = errors.New("selftest: not enough 2 MiB hugepages")

// ReserveHugepages makes sure n 2 MiB hugepages are free, growing the pool
// (nr_hugepages) by what is missing.
func ReserveHugepages(n int) error {
	const dir = "/sys/kernel/mm/hugepages/hugepages-2048kB/"
	read := func(f string) (int, error) {
		b, err := os.ReadFile(dir + f)
		if err != nil {
			return 0, fmt.Errorf("%w: %v", ErrNoHugepages, err)
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	free, err := read("free_hugepages")
	if err != nil || free >= n {
		return err
	}
	total, err := read("nr_hugepages")
	if err != nil {
		return err
	}
	if err := os.WriteFile(dir+"nr_hugepages", []byte(strconv.Itoa(total+n-free)), 0); err != nil {
		return fmt.Errorf("selftest: grow the hugepage pool: %w", err)
	}
	if free, err = read("free_hugepages"); err != nil {
		return err
	}
	if free < n {
		return fmt.Errorf("%w: %d free after asking for %d", ErrNoHugepages, free, n)
	}
	return nil
}
