//go:build !linux

package devmem

type recvSys struct{}

func (r *Receiver) initSys() error { return nil }

func (s *recvSys) wake() bool   { return false }
func (s *recvSys) unwake() bool { return false }
func (s *recvSys) closeWaker()  {}

func (r *Receiver) recv(frags []Frag, buf []byte) (Message, error) {
	return Message{}, ErrNotSupported
}
