package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/client"
	"github.com/fleetpass/fleetpass/internal/ctlchar"
)

// progress is what the CLI knows of an operation it follows.
type progress struct {
	opID   string
	kind   string
	status string
	order  []string // instance ids, in the operation's order
	items  map[string]*apiv1.Item
	start  time.Time
}

// newProgress starts following op at now. Elapsed time counts from the
// operation's creation, not from when the CLI started to follow it (a
// `fleetpass operations wait` minutes later); a server clock ahead of ours
// must not make it negative.
func newProgress(op *apiv1.Operation, now time.Time) *progress {
	start := now
	if !op.CreatedAt.IsZero() && op.CreatedAt.Before(now) {
		start = op.CreatedAt
	}
	p := &progress{opID: op.ID, kind: op.Kind, status: op.Status, items: map[string]*apiv1.Item{}, start: start}
	for _, it := range op.Items {
		p.applyItem(it)
	}
	return p
}

// applyItem records an item and reports whether anything shown changed.
func (p *progress) applyItem(it apiv1.Item) bool {
	old, ok := p.items[it.InstanceID]
	if !ok {
		p.order = append(p.order, it.InstanceID)
		p.items[it.InstanceID] = &it
		return true
	}
	if it.InstanceName == "" {
		it.InstanceName = old.InstanceName
	}
	changed := old.State != it.State || old.Step != it.Step || old.ErrorCode != it.ErrorCode || old.Message != it.Message
	*old = it
	return changed
}

// applyOperation records a whole operation and returns the instances whose
// items changed.
func (p *progress) applyOperation(op *apiv1.Operation) []string {
	p.status = op.Status
	var changed []string
	for _, it := range op.Items {
		if p.applyItem(it) {
			changed = append(changed, it.InstanceID)
		}
	}
	return changed
}

func (p *progress) counts() (pending, running, succeeded, failed int) {
	for _, id := range p.order {
		switch p.items[id].State {
		case apiv1.ItemSucceeded:
			succeeded++
		case apiv1.ItemFailed:
			failed++
		case apiv1.ItemRunning:
			running++
		default:
			pending++
		}
	}
	return
}

