package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDataDir takes an exclusive lock on the data directory for the life of
// the process. SQLite mode is one process per data directory: the lock is
// what lets the engine treat every job left running as orphaned by a dead
// process. The kernel drops the lock when the process dies, even on SIGKILL.
func lockDataDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %s is in use by another fleetpass server", dir)
		}
		return nil, fmt.Errorf("lock data directory: %w", err)
	}
	return f, nil
}
