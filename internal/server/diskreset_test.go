package server

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/testutil"
)

func TestServeSaysAtStartUpWhyDiskResetsAreUnavailable(t *testing.T) {
	broken := filepath.Join(t.TempDir(), "fleetpass-diskreset")
	// A helper that cannot answer the probe.
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho oops >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ helper, want string }{
		{"off", "disabled (--disk-helper off)"},
		{broken, "oops"},
		{filepath.Join(t.TempDir(), "missing"), "no such file"},
	} {
		t.Run(tc.helper, func(t *testing.T) {
			logs := &testutil.LogBuffer{}
			srv, err := Open(context.Background(), Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), DiskHelper: tc.helper,
				SyncInterval: time.Hour, Log: slog.New(slog.NewTextHandler(logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			out := logs.String()
			if !strings.Contains(out, `msg="disk resets: unavailable"`) || !strings.Contains(out, tc.want) {
				t.Fatalf("start-up log does not say why disk resets are unavailable (%q):\n%s", tc.want, out)
			}
		})
	}
}