// summary is the line under the progress: where the operation stands.
func (p *progress) summary() string {
	pending, running, succeeded, failed := p.counts()
	var parts []string
	for _, c := range []struct {
		n    int
		what string
	}{{pending, "queued"}, {running, "running"}, {succeeded, "succeeded"}, {failed, "failed"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	return fmt.Sprintf("%s %s %s: %s of %d", p.opID, p.kind, p.status, strings.Join(parts, ", "), len(p.order))
}

// stepLabel turns a step name into words: shutting_down -> shutting down.
func stepLabel(step string) string {
	return strings.ReplaceAll(step, "_", " ")
}

// describe says in a few words where an item is.
func describe(it *apiv1.Item) string {
	switch it.State {
	case apiv1.ItemFailed:
		return "failed: " + itemError(it)
	case apiv1.ItemSucceeded:
		return "succeeded"
	}
	s := stepLabel(it.Step)
	if s == "" {
		s = it.State
	}
	if it.Message != "" {
		s += " (" + it.Message + ")"
	}
	return s
}

func itemError(it *apiv1.Item) string {
	switch {
	case it.ErrorCode != "" && it.Message != "":
		return it.ErrorCode + ": " + it.Message
	case it.ErrorCode != "":
		return it.ErrorCode
	}
	return it.Message
}

// renderer shows a followed operation.
type renderer interface {
	// update shows the items whose ids are given, which just changed.
	update(p *progress, changed []string)
	// finish shows the end of the operation.
	finish(p *progress)
}

// plainRenderer writes one line per change, for logs and pipes.
type plainRenderer struct {
	w io.Writer
	// last is the line last written per instance: a change of a field
	// the line does not show (pending -> running at step queued) must not
	// repeat it.
	last map[string]string
}

func (r *plainRenderer) update(p *progress, changed []string) {
	if r.last == nil {
		r.last = map[string]string{}
	}
	for _, id := range changed {
		it := p.items[id]
		line := fmt.Sprintf("%s %s %s", id, orDash(it.InstanceName), ctlchar.Escape(describe(it)))
		if r.last[id] == line {
			continue
		}
		r.last[id] = line
		fmt.Fprintln(r.w, line)
	}
}

func (r *plainRenderer) finish(p *progress) {
	fmt.Fprintln(r.w, p.summary())
}

// orDash is s as printed: "-" if empty, its control characters escaped.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return ctlchar.Escape(s)
}

// liveRenderer redraws a table in place on a terminal.
type liveRenderer struct {
	w     io.Writer
	width int
	drawn int // lines drawn last time, to move back over them
	now   func() time.Time
}

func (r *liveRenderer) update(p *progress, _ []string) { r.draw(p) }
func (r *liveRenderer) finish(p *progress)             { r.draw(p) }

// tick redraws the elapsed time, which moves without any news.
func (r *liveRenderer) tick(p *progress) { r.draw(p) }

// ticker is a renderer that shows the time passing.
type ticker interface{ tick(p *progress) }

func (r *liveRenderer) draw(p *progress) {
	var table bytes.Buffer
	tw := newTable(&table)
	row(tw, "INSTANCE", "NAME", "STEP", "STATE", "MESSAGE")
	for _, id := range p.order {
		it := p.items[id]
		msg := it.Message
		if it.State == apiv1.ItemFailed {
			msg = itemError(it)
		}
		row(tw, id, it.InstanceName, stepLabel(it.Step), it.State, msg)
	}
	_ = tw.Flush()
	lines := strings.Split(strings.TrimSuffix(table.String(), "\n"), "\n")
	lines = append(lines, fmt.Sprintf("%s (%s)", p.summary(), r.now().Sub(p.start).Round(time.Second)))

	// Lines longer than the terminal are wrapped here, under the message
	// column, rather than by the terminal, which would break the count
	// of lines to move back over (and cut reasons short if truncated).
	indent := strings.Index(lines[0], "MESSAGE")
	var physical []string
	for _, l := range lines {
		physical = append(physical, wrapLine(l, r.width-1, indent)...)
	}
	var out bytes.Buffer
	if r.drawn > 0 {
		fmt.Fprintf(&out, "\x1b[%dA", r.drawn) // back to the first line drawn
	}
	for _, l := range physical {
		out.WriteString("\r\x1b[2K")
		out.WriteString(l)
		out.WriteString("\n")
	}
	if r.drawn > len(physical) {
		// A shorter table than last time: clear what is left below.
		out.WriteString("\x1b[J")
	}
	r.drawn = len(physical)
	_, _ = r.w.Write(out.Bytes())
}

// wrapLine splits l into lines of at most width characters, breaking at
// spaces where it can; continuation lines start indent spaces in (the
// message column), or 4 when that leaves too little room. width <= 0
// means no limit.
func wrapLine(l string, width, indent int) []string {
	if width <= 0 || utf8.RuneCountInString(l) <= width {
		return []string{l}
	}
	if indent < 0 || indent > width/2 {
		indent = min(4, width/2)
	}
	var out []string
	rest, room := []rune(l), width
	for len(rest) > room {
		cut := room
		for i := room; i > room/2; i-- {
			if rest[i] == ' ' {
				cut = i
				break
			}
		}
		out = append(out, strings.TrimRight(string(rest[:cut]), " "))
		rest = []rune(strings.TrimLeft(string(rest[cut:]), " "))
		rest = append([]rune(strings.Repeat(" ", indent)), rest...)
	}
	return append(out, string(rest))
}

// newRenderer picks the live table when stdout is a terminal tall enough
// for it, and plain lines otherwise.
func (a *app) newRenderer(items int) renderer {
	if fd, ok := terminalFd(a.stdout); ok {
		if w, h, err := term.GetSize(fd); err == nil && items+3 < h {
			return &liveRenderer{w: a.stdout, width: w, now: time.Now}
		}
	}
	return &plainRenderer{w: a.stdout}
}

// update is one piece of news about a followed operation.
type update struct {
	item *apiv1.Item
	op   *apiv1.Operation
	err  error // the follow cannot go on
}

// Poll intervals of follow: long while events flow (the poll is only a
// safety net for missed events and the final state), short without them.
const (
	slowPoll = 30 * time.Second
	fastPoll = 2 * time.Second
)

// follow shows an operation's progress until it finishes, from the event
// stream, with /wait polling beside it in case events are lost or
// unavailable. It returns the finished operation.
func (a *app) follow(ctx context.Context, c *client.Client, op *apiv1.Operation) (*apiv1.Operation, error) {
	if a.jsonOutput() {
		if client.OperationDone(op) {
			return op, nil
		}
		done, err := c.WaitOperation(ctx, op.ID)
		if err != nil {
			return nil, fmt.Errorf("waiting for operation %s: %w", op.ID, err)
		}
		return done, nil
	}
	return followWith(ctx, c, op, a.newRenderer(len(op.Items)))
}

func followWith(ctx context.Context, c *client.Client, op *apiv1.Operation, r renderer) (*apiv1.Operation, error) {
	p := newProgress(op, time.Now())
	r.update(p, p.order)
	if client.OperationDone(op) {
		r.finish(p)
		return op, nil
	}
	var tickC <-chan time.Time
	if _, ok := r.(ticker); ok {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		tickC = t.C
	}

	watchCtx, cancel := context.WithCancel(ctx)
	updates := make(chan update)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	// eventsDown is cancelled when the event stream fails, which also cuts
	// short a long poll so that polling takes over at once.
	eventsDown, markDown := context.WithCancel(watchCtx)
	defer markDown()
	send := func(u update) bool {
		select {
		case updates <- u:
			return true
		case <-watchCtx.Done():
			return false
		}
	}
	wg.Go(func() { watchEvents(watchCtx, c, op.ID, markDown, send) })
	wg.Go(func() { pollOperation(watchCtx, c, op.ID, eventsDown, send) })

	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("stopped waiting; operation %s goes on (see 'fleetpass operations wait %s'): %w",
				op.ID, op.ID, ctx.Err())
		case <-tickC:
			r.(ticker).tick(p)
		case u := <-updates:
			switch {
			case u.err != nil:
				return nil, u.err
			case u.item != nil:
				if p.applyItem(*u.item) {
					r.update(p, []string{u.item.InstanceID})
				}
			case u.op != nil:
				if changed := p.applyOperation(u.op); len(changed) > 0 {
					r.update(p, changed)
				}
				if client.OperationDone(u.op) {
					final := u.op
					if len(final.Items) < len(p.order) {
						// Operation events may leave the items out; the
						// outcome and the exit status need them all.
						full, err := c.GetOperation(ctx, op.ID)
						if err != nil {
							return nil, fmt.Errorf("getting operation %s: %w", op.ID, err)
						}
						final = full
						if changed := p.applyOperation(final); len(changed) > 0 {
							r.update(p, changed)
						}
					}
					r.finish(p)
					return final, nil
				}
			}
		}
	}
}

