//go:build !linux

package devmem

import "context"

var nativeTxABI = txABI{wordSize: 8, solSocket: 1, scmDevmemDMABuf: 79}

type sendSys struct{}

type reapSys struct{}

func (s *Sender) init() error { return errNotSupportedOS("new sender") }

func (s *Sender) sendRange(ctx context.Context, seq uint32, off, n int64) (int64, error) {
	return 0, errNotSupportedOS("sendmsg")
}

func (s *Sender) reapWait(ctx context.Context, cond func() bool) error {
	return errNotSupportedOS("wait completion")
}

func (s *Sender) stopReaper() {}

func (s *Sender) wakeReaper() {}

func (s *Sender) reapNow() error { return errNotSupportedOS("recvmsg MSG_ERRQUEUE") }
