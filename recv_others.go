//go:build !linux

package devmem

type recvSys struct{}

func (r *Receiver) initSys() {}

func (r *Receiver) recv(frags []Frag, buf []byte) (Message, error) {
	return Message{}, ErrNotSupported
}
