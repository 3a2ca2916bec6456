// Command hdsplit turns TCP header split on (hds-thresh 0) or off for a NIC.
// The demo needs it because bookworm's ethtool (6.1) cannot set
// tcp-data-split, and the C ncdevmem's own setup also wants ntuple rules,
// which netdevsim lacks.
//
// Usage: hdsplit IFNAME on|off
package main

import (
	"fmt"
	"os"

	"github.com/devmem-go/devmem/nic"
)

func main() {
	if len(os.Args) != 3 || (os.Args[2] != "on" && os.Args[2] != "off") {
		fmt.Fprintln(os.Stderr, "usage: hdsplit IFNAME on|off")
		os.Exit(2)
	}
	if err := set(os.Args[1], os.Args[2] == "on"); err != nil {
		fmt.Fprintln(os.Stderr, "hdsplit:", err)
		os.Exit(1)
	}
}

func set(ifname string, on bool) error {
	n, err := nic.Open(ifname)
	if err != nil {
		return err
	}
	defer n.Close()
	split := nic.TCPDataSplitDisabled
	if on {
		split = nic.TCPDataSplitEnabled
	}
	if err := n.SetTCPDataSplit(split); err != nil {
		return err
	}
	if on {
		return n.SetHDSThresh(0)
	}
	return nil
}
