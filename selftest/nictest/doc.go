// Package nictest holds VM tests of the simulated devmem NIC itself (the
// patched netdevsim of selftest/kernel): the frag geometry it gives the
// stack, its buffer ring, drop accounting, per-queue statistics and flow
// steering. They run only in the test VM, with the vmtest build tag:
//
//	go test -tags vmtest -exec "go run ./selftest/vmexec" ./selftest/nictest
package nictest
