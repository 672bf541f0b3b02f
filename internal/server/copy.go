package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/store"
)

// CopyResult is what CopyDatabase copied.
type CopyResult struct {
	Rows store.CopyCounts
	// Resumed is the number of unfinished items given fresh jobs.
	Resumed int
}

// CopyDatabase copies the SQLite installation in dataDir into the empty
// PostgreSQL database at url, in one transaction. The data directory is
// locked for the copy, so a server still running on it is refused.
// Unfinished items get fresh jobs on the target rather than copies of
// their River rows, so they resume when a server starts on it.
func CopyDatabase(ctx context.Context, dataDir, url string) (CopyResult, error) {
	path := filepath.Join(dataDir, "fleetpass.db")
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return CopyResult{}, fmt.Errorf("%s holds no fleetpass database (fleetpass.db)", dataDir)
		}
		return CopyResult{}, err
	}
	lock, err := lockDataDir(dataDir)
	if err != nil {
		return CopyResult{}, err
	}
	defer lock.Close()
	from, err := store.OpenSQLite(ctx, path)
	if err != nil {
		return CopyResult{}, err
	}
	defer from.Close()
	to, err := store.OpenPostgres(ctx, url)
	if err != nil {
		return CopyResult{}, err
	}
	defer to.Close()
	if err := engine.Migrate(ctx, to, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		return CopyResult{}, err
	}
	var res CopyResult
	err = to.InTx(ctx, func(tx *sql.Tx) error {
		rows, err := store.Copy(ctx, from, to, tx)
		if err != nil {
			return err
		}
		n, err := engine.EnqueueUnfinished(ctx, to, tx)
		if err != nil {
			return err
		}
		res = CopyResult{Rows: rows, Resumed: n}
		return nil
	})
	return res, err
}
