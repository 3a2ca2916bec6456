//go:build linux

package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// accelUsedEnv names the variable that tells the guest's program the
// accelerator its VM runs on.
const accelUsedEnv = "DEVMEM_VM_ACCEL_USED"

// pickAccel chooses KVM when it really runs a kernel, else TCG.
// DEVMEM_VM_ACCEL=kvm|tcg (or -accel) skips the probe.
func pickAccel(requested, kernel string) string {
	if requested == "" {
		requested = os.Getenv("DEVMEM_VM_ACCEL")
	}
	if requested != "" && requested != "auto" {
		return requested
	}
	if kvmOpens() && kvmBoots(kernel) {
		return "kvm"
	}
	return "tcg"
}

// kvmOpens reports whether /dev/kvm opens and can create a VM.
func kvmOpens() bool {
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

// kvmBoots boots the kernel under KVM until it prints its banner. Some
// hosts (nested or emulated KVM) pass every ioctl check and then hang the
// guest forever, so only a real boot proves KVM works. The answer is cached
// per host boot, so the probe costs its second or so once.
func kvmBoots(kernel string) bool {
	bootID, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	key := strings.TrimSpace(string(bootID)) + " " + qemuBinary()
	cache := ""
	if dir, err := os.UserCacheDir(); err == nil {
		cache = filepath.Join(dir, "devmem", "kvm-probe")
		if b, err := os.ReadFile(cache); err == nil {
			if k, verdict, ok := strings.Cut(strings.TrimSpace(string(b)), "\t"); ok && k == key {
				return verdict == "works"
			}
		}
	}
	works := probeKVM(kernel)
	if cache != "" {
		verdict := "broken"
		if works {
			verdict = "works"
		}
		os.MkdirAll(filepath.Dir(cache), 0o755)
		os.WriteFile(cache, []byte(key+"\t"+verdict+"\n"), 0o644)
	}
	return works
}

func probeKVM(kernel string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBinary(),
		"-accel", "kvm", "-m", "256M", "-smp", "1", "-no-reboot", "-net", "none",
		"-display", "none", "-monitor", "none", "-serial", "stdio",
		"-kernel", kernel, "-append", "console=ttyS0 loglevel=7 panic=-1 init=/vmexec-kvm-probe")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false
	}
	if err := cmd.Start(); err != nil {
		return false
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Linux version") {
			return true
		}
	}
	return false
}
