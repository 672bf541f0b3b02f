package engine

import (
	"context"

	"github.com/riverqueue/river/riverdriver"
)

// Reaper is the reaper's memory between its passes.
type Reaper = reaper

// ReapPass runs one pass of the reaper, reading pages of page jobs.
func (e *Engine) ReapPass(ctx context.Context, r *Reaper, page int) (bool, error) {
	return e.reapPass(ctx, r, "test", page)
}

// Executor is River's executor over the engine's database.
func (e *Engine) Executor() riverdriver.Executor { return e.river.Driver().GetExecutor() }
