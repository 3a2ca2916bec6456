// Package cncdevmem holds VM tests that drive the kernel's own C ncdevmem
// (built from the same source tree as the test kernel) against the simulated
// devmem NIC: proof that the patched netdevsim is faithful to the kernel API
// independently of this module's Go code. The tests carry the vmtest build
// tag; see selftest/README.md for how to run them.
package cncdevmem
