package vmtest

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestPruneCache: a build removes killed builds' leftovers and entries
// unused for a week, and keeps recent entries and the lock file.
func TestPruneCache(t *testing.T) {
	cache := t.TempDir()
	week := time.Now().Add(-8 * 24 * time.Hour)
	for _, d := range []string{"recent", "old", ".tmp-abc-123", ".tmp-abc-123.work.XYZ"} {
		if err := os.MkdirAll(filepath.Join(cache, d, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(cache, ".lock"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"old", ".lock"} {
		if err := os.Chtimes(filepath.Join(cache, p), week, week); err != nil {
			t.Fatal(err)
		}
	}
	pruneCache(cache)
	var left []string
	ents, _ := os.ReadDir(cache)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if len(left) != 2 || left[0] != ".lock" || left[1] != "recent" {
		t.Errorf("after pruning the cache holds %q, want [.lock recent]", left)
	}
}
