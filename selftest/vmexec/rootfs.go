//go:build linux

package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// setupRoot turns the read-only 9p view of the host into a writable root:
// an overlay whose upper layer is tmpfs, so tests may write anywhere
// (GOCACHE, /etc, /tmp) without touching the host. /tmp in the new root is
// the host's /tmp seen through the overlay, which is where go test keeps
// the test binaries.
func setupRoot() error {
	const scratch = "/tmp" // any directory of the host root serves as a mount point
	if err := unix.Mount("tmpfs", scratch, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("mount scratch tmpfs: %w", err)
	}
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(scratch+"/"+d, 0o755); err != nil {
			return err
		}
	}
	opts := "lowerdir=/,upperdir=" + scratch + "/upper,workdir=" + scratch + "/work"
	if err := unix.Mount("overlay", scratch+"/root", "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount overlay (%s): %w", opts, err)
	}
	// switch_root's dance: move the new root over / and chroot into it.
	if err := unix.Chdir(scratch + "/root"); err != nil {
		return err
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move overlay to /: %w", err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	return mountSystem()
}

// mountSystem mounts the kernel filesystems over the host's directories of
// the same name, which the 9p view would otherwise show.
func mountSystem() error {
	mounts := []struct {
		source, target, fstype, data string
	}{
		{"proc", "/proc", "proc", ""},
		{"sysfs", "/sys", "sysfs", ""},
		{"devtmpfs", "/dev", "devtmpfs", "mode=0755"},
		{"devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=0666"},
		{"tmpfs", "/dev/shm", "tmpfs", "mode=1777"},
		{"tmpfs", "/run", "tmpfs", "mode=0755"},
		{"debugfs", "/sys/kernel/debug", "debugfs", ""},
	}
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, 0, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

func readTaint() uint64 {
	b, err := os.ReadFile("/proc/sys/kernel/tainted")
	if err != nil {
		return 0
	}
	var t uint64
	fmt.Sscan(string(b), &t)
	return t
}
