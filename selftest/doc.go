// Package selftest is the test-side half of the devmem VM harness: tests
// built with the vmtest tag and run through selftest/vmexec find the
// netdevsim topology here and use its helpers.
//
// The topology, described by environment variables that vmexec exports:
//
//	init netns:  IfName (netdevsim1 port 0), Addr4/24, Addr6/64
//	netns peer:  PeerIfName (netdevsim2 port 0), PeerAddr4/24, PeerAddr6/64
//
// The two ports are linked back to back, so whatever one sends the other
// receives. Tests call [Require] first; outside the VM it skips the test
// and says how to run it.
package selftest
