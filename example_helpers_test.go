package devmem_test

import (
	"errors"
	"fmt"

	"github.com/devmem-go/devmem"
)

// The tokens of received frags, in any order and with repeats, go back to
// the kernel as the fewest ranges (struct dmabuf_token) for one
// SO_DEVMEM_DONTNEED.
func ExampleCoalesceTokens() {
	tokens := []uint32{7, 3, 4, 5, 9, 8, 4, 20}
	for _, r := range devmem.CoalesceTokens(nil, tokens) {
		fmt.Printf("tokens %d..%d (%d)\n", r.Start, r.Start+r.Count-1, r.Count)
	}
	// Output:
	// tokens 3..5 (3)
	// tokens 7..9 (3)
	// tokens 20..20 (1)
}

// MaxFrags sizes the []Frag for a control buffer: each frag takes one
// devmem control message, 40 bytes on 64-bit and 36 on 32-bit systems.
func ExampleMaxFrags() {
	fmt.Println(devmem.MaxFrags(120), devmem.MaxFrags(35), devmem.MaxFrags(0))
	// Output: 3 0 0
}

// A feature the running kernel lacks is a *NotSupportedError inside the
// *Error: errors.Is matches ErrNotSupported and errors.ErrUnsupported, and
// errors.As gets the first kernel that has the feature.
func ExampleNotSupportedError() {
	var err error = &devmem.Error{Op: "bind-rx", Err: &devmem.NotSupportedError{
		Op: "bind-rx", Feature: "rx-page-size", MinKernel: "6.18",
	}}
	err = fmt.Errorf("binding queue 3: %w", err)
	fmt.Println(err)
	fmt.Println(errors.Is(err, devmem.ErrNotSupported), errors.Is(err, errors.ErrUnsupported))
	var nse *devmem.NotSupportedError
	if errors.As(err, &nse) {
		fmt.Println("needs Linux", nse.MinKernel)
	}
	// Output:
	// binding queue 3: devmem: bind-rx: not supported: rx-page-size requires Linux 6.18 or later
	// true true
	// needs Linux 6.18
}
