package nic

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/devmem-go/devmem/internal/errs"
)

// journalPath is the journal file of a process's Setup number seq.
func journalPath(dir string, pid int, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%d-%d.json", pid, seq))
}

// withLock creates dir if need be, locks it against other processes, and
// runs fn with every journal in it.
func withLock(dir string, fn func(all []*journal) error) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return &errs.Error{Op: "nic journal", Err: err}
	}
	unlock, err := lockDir(filepath.Join(dir, "lock"))
	if err != nil {
		return &errs.Error{Op: "nic journal lock", Err: err}
	}
	defer unlock()
	all, err := readJournals(dir)
	if err != nil {
		return &errs.Error{Op: "nic journal", Err: err}
	}
	return fn(all)
}

func readJournals(dir string) ([]*journal, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []*journal
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		j := new(journal)
		if err := json.Unmarshal(b, j); err != nil {
			// Written whole (rename) or not at all, so this is not ours.
			return nil, fmt.Errorf("journal %s: %w", p, err)
		}
		j.path = p
		out = append(out, j)
	}
	return out, nil
}

// writeJournal replaces the file at path with j, durably: a temporary file
// is written and fsynced, renamed over path, and the directory fsynced, so
// a crash leaves the old journal or the new one, never a torn one.
func writeJournal(path string, j *journal) error {
	b, err := json.MarshalIndent(j, "", "\t")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

func removeJournal(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return err
	}
	return nil
}
