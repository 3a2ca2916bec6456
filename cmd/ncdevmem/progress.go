package main

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progressInterval is how often the live status line is redrawn.
const progressInterval = 250 * time.Millisecond

// startProgress redraws line() on w (a terminal) every progressInterval
// until the returned stop is called, which erases the line.
func startProgress(w io.Writer, line func() string) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(w, "\r\033[K")
				return
			case <-t.C:
				fmt.Fprintf(w, "\r\033[K%s", line())
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done); wg.Wait() }) }
}
