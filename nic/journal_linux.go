//go:build linux

package nic

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// lockDir takes an exclusive flock on the file at path (created if need
// be); the lock goes with the process, so a crash cannot leave it held.
func lockDir(path string) (unlock func(), err error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	for {
		err = unix.Flock(fd, unix.LOCK_EX)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "flock", Path: path, Err: err}
	}
	return func() { unix.Close(fd) }, nil
}

// selfIdentity is the journal header of this process.
func selfIdentity() (journal, error) {
	pid := os.Getpid()
	start, err := procStart(pid)
	if err != nil {
		return journal{}, err
	}
	pidns, err := nsID("pid")
	if err != nil {
		return journal{}, err
	}
	netns, err := nsID("net")
	if err != nil {
		return journal{}, err
	}
	return journal{Pid: pid, Start: start, PidNS: pidns, NetNS: netns}, nil
}

// nsID names this process's namespace of the kind (device and inode of
// /proc/self/ns/KIND).
func nsID(kind string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/"+kind, &st); err != nil {
		return "", &os.PathError{Op: "stat", Path: "/proc/self/ns/" + kind, Err: err}
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino), nil
}

// procStart is the start time of process pid, in clock ticks after boot
// (field 22 of /proc/PID/stat).
func procStart(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// comm (field 2) is in parentheses and may hold spaces or ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); starttime is field 22.
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// processAlive reports whether the process that wrote j still runs. One in
// another pid namespace cannot be judged and counts as running.
var processAlive = func(j *journal) bool {
	self, err := nsID("pid")
	if err != nil || self != j.PidNS {
		return true
	}
	start, err := procStart(j.Pid)
	if err != nil {
		return !os.IsNotExist(err)
	}
	return start == j.Start
}
