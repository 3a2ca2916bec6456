//go:build linux

package main

import (
	"fmt"
	"os"
	"strings"
)

// vmConfig is what the QEMU command line is made of.
type vmConfig struct {
	Kernel      string
	Init        string // path of this binary; the guest runs it as PID 1
	JobPath     string
	ConsoleSock string // kernel console (ttyS0)
	ControlSock string // framed program output and exit status (virtio serial port)
	Accel       string
	SMP         int
	Mem         string
}

// 9p messages larger than this do not fit QEMU 7.2's virtqueue.
const ninepMsize = 512000

func qemuArgs(c vmConfig) ([]string, error) {
	for _, p := range []string{c.Init, c.JobPath} {
		if strings.ContainsAny(p, " \t\n\"") {
			return nil, fmt.Errorf("path %q cannot go on the kernel command line", p)
		}
	}
	cmdline := strings.Join([]string{
		"root=/dev/root", "rootfstype=9p",
		fmt.Sprintf("rootflags=trans=virtio,version=9p2000.L,msize=%d,cache=loose", ninepMsize),
		"ro", "init=" + c.Init,
		"loglevel=5", "panic=-1", "console=ttyS0",
		jobEnvVar + "=" + c.JobPath,
	}, " ")
	// For debugging the guest kernel, e.g. DEVMEM_VM_APPEND="loglevel=7".
	if extra := os.Getenv("DEVMEM_VM_APPEND"); extra != "" {
		cmdline += " " + extra
	}
	return []string{
		"-nographic", "-no-reboot", "-net", "none", "-monitor", "none",
		"-accel", c.Accel,
		"-m", c.Mem, "-smp", fmt.Sprint(c.SMP),
		"-kernel", c.Kernel, "-append", cmdline,
		"-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
		"-device", "virtio-9p-pci,fsdev=root,mount_tag=/dev/root",
		"-chardev", "socket,id=console,path=" + c.ConsoleSock,
		"-serial", "chardev:console",
		"-device", "virtio-serial-pci,id=vser",
		"-chardev", "socket,id=control,path=" + c.ControlSock,
		"-device", "virtserialport,bus=vser.0,chardev=control,name=" + controlPortName,
	}, nil
}

// controlPortName is how the guest finds its port among /sys/class/virtio-ports.
const controlPortName = "vmexec"
