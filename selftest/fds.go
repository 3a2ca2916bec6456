package selftest

import "os"

// OpenFDs counts the process's open file descriptors, for leak checks:
// take a count before and after the code under test.
func OpenFDs() (int, error) {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, err
	}
	// The listing includes the descriptor ReadDir used to read it.
	return len(entries) - 1, nil
}
