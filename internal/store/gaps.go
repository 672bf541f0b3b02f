package store

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"sync"
)

// gapWatch decides, on PostgreSQL, when a missing event id is final.
//
// An id is missing from the log while the transaction that took it is
// open, and for good once that transaction rolled back. The transaction
// that took id m took it before any larger id was taken, and (InsertEvent
// makes sure) after it had a transaction id. So when a reader first sees
// m missing below a visible id, that transaction is open or done, and in
// either case its transaction id is below the xmax of a snapshot taken
// then. Once a later snapshot's xmin reaches that xmax, every such
// transaction has ended, and the snapshot shows m if it committed: m is
// final, present or not. Until then, readers stop before m. This holds
// back events for as long as the transaction is open (lag, never loss),
// and leaves writers as concurrent as they are without events.
type gapWatch struct {
	mu sync.Mutex
	// open maps a missing id to the xmax seen when it was found missing;
	// done holds missing ids known final (rolled back, or pruned).
	open map[int64]uint64
	done map[int64]bool
}

// maxGaps bounds what gapWatch remembers; the oldest final ones go first.
const maxGaps = 100_000

// final returns the prefix of rows (read from one snapshot whose xmin is
// xmin, after id after) that no event can still appear in between.
func (g *gapWatch) final(ctx context.Context, s *Store, after int64, rows []EventRow, xmin string) ([]EventRow, error) {
	snapMin, err := strconv.ParseUint(xmin, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("events: snapshot xmin %q: %w", xmin, err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open == nil {
		g.open, g.done = make(map[int64]uint64), make(map[int64]bool)
	}
	prev := after
	for i, r := range rows {
		if r.ID == prev+1 {
			prev = r.ID
			continue
		}
		// Ids prev+1 .. r.ID-1 are missing: all taken before r.ID.
		m := prev + 1
		if g.done[m] {
			prev = r.ID
			continue
		}
		xmax, seen := g.open[m]
		if !seen {
			// A snapshot taken now, after the rows' snapshot showed r.
			var v string
			if err := s.DB.QueryRowContext(ctx, `SELECT pg_snapshot_xmax(pg_current_snapshot())::text`).Scan(&v); err != nil {
				return nil, fmt.Errorf("events: %w", err)
			}
			if xmax, err = strconv.ParseUint(v, 10, 64); err != nil {
				return nil, fmt.Errorf("events: snapshot xmax %q: %w", v, err)
			}
			g.open[m] = xmax
			return rows[:i], nil
		}
		if snapMin < xmax {
			return rows[:i], nil // a transaction that may hold m is still open
		}
		// Final: the rows' snapshot would show m if it had committed.
		delete(g.open, m)
		g.done[m] = true
		g.trim()
		prev = r.ID
	}
	return rows, nil
}

// trim forgets the oldest final gaps past maxGaps.
func (g *gapWatch) trim() {
	if len(g.done) <= maxGaps {
		return
	}
	ids := make([]int64, 0, len(g.done))
	for id := range g.done {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(a, b int) bool { return ids[a] < ids[b] })
	for _, id := range ids[:len(ids)-maxGaps/2] {
		delete(g.done, id)
	}
}
