// Package qga speaks the QEMU guest agent protocol (qemu-ga): newline
// separated JSON commands {"execute": ..., "arguments": {...}} answered by
// {"return": ...} or {"error": {"class": ..., "desc": ...}}.
//
// The package has three layers, so that the libvirt driver can reuse the
// first two through libvirt's own agent passthrough:
//
//   - encoding and decoding: Command, SetUserPasswordCommand, ParseAnswer;
//   - operations over any Doer: Exec, Ping, SetUserPassword, which also map
//     the agent's answers to the driver package's errors;
//   - transports: Conn speaks the protocol over an io.ReadWriter (and
//     resynchronises it with Sync), and Channel is a driver.Guest that dials
//     the agent's unix socket for each call.
package qga

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

// maxAnswer bounds one answer line. The agent's largest answers to the
// commands used here (guest-info, guest-exec-status of a one-line output)
// are a few KiB; the bound keeps a runaway or hostile peer from making us
// buffer without end.
const maxAnswer = 1 << 20

// delimiter is the byte that flushes the agent's JSON parser when sent, and
// that precedes the agent's answer to guest-sync-delimited. It is never valid
// in UTF-8, so it cannot occur inside well-formed JSON.
const delimiter = 0xFF

// Error is an error answer of the agent: {"error": {"class": ..., "desc": ...}}.
type Error struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *Error) Error() string {
	desc := e.Desc
	if len(desc) > 512 {
		desc = desc[:512] + "..."
	}
	// Quoted, because desc is the guest's text and may hold line breaks.
	return fmt.Sprintf("agent error %s: %q", e.Class, desc)
}

// Command encodes one command line (with its final newline). args may be nil
// for commands without arguments. Do not use it for secrets: encoding/json
// keeps copies in pooled buffers that nobody can wipe (see
// SetUserPasswordCommand).
func Command(execute string, args any) ([]byte, error) {
	cmd := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
	}{execute, args}
	b, err := json.Marshal(cmd)
	if err != nil {
		return nil, fmt.Errorf("qga: encode %s: %w", execute, err)
	}
	return append(b, '\n'), nil
}

// SetUserPasswordCommand encodes guest-set-user-password for secret: the
// clear-text password, or with crypted its crypt(3) hash (see
// GuestSecret). The line is built by hand into one buffer so that the
// secret's base64 form exists only there: the caller wipes the result with
// clear() once it has been sent.
func SetUserPasswordCommand(user string, secret []byte, crypted bool) ([]byte, error) {
	if err := CheckUser(user); err != nil {
		return nil, err
	}
	if len(secret) == 0 {
		return nil, errors.New("qga: empty password")
	}
	name, err := json.Marshal(user)
	if err != nil {
		return nil, fmt.Errorf("qga: encode user name: %w", err)
	}
	const (
		head = `{"execute":"guest-set-user-password","arguments":{"username":`
		mid  = `,"password":"`
	)
	tail := `","crypted":false}}` + "\n"
	if crypted {
		tail = `","crypted":true}}` + "\n"
	}
	n := base64.StdEncoding.EncodedLen(len(secret))
	line := make([]byte, 0, len(head)+len(name)+len(mid)+n+len(tail))
	line = append(line, head...)
	line = append(line, name...)
	line = append(line, mid...)
	start := len(line)
	line = line[:start+n]
	base64.StdEncoding.Encode(line[start:], secret)
	line = append(line, tail...)
	return line, nil
}

// CheckUser refuses names the agent would feed wrongly to chpasswd
// ("user:password" lines) or that could not be a user name anywhere.
func CheckUser(user string) error {
	if user == "" {
		return errors.New("qga: empty user name")
	}
	if len(user) > 256 {
		return errors.New("qga: user name too long")
	}
	for _, r := range user {
		if r == ':' || r < 0x20 || r == 0x7f {
			return fmt.Errorf("qga: user name %q has a forbidden character", user)
		}
	}
	return nil
}

