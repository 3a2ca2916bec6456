//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

const modulePath = "github.com/devmem-go/devmem"

// findKernel returns the bzImage to boot. An explicit path (flag or
// DEVMEM_KERNEL) wins; it may name the image or its directory. Otherwise the
// repository's selftest/kernel/build.sh is asked, which caches its output.
func findKernel(ctx context.Context, explicit string, verbose bool) (string, error) {
	if explicit == "" {
		explicit = os.Getenv("DEVMEM_KERNEL")
	}
	if explicit != "" {
		return kernelImage(explicit)
	}
	repo, err := findRepo()
	if err != nil {
		return "", fmt.Errorf("no kernel: set -kernel or DEVMEM_KERNEL, or run inside the repository (%v)", err)
	}
	dir, err := runKernelBuild(ctx, filepath.Join(repo, "selftest", "kernel", "build.sh"), verbose)
	if err != nil {
		return "", err
	}
	return kernelImage(dir)
}

func kernelImage(path string) (string, error) {
	path, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("kernel: %w", err)
	}
	if fi.IsDir() {
		path = filepath.Join(path, "bzImage")
		if _, err := os.Stat(path); err != nil {
			return "", fmt.Errorf("kernel: %w", err)
		}
	}
	return path, nil
}

// findRepo locates the module root: DEVMEM_REPO, else the nearest directory
// above the working directory whose go.mod declares this module.
func findRepo() (string, error) {
	if r := os.Getenv("DEVMEM_REPO"); r != "" {
		return r, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of " + modulePath + " above the working directory; set DEVMEM_REPO")
		}
		dir = parent
	}
}

// runKernelBuild runs build.sh and returns the directory it prints as its
// last stdout line. The script is quiet when its cache is warm; a cold build
// takes many minutes, so say so once if it is not done quickly.
func runKernelBuild(ctx context.Context, script string, verbose bool) (string, error) {
	if _, err := os.Stat(script); err != nil {
		return "", fmt.Errorf("no kernel: set -kernel or DEVMEM_KERNEL (%v)", err)
	}
	cmd := exec.CommandContext(ctx, script)
	cmd.Dir = filepath.Dir(script)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	if verbose {
		cmd.Stderr = os.Stderr
	} else {
		cmd.Stderr = &stderr
	}
	notice := time.AfterFunc(5*time.Second, func() {
		fmt.Fprintf(os.Stderr, "vmexec: building the test kernel with %s (a cold build takes ~15 min)\n", script)
	})
	err := cmd.Run()
	notice.Stop()
	if err != nil {
		os.Stderr.Write(stderr.Bytes())
		return "", fmt.Errorf("%s: %w", script, err)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	dir := strings.TrimSpace(lines[len(lines)-1])
	if dir == "" {
		return "", fmt.Errorf("%s printed no kernel directory", script)
	}
	return dir, nil
}
