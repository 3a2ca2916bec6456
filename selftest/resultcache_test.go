package selftest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestResultCache: resultcache.sh records a pass and skips the command the
// next time with the same inputs, records no failure, and records nothing
// under make -n, whose commands only print (a dry run before the real one
// made the real one skip the tests).
func TestResultCache(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	cache := t.TempDir()
	marker := filepath.Join(t.TempDir(), "ran")
	run := func(makeflags, command string) string {
		t.Helper()
		cmd := exec.Command("bash", "resultcache.sh", "rctest", "sh", "-c", command)
		cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+cache, "MAKEFLAGS="+makeflags, "DEVMEM_RERUN=")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	ran := func() bool {
		_, err := os.Stat(marker)
		os.Remove(marker)
		return err == nil
	}
	recorded := func() []string {
		m, _ := filepath.Glob(filepath.Join(cache, "devmem/results/rctest-*"))
		return m
	}
	touch := "touch " + marker

	for _, flags := range []string{"n", "kn -- X=1", "n -j2 --jobserver-auth=3,4"} {
		run(flags, touch)
		if !ran() {
			t.Fatalf("MAKEFLAGS=%q: the command did not run", flags)
		}
		if m := recorded(); len(m) != 0 {
			t.Fatalf("MAKEFLAGS=%q (make -n): a pass was recorded: %v", flags, m)
		}
	}
	run("", "exit 1")
	if m := recorded(); len(m) != 0 {
		t.Fatalf("a failure was recorded: %v", m)
	}
	for _, flags := range []string{"", " --no-print-directory", "k"} {
		run(flags, touch)
		if !ran() {
			t.Fatalf("MAKEFLAGS=%q, no pass yet: the command did not run", flags)
		}
		out := run(flags, touch)
		if ran() || !strings.Contains(out, "passed with these inputs") {
			t.Fatalf("MAKEFLAGS=%q: a recorded pass did not skip the command: %q", flags, out)
		}
		os.RemoveAll(filepath.Join(cache, "devmem/results"))
	}
}