// DecodeAnswer parses one answer line (see ParseAnswer) and decodes a
// success's value into result, which may be nil.
func DecodeAnswer(line []byte, result any) error {
	ret, err := ParseAnswer(line)
	if err != nil {
		return err
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(ret, result); err != nil {
		return fmt.Errorf("qga: decode answer: %w", err)
	}
	return nil
}

// ParseAnswer decodes one answer line. It returns the raw "return" value of
// a success, an *Error for an error answer, and another error for anything
// that is not an answer. A leading sentinel byte (0xFF) and surrounding
// white space are ignored.
func ParseAnswer(line []byte) (json.RawMessage, error) {
	line = bytes.TrimSpace(bytes.TrimLeft(line, "\xff"))
	var a struct {
		Return json.RawMessage `json:"return"`
		Error  *Error          `json:"error"`
	}
	if len(line) == 0 || line[0] != '{' {
		return nil, errors.New("qga: answer is not a JSON object")
	}
	if err := json.Unmarshal(line, &a); err != nil {
		return nil, fmt.Errorf("qga: malformed answer: %w", err)
	}
	switch {
	case a.Return != nil && a.Error != nil:
		return nil, errors.New("qga: answer has both return and error")
	case a.Error != nil:
		return nil, a.Error
	case a.Return != nil:
		return a.Return, nil
	default:
		return nil, errors.New("qga: answer has neither return nor error")
	}
}

// Doer sends one encoded command and decodes its answer's return value into
// result (which may be nil). An error answer comes back as an *Error. Conn
// is a Doer; the libvirt driver provides another over libvirt's agent
// passthrough.
type Doer interface {
	Do(ctx context.Context, command []byte, result any) error
}

// Conn speaks the protocol over one transport: a unix socket, a virtio-serial
// port, a net.Pipe in tests. Call Sync once before the first command. A Conn
// is not safe for concurrent use, and after any error other than an *Error
// the stream may be out of step: Sync again or drop the transport.
//
// Waits are bounded by the context only when the transport has a
// SetDeadline method (net.Conn has); otherwise cancelling the context does
// not interrupt a blocked read, and the caller must close the transport.
type Conn struct {
	rw io.ReadWriter
	br *bufio.Reader
}

// NewConn returns a Conn over rw. The Conn does not close rw.
func NewConn(rw io.ReadWriter) *Conn {
	return &Conn{rw: rw, br: bufio.NewReader(rw)}
}

type deadliner interface {
	SetDeadline(t time.Time) error
}

// bind makes blocked reads and writes on the transport return when ctx is
// done. The returned func undoes it.
func (c *Conn) bind(ctx context.Context) (release func()) {
	d, ok := c.rw.(deadliner)
	if !ok {
		return func() {}
	}
	// Only once ctx is done, so that ctx.Err() is set by the time a read
	// fails: ioError relies on it.
	var mu sync.Mutex
	released := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		// A late call must not break the next use of the transport.
		if !released {
			_ = d.SetDeadline(time.Unix(1, 0))
		}
	})
	return func() {
		stop()
		mu.Lock()
		released = true
		mu.Unlock()
		_ = d.SetDeadline(time.Time{})
	}
}

// transportError marks a failure to send or receive, as opposed to an
// answer that says no: after it, nobody knows whether the agent ran the
// command.
type transportError struct{ err error }

func (e *transportError) Error() string { return e.err.Error() }
func (e *transportError) Unwrap() error { return e.err }

// ioError prefers the context's reason over the transport's: a deadline
// we set on the transport surfaces as os.ErrDeadlineExceeded, but callers
// should see context.DeadlineExceeded or context.Canceled.
func ioError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		err = ctx.Err()
	}
	return &transportError{fmt.Errorf("qga: %s: %w", op, err)}
}

// Sync resynchronises the stream with guest-sync-delimited: it flushes the
// agent's parser with a 0xFF byte, sends a random id, and discards whatever
// arrives (stale answers meant for an earlier, interrupted client, the
// agent's complaint about the 0xFF byte, garbage) until the answer carrying
// that id.
func (c *Conn) Sync(ctx context.Context) error {
	return c.syncID(ctx, rand.Int64N(1<<52)+1)
}

func (c *Conn) syncID(ctx context.Context, id int64) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qga: sync: %w", err)
	}
	release := c.bind(ctx)
	defer release()
	cmd, err := Command("guest-sync-delimited", map[string]int64{"id": id})
	if err != nil {
		return err
	}
	if _, err := c.rw.Write(append([]byte{delimiter}, cmd...)); err != nil {
		return ioError(ctx, "sync: send", err)
	}
	want := strconv.FormatInt(id, 10)
	for {
		line, err := c.readLine()
		if errors.Is(err, errLineTooLong) {
			continue // stale garbage; ours is short
		}
		if err != nil {
			return ioError(ctx, "sync: read", err)
		}
		// The answer follows the last sentinel; anything before it on the
		// same line is the tail of a stale, partly sent answer.
		if i := bytes.LastIndexByte(line, delimiter); i >= 0 {
			line = line[i+1:]
		}
		ret, err := ParseAnswer(line)
		if err == nil && string(bytes.TrimSpace(ret)) == want {
			return nil
		}
	}
}

var errLineTooLong = errors.New("answer line too long")

// readLine returns the next line without its newline. A line longer than
// maxAnswer is consumed and reported as errLineTooLong.
func (c *Conn) readLine() ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := c.br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > maxAnswer {
				tooLong = true
				line = nil
			} else {
				line = append(line, chunk...)
			}
		}
		switch {
		case err == nil:
			if tooLong {
				return nil, errLineTooLong
			}
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && (len(line) > 0 || tooLong):
			return nil, io.ErrUnexpectedEOF
		default:
			return nil, err
		}
	}
}

// Do sends command (one encoded line, as Command returns) and reads its
// answer. Do does not keep command; the caller may wipe it afterwards.
func (c *Conn) Do(ctx context.Context, command []byte, result any) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("qga: %w", err)
	}
	release := c.bind(ctx)
	defer release()
	if _, err := c.rw.Write(command); err != nil {
		return ioError(ctx, "send command", err)
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return ioError(ctx, "read answer", err)
		}
		if len(bytes.TrimSpace(bytes.TrimLeft(line, "\xff"))) == 0 {
			continue
		}
		return DecodeAnswer(line, result)
	}
}
