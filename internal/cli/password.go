package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"golang.org/x/term"
)

// maxPasswordBytes bounds a password read from stdin; real ones are short,
// and the buffer is allocated once at this size so that appending never
// leaves an unwiped copy behind in a discarded array.
const maxPasswordBytes = 1024

// readPasswordLine reads one line from r, a byte at a time so that nothing
// past the line is consumed and no buffered copy is left anywhere. The
// caller must clear the result.
func readPasswordLine(r io.Reader) ([]byte, error) {
	buf := make([]byte, 0, maxPasswordBytes)
	var one [1]byte
	defer clear(one[:])
	for {
		n, err := r.Read(one[:])
		if n == 1 {
			if one[0] == '\n' {
				break
			}
			if len(buf) == maxPasswordBytes {
				clear(buf)
				return nil, fmt.Errorf("the password on standard input is longer than %d bytes", maxPasswordBytes)
			}
			buf = append(buf, one[0])
			continue
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			clear(buf)
			return nil, fmt.Errorf("reading the password from standard input: %w", err)
		}
	}
	buf = bytes.TrimSuffix(buf, []byte("\r"))
	if len(buf) == 0 {
		return nil, errors.New("no password on standard input")
	}
	return buf, nil
}

// promptPassword asks twice for a password on the terminal fd, without
// echo. The caller must clear the result.
func promptPassword(ctx context.Context, fd int, prompt io.Writer) ([]byte, error) {
	first, err := readHidden(ctx, fd, prompt, "New password: ")
	if err != nil {
		return nil, err
	}
	second, err := readHidden(ctx, fd, prompt, "Retype new password: ")
	if err != nil {
		clear(first)
		return nil, err
	}
	defer clear(second)
	if !bytes.Equal(first, second) {
		clear(first)
		return nil, errors.New("the passwords do not match")
	}
	if len(first) == 0 {
		return nil, errors.New("empty password")
	}
	return first, nil
}

func readHidden(ctx context.Context, fd int, prompt io.Writer, label string) ([]byte, error) {
	// ReadPassword restores the terminal only when it returns; on an
	// interrupt it would not, so keep the state to restore it ourselves.
	state, err := term.GetState(fd)
	if err != nil {
		return nil, fmt.Errorf("reading the terminal state: %w", err)
	}
	fmt.Fprint(prompt, label)
	type result struct {
		pw  []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		pw, err := term.ReadPassword(fd)
		done <- result{pw, err}
	}()
	select {
	case res := <-done:
		fmt.Fprintln(prompt)
		if res.err != nil {
			return nil, fmt.Errorf("reading the password: %w", res.err)
		}
		return res.pw, nil
	case <-ctx.Done():
		_ = term.Restore(fd, state)
		fmt.Fprintln(prompt)
		return nil, ctx.Err()
	}
}
