package ipmitest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ProcessChassis is a stand-in server that is a process in its own PID
// namespace: on starts it, off kills the namespace. A graceful shutdown
// takes ShutdownDelay, or never ends when HangShutdown is set (an OS that
// ignores the power button). Cheap enough for a BMC per sub-test.
type ProcessChassis struct {
	// ShutdownDelay is how long a soft off takes. Default 200ms.
	ShutdownDelay time.Duration

	mu     sync.Mutex
	hang   bool
	cmd    *exec.Cmd
	done   chan struct{}
	boot   int
	groups []int // process groups of every boot, checked at Close
}

// SetHangShutdown makes the machine ignore soft offs (or heed them again).
func (c *ProcessChassis) SetHangShutdown(hang bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hang = hang
}

// Boots counts the power-ons so far.
func (c *ProcessChassis) Boots() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.boot
}

// Power reports whether the machine's process runs.
func (c *ProcessChassis) Power() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.onLocked()
}

func (c *ProcessChassis) onLocked() bool {
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// SetPower starts the machine, or kills it.
func (c *ProcessChassis) SetPower(on bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if on {
		return c.startLocked()
	}
	c.killLocked()
	return nil
}

func (c *ProcessChassis) startLocked() error {
	if c.onLocked() {
		return nil
	}
	// --kill-child takes the namespace down with unshare; unshare ignores
	// SIGTERM, so off is SIGKILL.
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	c.cmd, c.done = cmd, done
	c.boot++
	c.groups = append(c.groups, cmd.Process.Pid)
	return nil
}

func (c *ProcessChassis) killLocked() {
	if !c.onLocked() {
		return
	}
	// The whole process group: unshare and the namespace's init. Killing
	// unshare alone leaks the init when unshare dies before it has armed
	// --kill-child (a power off right after a power on).
	// A signal to a group reaches every member, and a fork under way
	// when it is sent completes with the signal pending in the child.
	_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
	<-c.done
}

// groupMembers lists the live processes of group pgid (from /proc).
func groupMembers(pgid int) []int {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []int
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...; comm may hold spaces.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		if g, err := strconv.Atoi(f[2]); err == nil && g == pgid {
			pid, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(p, "/proc/"), "/stat"))
			out = append(out, pid)
		}
	}
	return out
}

// SoftOff shuts the machine down after ShutdownDelay, unless it hangs.
func (c *ProcessChassis) SoftOff() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hang || !c.onLocked() {
		return nil
	}
	d := c.ShutdownDelay
	if d <= 0 {
		d = 200 * time.Millisecond
	}
	done := c.done
	time.AfterFunc(d, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.done == done {
			c.killLocked()
		}
	})
	return nil
}

// Reset kills the machine and starts it again.
func (c *ProcessChassis) Reset() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.killLocked()
	return c.startLocked()
}

// Close kills the machine for good (tests register it with t.Cleanup).
func (c *ProcessChassis) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.killLocked()
}

// Leftovers lists the processes of any of the machine's boots that are
// still alive: none, once it is off.
func (c *ProcessChassis) Leftovers() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, g := range c.groups {
		if c.onLocked() && g == c.cmd.Process.Pid {
			continue
		}
		out = append(out, groupMembers(g)...)
	}
	return out
}
