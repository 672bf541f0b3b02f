package diskreset

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Request asks the helper for one edit. It is sent as one line of JSON,
// followed by exactly PasswordLength bytes of password.
type Request struct {
	// Disks are the machine's disks in the order the machine sees them
	// (inspection needs them all: a root filesystem may span several).
	Disks []Disk `json:"disks"`
	// Root names the root filesystem as the appliance sees it (/dev/sda1,
	// /dev/vg0/root); empty means find it by inspection.
	Root string `json:"root,omitempty"`
	// User is whose password changes.
	User string `json:"user"`
	// Instance is fleetpass's id of the instance, for the helper's logs.
	Instance string `json:"instance,omitempty"`
	// PasswordLength is the number of password bytes after the line.
	PasswordLength int `json:"passwordLength"`
}

// Disk is one disk image of the machine.
type Disk struct {
	Path string `json:"path"`
	// Format is the image format (raw, qcow2): always given, never probed.
	Format   string `json:"format"`
	ReadOnly bool   `json:"readOnly,omitempty"`
}

// Result codes. An empty code is success.
const (
	CodeUserNotFound    = "user_not_found"
	CodeDiskInUse       = "disk_in_use"
	CodeDiskUnsupported = "disk_unsupported"
	CodeBadRequest      = "bad_request"
	CodeFailed          = "failed"
)

// Result is the helper's answer: one line of JSON on its stdout.
type Result struct {
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	// Root is the root filesystem that was edited.
	Root string `json:"root,omitempty"`
	// Method is the hash method used (yescrypt, sha512, ...) and
	// MethodSource where the guest said so.
	Method       string `json:"method,omitempty"`
	MethodSource string `json:"methodSource,omitempty"`
	// Timings are the edit's steps in order, for logs and benchmarks.
	Timings []Timing `json:"timings,omitempty"`
}

// Timing is how long one step of the edit took.
type Timing struct {
	Step    string  `json:"step"`
	Seconds float64 `json:"seconds"`
}

// Probe is the helper's answer to --probe: whether it can edit disks on
// this machine, without opening any.
type Probe struct {
	OK bool `json:"ok"`
	// Problem says why not, when OK is false.
	Problem   string `json:"problem,omitempty"`
	Version   string `json:"version,omitempty"` // libguestfs's
	Backend   string `json:"backend,omitempty"`
	Kernel    string `json:"kernel,omitempty"` // the appliance's kernel
	ForcedTCG bool   `json:"forcedTCG,omitempty"`
}

// Limits of the wire format: a request line is small, and a password is
// bounded far above any policy's maximum.
const (
	maxRequestLine = 64 << 10
	maxPassword    = 1024
)

// WriteRequest writes req and the password to w.
func WriteRequest(w io.Writer, req Request, password []byte) error {
	req.PasswordLength = len(password)
	line, err := json.Marshal(req)
	if err != nil {
		return err
	}
	if _, err := w.Write(append(line, '\n')); err != nil {
		return err
	}
	_, err = w.Write(password)
	return err
}

// ReadRequest reads a request and its password from r. The caller wipes
// the password.
func ReadRequest(r io.Reader) (Request, []byte, error) {
	var req Request
	br := bufio.NewReaderSize(r, 4096)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxRequestLine {
			return req, nil, errors.New("request line too long")
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			return req, nil, fmt.Errorf("read request: %w", err)
		}
	}
	if err := json.Unmarshal(line, &req); err != nil {
		return req, nil, fmt.Errorf("parse request: %w", err)
	}
	if req.PasswordLength <= 0 || req.PasswordLength > maxPassword {
		return req, nil, fmt.Errorf("password length %d out of range", req.PasswordLength)
	}
	pw := make([]byte, req.PasswordLength)
	if _, err := io.ReadFull(br, pw); err != nil {
		clear(pw)
		return req, nil, fmt.Errorf("read password: %w", err)
	}
	return req, pw, nil
}
