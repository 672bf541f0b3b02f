package guesttest

import (
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/fleetpass/fleetpass/internal/testutil"
)

// Daemon is a long-running command started in a powered-on guest with
// StartDaemon (the fleetpass agent, say). It ends with the guest's power.
type Daemon struct {
	g    *Guest
	name string
	p    *process
	log  testutil.LogBuffer
}

var daemonName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// daemonScript records the daemon's pid as the guest sees it, so that it
// can be killed from inside the guest (the process the host started is
// nsenter, whose child it is).
const daemonScript = `echo $$ >"/run/$0.pid"; exec "$@"`

// StartDaemon starts a command inside the powered-on guest for the rest of
// this boot, as a service manager would, and returns at once. Its output
// goes to Log. Secrets never go in args.
func (g *Guest) StartDaemon(name string, args ...string) (*Daemon, error) {
	if !daemonName.MatchString(name) {
		return nil, fmt.Errorf("guesttest: daemon name %q: want lowercase letters, digits and dashes", name)
	}
	if len(args) == 0 {
		return nil, errors.New("guesttest: daemon: no command")
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.boot == nil {
		return nil, errors.New("guesttest: daemon: the guest is not powered on")
	}
	d := &Daemon{g: g, name: name}
	p, err := g.startDaemon(name, &d.log, append([]string{"/bin/sh", "-c", daemonScript, name}, args...)...)
	if err != nil {
		return nil, fmt.Errorf("guesttest: daemon %s: %w", name, err)
	}
	d.p = p
	return d, nil
}

// Log is what the daemon wrote so far.
func (d *Daemon) Log() string { return d.log.String() }

// Done is closed once the daemon has exited.
func (d *Daemon) Done() <-chan struct{} { return d.p.done }

// Kill kills the daemon with SIGKILL, as a crash would, and waits until it
// is gone. Killing a daemon that has exited is harmless.
func (d *Daemon) Kill() error {
	if d.p.exited() {
		return nil
	}
	if _, err := d.g.Run("sh", "-c", `kill -KILL "$(cat "/run/$1.pid")"`, "kill", d.name); err != nil && !d.p.exited() {
		return fmt.Errorf("guesttest: kill daemon %s: %w", d.name, err)
	}
	select {
	case <-d.p.done:
		return nil
	case <-time.After(haltTimeout):
		return fmt.Errorf("guesttest: daemon %s did not end in %v", d.name, haltTimeout)
	}
}

// TryPowerOn is PowerOn for callers that are not the test's goroutine (a
// power driver the engine calls): it returns an error instead of failing
// the test.
func (g *Guest) TryPowerOn() error {
	if err := g.powerOn(); err != nil {
		return fmt.Errorf("guesttest: power on: %w", err)
	}
	return nil
}

// TryPowerOff is PowerOff returning an error instead of failing the test.
func (g *Guest) TryPowerOff() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := g.halt(); err != nil {
		return fmt.Errorf("guesttest: power off: %w", err)
	}
	return nil
}
