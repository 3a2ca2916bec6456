package main

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
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
		fmt.Sprintf("rootflags=trans=virtio,version=9p2000.L,msize=%d", ninepMsize),
		"ro", "init=" + c.Init,
		"loglevel=5", "panic=-1", "console=ttyS0",
		jobEnvVar + "=" + c.JobPath,
	}, " ")
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

// pickAccel chooses KVM when /dev/kvm opens and can create a VM, else TCG.
// DEVMEM_VM_ACCEL=kvm|tcg (or -accel) overrides the probe.
func pickAccel(requested string) string {
	if requested == "" {
		requested = os.Getenv("DEVMEM_VM_ACCEL")
	}
	if requested != "" && requested != "auto" {
		return requested
	}
	if kvmUsable() {
		return "kvm"
	}
	return "tcg"
}

func kvmUsable() bool {
	const (
		kvmGetAPIVersion = 0xAE00
		kvmCreateVM      = 0xAE01
	)
	fd, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	if v, err := unix.IoctlRetInt(fd, kvmGetAPIVersion); err != nil || v != 12 {
		return false
	}
	vm, err := unix.IoctlRetInt(fd, kvmCreateVM)
	if err != nil {
		return false
	}
	unix.Close(vm)
	return true
}
