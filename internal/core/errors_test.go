package core_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/fleetpass/fleetpass/internal/core"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Only a failed database call is STORE_UNAVAILABLE ("nothing was changed,
// retry"); the server's other failures are INTERNAL, so that nobody goes
// looking at a healthy database.
func TestOnlyADatabaseFailureIsStoreUnavailable(t *testing.T) {
	ctx := context.Background()
	st, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "fleetpass.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	service := func(keyByte byte) *core.Service {
		seal, err := sealer.New(bytes.Repeat([]byte{keyByte}, sealer.KeySize))
		if err != nil {
			t.Fatal(err)
		}
		return core.New(st, nil, seal, nil, engine.Drivers{}, log)
	}
	svc := service(1)
	if err := svc.InsertKey(ctx, "fpk-admin", "admin-secret-0123456789", core.AdminTenant, "admin", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := svc.KeySecret(ctx, "fpk-admin"); err != nil {
		t.Fatalf("the key's own server: %v", err)
	}

	t.Run("a secret sealed under another key file is internal", func(t *testing.T) {
		_, _, err := service(2).KeySecret(ctx, "fpk-admin")
		if code := core.CodeOf(err); code != core.CodeInternal {
			t.Errorf("code %q (%v), want %q", code, err, core.CodeInternal)
		}
	})
	t.Run("a closed database is store unavailable", func(t *testing.T) {
		st.Close()
		_, _, err := svc.KeySecret(ctx, "fpk-admin")
		if code := core.CodeOf(err); code != core.CodeStoreUnavailable {
			t.Errorf("code %q (%v), want %q", code, err, core.CodeStoreUnavailable)
		}
	})
}
