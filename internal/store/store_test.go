package store_test

import (
	"os"
	"testing"

	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/store/storetest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// TestConformance runs the store's conformance suite on every database.
func TestConformance(t *testing.T) {
	for name, open := range storetest.Dialects() {
		t.Run(name, func(t *testing.T) { storetest.Run(t, open) })
	}
}
