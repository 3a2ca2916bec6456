package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// summary is what a run reports at the end, as text or as JSON.
type summary struct {
	Mode    string  `json:"mode"`
	OK      bool    `json:"ok"`
	Exit    int     `json:"exit_status"`
	Error   string  `json:"error,omitempty"`
	IfName  string  `json:"ifname"`
	Queues  []int   `json:"queues,omitempty"`
	DMABuf  uint32  `json:"dmabuf_id,omitempty"`
	Bytes   uint64  `json:"bytes"`
	Seconds float64 `json:"seconds"`
	MBps    float64 `json:"mb_per_s"`

	// Receive side.
	RecvCalls        uint64 `json:"recvmsg_calls,omitempty"`
	Frags            uint64 `json:"frags,omitempty"`
	PageAlignedFrags uint64 `json:"page_aligned_frags,omitempty"`
	LinearBytes      uint64 `json:"linear_bytes"`
	LinearFrags      uint64 `json:"linear_frags"`
	TokensReleased   uint64 `json:"tokens_released"`
	DontneedCalls    uint64 `json:"dontneed_calls"`
	Validation       string `json:"validation"` // off, passed, failed, incomplete
	Mismatches       int    `json:"mismatches"`

	// Send side.
	Sends       uint64 `json:"sends,omitempty"`
	Completions uint64 `json:"completions,omitempty"`

	// Probe mode.
	Checks []checkResult `json:"checks,omitempty"`
}

type checkResult struct {
	Name   string `json:"name"`
	Pass   bool   `json:"pass"`
	Detail string `json:"detail,omitempty"`
}

// finish fills in the derived fields.
func (s *summary) finish(elapsed time.Duration, err error) {
	s.Seconds = elapsed.Seconds()
	if s.Seconds > 0 {
		s.MBps = float64(s.Bytes) / 1e6 / s.Seconds
	}
	s.Exit = exitCode(err)
	s.OK = err == nil
	if err != nil {
		s.Error = oneLine(err)
	}
}

// oneLine flattens an error (errors.Join puts newlines between parts).
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func (s *summary) writeJSON(w io.Writer) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func (s *summary) writeText(w io.Writer) {
	mode := s.Mode
	if s.Exit == exitSetup {
		mode = "" // nothing was transferred or checked: just the cause
	}
	switch mode {
	case modeProbe.String():
		// The PASS/FAIL lines were printed as the checks ran.
		passed := 0
		for _, c := range s.Checks {
			if c.Pass {
				passed++
			}
		}
		fmt.Fprintf(w, "probe: %d of %d checks passed\n", passed, len(s.Checks))
	case modeServer.String():
		fmt.Fprintf(w, "received %d bytes in %.3f s (%.1f MB/s): %d recvmsg calls, %d frags (%d page-aligned), %d linear bytes in %d cmsgs\n",
			s.Bytes, s.Seconds, s.MBps, s.RecvCalls, s.Frags, s.PageAlignedFrags, s.LinearBytes, s.LinearFrags)
		fmt.Fprintf(w, "tokens released %d in %d SO_DEVMEM_DONTNEED calls; validation %s", s.TokensReleased, s.DontneedCalls, s.Validation)
		if s.Mismatches > 0 {
			fmt.Fprintf(w, " (%d mismatches)", s.Mismatches)
		}
		fmt.Fprintln(w)
	case modeClient.String():
		fmt.Fprintf(w, "sent %d bytes in %.3f s (%.1f MB/s): %d sends, %d zerocopy completions\n",
			s.Bytes, s.Seconds, s.MBps, s.Sends, s.Completions)
	}
	if s.OK {
		fmt.Fprintf(w, "ncdevmem: ok\n")
	} else {
		fmt.Fprintf(w, "ncdevmem: %s\n", s.Error)
	}
}

// progressLine is the live status line of a receiver.
func progressLine(bytes uint64, elapsed time.Duration, frags uint64, outstanding int) string {
	rate := 0.0
	if sec := elapsed.Seconds(); sec > 0 {
		rate = float64(bytes) / 1e6 / sec
	}
	return fmt.Sprintf("%s  %.1f MB/s  %d frags  %d tokens outstanding", humanBytes(bytes), rate, frags, outstanding)
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
