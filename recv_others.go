//go:build !linux

package devmem

type recvSys struct{}

func (r *Receiver) initSys(bufSize int) {}

func (r *Receiver) recv() (Message, error) { return Message{}, ErrNotSupported }
