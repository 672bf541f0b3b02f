package server

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

// The data directory holds the database (sealed passwords in flight,
// hashed keys, sessions), the sealing key and the first credentials: only
// the server's user may read any of it, whatever the umask or the mode the
// operator gave the directory.

// secureDataDir makes the data directory if needed and makes it 0700 if
// its group or others may enter or read it, saying so.
func secureDataDir(dir string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("data directory %s is readable by others (mode %04o) and cannot be made private: %w",
				dir, fi.Mode().Perm(), err)
		}
		log.Warn("the data directory was readable by other users; made it private (0700)",
			"data_dir", dir, "was", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
	return nil
}

// createPrivate creates path with mode 0600 if it does not exist, so a
// library that creates files with the umask's mode (SQLite: 0644) opens a
// private file instead; SQLite gives its -wal and -shm files the mode of
// the database file.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	return f.Close()
}

// privateFiles makes every file of the data directory 0600 that group or
// others may read (files of an older version, or made by hand), saying so.
func privateFiles(dir string, log *slog.Logger) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			if errorsIsNotExist(err) {
				continue
			}
			return fmt.Errorf("data directory: %w", err)
		}
		if fi.Mode().Perm()&0o077 == 0 {
			continue
		}
		p := filepath.Join(dir, e.Name())
		if err := os.Chmod(p, 0o600); err != nil {
			return fmt.Errorf("make %s private: %w", p, err)
		}
		log.Warn("a data directory file was readable by other users; made it private (0600)",
			"file", p, "was", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
	return nil
}

func errorsIsNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
