package diskreset

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// HelperName is the helper binary's file name.
const HelperName = "fleetpass-diskreset"

// Find returns the helper's path: beside the running executable (as a
// package installs them), else on PATH.
func Find() (string, error) {
	if exe, err := os.Executable(); err == nil {
		if real, err := filepath.EvalSymlinks(exe); err == nil {
			exe = real
		}
		p := filepath.Join(filepath.Dir(exe), HelperName)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(HelperName)
	if err != nil {
		return "", fmt.Errorf("%w: %s is neither beside this executable nor on PATH", driver.ErrDiskResetUnavailable, HelperName)
	}
	return p, nil
}

// Runner runs the helper. The helper inherits the server's environment, so
// libguestfs's standard variables (LIBGUESTFS_BACKEND,
// LIBGUESTFS_BACKEND_SETTINGS, LIBGUESTFS_CACHEDIR, SUPERMIN_KERNEL and its
// siblings) configure it; the environment holds no secret of fleetpass's.
type Runner struct {
	// Path is the helper binary.
	Path string
	// Log receives one line per edit with its timings. Nil discards.
	Log *slog.Logger
	// Timeout bounds one edit (default 5 minutes: the appliance boots
	// under software emulation in 10-20 s, far slower on a loaded host).
	Timeout time.Duration
}

// maxOutput bounds what is kept of the helper's stdout and stderr.
const maxOutput = 64 << 10

// Probe asks the helper whether it can edit disks on this machine. It opens
// no disk and boots no appliance, so it costs milliseconds.
func (r *Runner) Probe(ctx context.Context) (Probe, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var out, errb limitedBuffer
	cmd := exec.CommandContext(ctx, r.Path, "--probe")
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var p Probe
	if jerr := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &p); jerr != nil {
		if err == nil {
			err = jerr
		}
		return Probe{}, fmt.Errorf("%s --probe: %w: %s", r.Path, err, tail(errb.Bytes()))
	}
	return p, nil
}

// Reset runs one edit. Errors wrap driver.ErrUserNotFound,
// driver.ErrDiskInUse, driver.ErrDiskUnsupported or
// driver.ErrDiskResetUnavailable where they apply; an edit that failed for
// another reason (a crashed appliance, a full disk) gives a plain error.
func (r *Runner) Reset(ctx context.Context, req Request, password []byte) (Result, error) {
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	var out, errb limitedBuffer
	cmd := exec.CommandContext(ctx, r.Path)
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = sysProcAttr()
	// SIGTERM lets the helper stop its appliance and remove its temporary
	// files; SIGKILL follows if it does not end.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return Result{}, err
	}
	if err := cmd.Start(); err != nil {
		return Result{}, fmt.Errorf("%w: start %s: %w", driver.ErrDiskResetUnavailable, r.Path, err)
	}
	werr := WriteRequest(stdin, req, password)
	stdin.Close()
	err = cmd.Wait()
	var res Result
	jerr := json.Unmarshal(bytes.TrimSpace(lastLine(out.Bytes())), &res)
	if ctx.Err() != nil {
		return Result{}, fmt.Errorf("disk edit: %w", ctx.Err())
	}
	if jerr != nil {
		if err == nil {
			err = werr
		}
		if err == nil {
			err = jerr
		}
		return Result{}, fmt.Errorf("disk edit: helper %s: %w: %s", r.Path, err, tail(errb.Bytes()))
	}
	if r.Log != nil {
		attrs := []any{"instance_id", req.Instance, "root", res.Root, "method", res.Method, "method_source", res.MethodSource,
			"code", res.Code, "seconds", time.Since(start).Seconds()}
		for _, t := range res.Timings {
			attrs = append(attrs, "t_"+t.Step, t.Seconds)
		}
		r.Log.Info("disk edit", attrs...)
	}
	switch res.Code {
	case "":
		return res, nil
	case CodeUserNotFound:
		return res, fmt.Errorf("disk edit: %s: %w", res.Message, driver.ErrUserNotFound)
	case CodeDiskInUse:
		return res, fmt.Errorf("disk edit: %s: %w", res.Message, driver.ErrDiskInUse)
	case CodeDiskUnsupported:
		return res, fmt.Errorf("disk edit: %s: %w", res.Message, driver.ErrDiskUnsupported)
	}
	return res, fmt.Errorf("disk edit: %s", res.Message)
}

// limitedBuffer keeps the first maxOutput bytes written to it.
type limitedBuffer struct{ bytes.Buffer }

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := maxOutput - b.Len(); room > 0 {
		b.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

var _ io.Writer = (*limitedBuffer)(nil)

func lastLine(b []byte) []byte {
	b = bytes.TrimRight(b, "\n")
	if i := bytes.LastIndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return b
}

// tail is the end of the helper's stderr, for an error message.
func tail(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 500 {
		b = b[len(b)-500:]
	}
	if len(b) == 0 {
		return "(no output)"
	}
	return string(b)
}
