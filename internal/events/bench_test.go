package events_test

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/pgtest"
	"github.com/fleetpass/fleetpass/internal/testutil"
)

// TestMain stops the throwaway PostgreSQL cluster of the benchmarks.
func TestMain(m *testing.M) { os.Exit(pgtest.Run(m)) }

// BenchmarkCrossReplicaEventLatency measures the time from the commit of
// an event on replica A to its delivery by replica C's Bus (two stores on
// one PostgreSQL database), with C listening for notifications and with
// C polling only (every 250 ms, as before), in the same run:
//
//	go test -run '^$' -bench CrossReplicaEventLatency -benchtime 1x ./internal/events/
func BenchmarkCrossReplicaEventLatency(b *testing.B) {
	for _, mode := range []string{"notify", "poll"} {
		b.Run(mode, func(b *testing.B) {
			a, c := openPair(b)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			bus := events.NewBus(c, log, 250*time.Millisecond)
			if err := bus.Start(ctx); err != nil {
				b.Fatal(err)
			}
			go bus.Run(ctx)
			if mode == "notify" {
				go c.Listen(ctx, log)
				testutil.WaitFor(b, 30*time.Second, "C listening", func() bool { return c.NotifyStats().Listening })
			}
			const samples = 200
			lat := make([]time.Duration, 0, samples)
			after, err := bus.Last(ctx)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := range samples {
				if err := a.InTx(ctx, func(tx *sql.Tx) error {
					return a.InsertEvent(ctx, tx, "acme", "bench", fmt.Sprint(i), []byte(`{}`))
				}); err != nil {
					b.Fatal(err)
				}
				committed := time.Now()
				wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
				rows, err := bus.Next(wctx, after, 10)
				wcancel()
				if err != nil {
					b.Fatal(err)
				}
				lat = append(lat, time.Since(committed))
				after = rows[len(rows)-1].ID
				// Writers are not in lockstep with readers' polls.
				time.Sleep(time.Duration(i%7) * 3 * time.Millisecond)
			}
			b.StopTimer()
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
