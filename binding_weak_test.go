package devmem

import "weak"

// weakPointer returns a function that yields b while it is still reachable
// from somewhere else, nil once it was collected.
func weakPointer(b *Binding) func() *Binding {
	w := weak.Make(b)
	return w.Value
}
