//go:build linux

package main

import (
	"bufio"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
)

// kernelProblem matches the first line of every splat that means the kernel
// is unhappy: WARN_ON, BUG_ON, oopses, panics, lockups, sanitizer reports.
var kernelProblem = regexp.MustCompile(`WARNING:|BUG:|kernel BUG at|Oops|general protection fault|Kernel panic|UBSAN:|KASAN:|KFENCE:|refcount_t:|soft lockup|hard LOCKUP|blocked for more than|cut here`)

// kernelLog collects the guest's console: the whole text goes to a file, the
// last lines stay in memory for failure reports, and the first line that
// looks like a kernel problem is remembered.
type kernelLog struct {
	mu      sync.Mutex
	tail    []string
	problem string
	file    *os.File
	echo    io.Writer // non-nil with -v: console shown live
}

const kernelLogTailLines = 80

func (k *kernelLog) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		k.mu.Lock()
		if k.file != nil {
			k.file.WriteString(line + "\n")
		}
		if k.echo != nil {
			io.WriteString(k.echo, "[console] "+line+"\n")
		}
		k.tail = append(k.tail, line)
		if len(k.tail) > 2*kernelLogTailLines {
			k.tail = append(k.tail[:0], k.tail[len(k.tail)-kernelLogTailLines:]...)
		}
		if k.problem == "" && kernelProblem.MatchString(line) {
			k.problem = line
		}
		k.mu.Unlock()
	}
}

func (k *kernelLog) firstProblem() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.problem
}

func (k *kernelLog) lastLines() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	t := k.tail
	if len(t) > kernelLogTailLines {
		t = t[len(t)-kernelLogTailLines:]
	}
	return append([]string(nil), t...)
}
