//go:build !linux

package nic

import (
	"errors"
	"runtime"
)

var errNoJournal = errors.New("nic setup journals need Linux, not " + runtime.GOOS)

func lockDir(string) (func(), error) { return nil, errNoJournal }
func selfIdentity() (journal, error) { return journal{}, errNoJournal }

var processAlive = func(*journal) bool { return true }
