//go:build linux

package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
)

// The guest multiplexes everything it has to say onto one virtio serial
// port as frames: one kind byte, a big-endian uint32 length, the payload.
// Framing keeps the program's bytes intact (nothing the program prints can
// forge the exit frame) and keeps stdout, stderr and harness messages in
// the order init read them.
const (
	frameStdout byte = 'o'
	frameStderr byte = 'e'
	frameLog    byte = 'l' // harness messages, shown on failure or with -v
	frameExit   byte = 'x' // JSON result; always the last frame
)

const maxFramePayload = 1 << 20

type frameWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (fw *frameWriter) writeFrame(kind byte, p []byte) error {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	for len(p) > 0 || kind == frameExit {
		n := min(len(p), maxFramePayload)
		var hdr [5]byte
		hdr[0] = kind
		binary.BigEndian.PutUint32(hdr[1:], uint32(n))
		if _, err := fw.w.Write(append(hdr[:], p[:n]...)); err != nil {
			return err
		}
		p = p[n:]
		if kind == frameExit {
			break
		}
	}
	return nil
}

// stream returns an io.Writer that wraps everything written in frames of
// the given kind.
func (fw *frameWriter) stream(kind byte) io.Writer {
	return streamWriter{fw, kind}
}

type streamWriter struct {
	fw   *frameWriter
	kind byte
}

func (s streamWriter) Write(p []byte) (int, error) {
	if err := s.fw.writeFrame(s.kind, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

func readFrame(r io.Reader) (kind byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFramePayload {
		return 0, nil, fmt.Errorf("frame of %d bytes exceeds the %d limit", n, maxFramePayload)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("truncated frame: %w", err)
	}
	return hdr[0], payload, nil
}
