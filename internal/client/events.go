package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
)

// EventFilter selects what Events receives.
type EventFilter struct {
	// OperationID, when set, asks only for the events of one operation.
	OperationID string
	// LastEventID resumes a stream after the event with this id.
	LastEventID string
	// IdleTimeout makes the client reconnect when nothing at all (not even a
	// keep-alive comment) has arrived for this long, since a silently dead
	// connection would otherwise block forever. Default 75s.
	IdleTimeout time.Duration
}

// ErrStreamInterrupted is wrapped by the errors that Events yields when the
// stream broke and the client is about to reconnect on its own.
var ErrStreamInterrupted = errors.New("event stream interrupted")

// maxEventBytes bounds one event: an operation of 100 items fits easily.
const maxEventBytes = 4 << 20

// Events streams /v1/events. It yields each event with a nil error. When the
// stream breaks it yields an error wrapping ErrStreamInterrupted and
// reconnects with Last-Event-ID, so no event is lost in between; any other
// error (such as an *APIError for a refused request) is yielded last and
// ends the sequence. Stop by breaking out of the loop or cancelling ctx.
func (c *Client) Events(ctx context.Context, f EventFilter) iter.Seq2[apiv1.Event, error] {
	return func(yield func(apiv1.Event, error) bool) {
		idle := f.IdleTimeout
		if idle <= 0 {
			idle = 75 * time.Second
		}
		last := f.LastEventID
		delay := time.Second
		for attempt := 1; ; attempt++ {
			got, serverDelay, err := c.streamOnce(ctx, f.OperationID, &last, idle, yield)
			if ctx.Err() != nil || errors.Is(err, errStopped) {
				return
			}
			if err != nil && !errors.Is(err, ErrStreamInterrupted) {
				yield(apiv1.Event{}, err)
				return
			}
			if got {
				delay = time.Second
			}
			if err == nil {
				err = fmt.Errorf("%w: server closed the stream", ErrStreamInterrupted)
			}
			if !yield(apiv1.Event{}, err) {
				return
			}
			wait := delay
			if serverDelay > 0 {
				wait = serverDelay
			}
			if c.sleep(ctx, wait) != nil {
				return
			}
			delay = min(delay*2, 30*time.Second)
		}
	}
}

// errStopped says the consumer stopped the iteration.
var errStopped = errors.New("stopped")

// streamOnce reads one connection's worth of events. It reports whether any
// event arrived and how long the server asked to wait before reconnecting.
func (c *Client) streamOnce(ctx context.Context, opID string, last *string, idle time.Duration,
	yield func(apiv1.Event, error) bool) (bool, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idleTimer := time.AfterFunc(idle, cancel)
	defer idleTimer.Stop()

	q := url.Values{}
	setIf(q, "operationId", opID)
	r := &request{method: http.MethodGet, path: "/v1/events", query: q, accept: "text/event-stream"}
	req, err := c.newHTTPRequest(ctx, r)
	if err != nil {
		return false, 0, err
	}
	if *last != "" {
		req.Header.Set("Last-Event-ID", *last)
	}
	req.Header.Set("Cache-Control", "no-cache")
	resp, err := c.hc.Do(req)
	if err != nil {
		return false, 0, fmt.Errorf("%w: %w", ErrStreamInterrupted, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		apiErr := readAPIError(resp)
		switch resp.StatusCode {
		case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return false, apiErr.RetryAfter, fmt.Errorf("%w: %w", ErrStreamInterrupted, apiErr)
		}
		return false, 0, apiErr
	}
	if mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); mt != "text/event-stream" {
		return false, 0, fmt.Errorf("GET /v1/events: answer is %q, not an event stream", mt)
	}

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventBytes)
	var (
		got       bool
		retry     time.Duration
		id, typ   string
		data      strings.Builder
		haveData  bool
		idPresent bool
	)
	for sc.Scan() {
		idleTimer.Reset(idle)
		line := sc.Text()
		if line == "" { // end of one event
			if haveData {
				ev, err := decodeEvent(typ, id, data.String())
				if err != nil {
					return got, retry, err
				}
				if idPresent {
					*last = id
				}
				got = true
				if !yield(ev, nil) {
					return got, 0, errStopped
				}
			} else if idPresent {
				*last = id
			}
			typ, id, haveData, idPresent = "", "", false, false
			data.Reset()
			continue
		}
		if strings.HasPrefix(line, ":") { // comment, used as keep-alive
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "event":
			typ = value
		case "data":
			if haveData {
				data.WriteByte('\n')
			}
			data.WriteString(value)
			haveData = true
		case "id":
			id, idPresent = value, true
		case "retry":
			if ms, err := strconv.Atoi(value); err == nil && ms >= 0 {
				retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	err = sc.Err()
	if err == nil || errors.Is(err, io.ErrUnexpectedEOF) || ctx.Err() != nil {
		if err == nil {
			err = errors.New("server closed the stream")
		}
		return got, retry, fmt.Errorf("%w: %w", ErrStreamInterrupted, err)
	}
	if errors.Is(err, bufio.ErrTooLong) {
		return got, retry, fmt.Errorf("GET /v1/events: an event is larger than %d bytes", maxEventBytes)
	}
	return got, retry, fmt.Errorf("%w: %w", ErrStreamInterrupted, err)
}

func decodeEvent(typ, id, data string) (apiv1.Event, error) {
	var ev apiv1.Event
	if err := json.Unmarshal([]byte(data), &ev); err != nil {
		return ev, fmt.Errorf("GET /v1/events: decoding event %s: %w", id, err)
	}
	if ev.Type == "" {
		ev.Type = typ
	}
	if ev.ID == 0 && id != "" {
		ev.ID, _ = strconv.ParseInt(id, 10, 64)
	}
	return ev, nil
}
