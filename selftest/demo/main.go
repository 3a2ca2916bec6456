// Command demo shows cmd/ncdevmem receiving a devmem TCP stream inside the
// test VM: our ncdevmem listens in the init netns with -v 7, a sender in
// netns "peer" streams the 7-byte pattern (1,2,...,6,'\n') at it, and the
// server's summary is printed. The exit status is the server's.
//
// Run it inside the VM:
//
//	go build -o bin/ncdevmem ./cmd/ncdevmem
//	go build -o bin/demo ./selftest/demo
//	bin/vmexec -- bin/demo            # or: go run ./selftest/vmexec -- bin/demo
//
// The ncdevmem binary is found next to the demo binary, or at -ncdevmem.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() { os.Exit(run()) }

func run() int {
	self, _ := os.Executable()
	bin := flag.String("ncdevmem", filepath.Join(filepath.Dir(self), "ncdevmem"), "path of the ncdevmem binary")
	size := flag.Int64("size", 256<<20, "bytes to stream")
	port := flag.Int("port", 5201, "TCP port")
	sender := flag.String("sender", "socat", "who sends from the peer netns: socat (fed by a generator) or ncdevmem (our client, devmem TX)")
	flag.Parse()

	env := map[string]string{}
	for _, k := range []string{"DEVMEM_IFNAME", "DEVMEM_ADDR4", "DEVMEM_PEER_ADDR4", "DEVMEM_PEER_IFNAME", "DEVMEM_PEER_NETNS"} {
		if env[k] = os.Getenv(k); env[k] == "" {
			fmt.Fprintf(os.Stderr, "demo: %s is not set: run me inside the VM (vmexec -- %s)\n", k, self)
			return 2
		}
	}
	if _, err := os.Stat(*bin); err != nil {
		fmt.Fprintf(os.Stderr, "demo: ncdevmem binary: %v (go build -o %s ./cmd/ncdevmem)\n", err, *bin)
		return 2
	}
	p := strconv.Itoa(*port)

	args := []string{"-l", "-f", env["DEVMEM_IFNAME"], "-s", env["DEVMEM_ADDR4"], "-c", env["DEVMEM_PEER_ADDR4"], "-p", p, "-v", "7"}
	fmt.Printf("demo: server: ncdevmem %s\n", strings.Join(args, " "))
	server := exec.Command(*bin, args...)
	server.Stdout, server.Stderr = os.Stdout, os.Stderr
	if err := server.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 2
	}
	done := make(chan error, 1)
	go func() { done <- server.Wait() }()
	if err := waitListening(*port, done); err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		server.Process.Kill()
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	var send *exec.Cmd
	netns := []string{"netns", "exec", env["DEVMEM_PEER_NETNS"]}
	switch *sender {
	case "socat":
		// sourceport: the server's 5-tuple rule (-c) names the port.
		send = exec.CommandContext(ctx, "ip", append(netns, "socat", "-u", "STDIN",
			fmt.Sprintf("TCP:%s:%s,sourceport=%s", env["DEVMEM_ADDR4"], p, p))...)
	case "ncdevmem":
		send = exec.CommandContext(ctx, "ip", append(netns, *bin, "-f", env["DEVMEM_PEER_IFNAME"],
			"-s", env["DEVMEM_ADDR4"], "-c", env["DEVMEM_PEER_ADDR4"], "-p", p)...)
	default:
		fmt.Fprintf(os.Stderr, "demo: -sender %q: want socat or ncdevmem\n", *sender)
		server.Process.Kill()
		return 2
	}
	fmt.Printf("demo: sender (%s, netns %s): %d bytes of the -v 7 pattern\n", *sender, env["DEVMEM_PEER_NETNS"], *size)
	send.Stdin = io.LimitReader(&pattern7{}, *size)
	send.Stdout, send.Stderr = os.Stderr, os.Stderr
	start := time.Now()
	if err := send.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo: sender: %v\n", err)
	}
	err := <-done
	code := server.ProcessState.ExitCode()
	fmt.Printf("demo: sender finished after %.2f s; ncdevmem exit status %d (%v)\n", time.Since(start).Seconds(), code, err)
	return code
}

// pattern7 is the endless stream ncdevmem -v 7 expects: 1..6 then '\n'.
type pattern7 struct{ off int }

var block = bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, '\n'}, 1<<14)

func (p *pattern7) Read(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		c := copy(b[n:], block[p.off:])
		n += c
		p.off = (p.off + c) % 7
	}
	return n, nil
}

// waitListening waits for a TCP listener on port, reading /proc/net/tcp*
// (a probing connection would be taken as the transfer).
func waitListening(port int, done <-chan error) error {
	want := fmt.Sprintf(":%04X", port)
	for range 600 {
		for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
			b, _ := os.ReadFile(f)
			for _, line := range strings.Split(string(b), "\n") {
				fields := strings.Fields(line)
				if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == "0A" {
					return nil
				}
			}
		}
		select {
		case err := <-done:
			return fmt.Errorf("ncdevmem exited before listening: %v", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("nothing listens on port %d", port)
}