// watchEvents forwards the operation's events. On the first failure it
// calls markDown and, since reconnections may lose the thread again,
// leaves the polling fast from then on.
func watchEvents(ctx context.Context, c *client.Client, opID string, markDown func(), send func(update) bool) {
	for ev, err := range c.Events(ctx, client.EventFilter{OperationID: opID}) {
		if err != nil {
			markDown()
			if errors.Is(err, client.ErrStreamInterrupted) {
				continue
			}
			return // polling alone carries on
		}
		switch {
		case ev.Item != nil && ev.Item.OperationID == opID:
			it := ev.Item.Item
			if !send(update{item: &it}) {
				return
			}
		case ev.Operation != nil && ev.Operation.ID == opID:
			if !send(update{op: ev.Operation}) {
				return
			}
		}
	}
}

func pollOperation(ctx context.Context, c *client.Client, opID string, eventsDown context.Context, send func(update) bool) {
	for {
		// While events flow, a long poll bound to eventsDown; after, short
		// polls bound to ctx alone.
		callCtx, timeout := eventsDown, slowPoll
		if eventsDown.Err() != nil {
			callCtx, timeout = ctx, fastPoll
		}
		op, err := c.WaitOperationFor(callCtx, opID, timeout)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && callCtx.Err() != nil:
			continue // the events broke off during a long poll: poll fast now
		case err != nil && permanent(err):
			send(update{err: fmt.Errorf("waiting for operation %s: %w", opID, err)})
			return
		case err != nil:
			// The client already retried; the server may be restarting, and
			// the operation survives that, so keep waiting.
			select {
			case <-ctx.Done():
				return
			case <-time.After(fastPoll):
			}
			continue
		}
		if !send(update{op: op}) || client.OperationDone(op) {
			return
		}
	}
}

// permanent reports whether an error will not go away by asking again.
func permanent(err error) bool {
	var ae *client.APIError
	if !errors.As(err, &ae) {
		return false
	}
	return ae.Status >= 400 && ae.Status < 500 &&
		ae.Status != http.StatusRequestTimeout && ae.Status != http.StatusTooManyRequests
}

// failedItems counts the failed items of a finished operation.
func failedItems(op *apiv1.Operation) int {
	n := 0
	for _, it := range op.Items {
		if it.State == apiv1.ItemFailed {
			n++
		}
	}
	if n == 0 && (op.Status == apiv1.OperationFailed || op.Status == apiv1.OperationPartial) {
		// The items may be missing from a thin answer; the status is not.
		n = max(op.Summary.Failed, 1)
	}
	return n
}

// waitResult turns a finished operation into the command's outcome: exit
// status 2 when any item failed.
func waitResult(op *apiv1.Operation) error {
	if n := failedItems(op); n > 0 {
		return &exitError{code: 2, err: fmt.Errorf("operation %s %s: %d of %d item(s) failed",
			op.ID, op.Status, n, max(len(op.Items), op.Summary.Total))}
	}
	return nil
}
