package sim

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/fleetpass/fleetpass/internal/driver"
)

// state is everything the fleet knows about one machine; it is what the file
// stores. power is the phase the machine was last put in (never
// PowerUnknown); settle turns an elapsed transition into the stable state.
type state struct {
	os       OS
	power    driver.PowerState
	since    time.Time
	boot     time.Duration
	shutdown time.Duration
	faults   Faults
	users    map[string]user

	// busyBy and busyUntil mark a mutating driver call in progress (see
	// Options.ActionTime); busyBy is empty when none is. overlaps counts
	// the mutating calls that began while another one's mark was live,
	// applied the password changes that took effect (see Snapshot).
	busyBy    string
	busyUntil time.Time
	overlaps  int
	applied   int
}

// user is one account on a machine. Its verifiers are never changed in place,
// so copies of a state may share them.
type user struct {
	// verifier verifies the current password; nil when none was ever set.
	verifier verifier
	// staged verifies a password to apply at the next boot; nil when none.
	staged verifier
}

func newState(m Machine, now time.Time) (state, error) {
	if m.ID == "" {
		return state{}, errors.New("empty id")
	}
	osType := m.OS
	switch osType {
	case "":
		osType = Linux
	case Linux, Windows:
	default:
		return state{}, fmt.Errorf("unknown OS type %q", m.OS)
	}
	if m.BootTime < 0 || m.ShutdownTime < 0 {
		return state{}, errors.New("negative boot or shutdown time")
	}
	if m.Faults.Transient < 0 {
		return state{}, fmt.Errorf("negative transient count %d", m.Faults.Transient)
	}
	names := m.Users
	if len(names) == 0 {
		names = []string{osType.DefaultUser()}
	}
	users := make(map[string]user, len(names))
	for _, name := range names {
		if name == "" {
			return state{}, errors.New("empty user name")
		}
		users[name] = user{}
	}
	power := driver.PowerStopped
	if m.Running {
		power = driver.PowerRunning
	}
	return state{
		os:       osType,
		power:    power,
		since:    now,
		boot:     m.BootTime,
		shutdown: m.ShutdownTime,
		faults:   m.Faults,
		users:    users,
	}, nil
}

func (s state) clone() state {
	s.users = maps.Clone(s.users)
	return s
}

// mark records the start of a mutating call by token that lasts until
// until, counting an overlap when another call's mark is still live.
func (s *state) mark(token string, now, until time.Time) {
	if s.busyBy != "" && now.Before(s.busyUntil) {
		s.overlaps++
	}
	s.busyBy, s.busyUntil = token, until
}

// unmark ends the mark of token's call, unless a later call replaced it,
// and reports whether s changed.
func (s *state) unmark(token string) bool {
	if s.busyBy != token {
		return false
	}
	s.busyBy, s.busyUntil = "", time.Time{}
	return true
}

// settle ends a transition whose time is up and reports whether s changed.
// The transition ends at its exact end time, not at now, so the result does
// not depend on when someone looked.
func (s *state) settle(now time.Time) bool {
	switch s.power {
	case driver.PowerStarting:
		end := s.since.Add(s.boot)
		if now.Before(end) {
			return false
		}
		s.power, s.since = driver.PowerRunning, end
		if !s.faults.AgentDead {
			s.applyStaged()
		}
		return true
	case driver.PowerStopping:
		end := s.since.Add(s.shutdown)
		if s.faults.HangShutdown || now.Before(end) {
			return false
		}
		s.power, s.since = driver.PowerStopped, end
		return true
	}
	return false
}

// applyStaged is the guest agent applying staged passwords at the end of
// boot.
func (s *state) applyStaged() {
	for name, u := range s.users {
		if u.staged != nil {
			s.users[name] = user{verifier: u.staged}
			s.applied++
		}
	}
}

func (s *state) snapshot(id string) Snapshot {
	users := slices.Sorted(maps.Keys(s.users))
	var staged []string
	for _, name := range users {
		if s.users[name].staged != nil {
			staged = append(staged, name)
		}
	}
	return Snapshot{
		Machine: Machine{
			ID:           id,
			OS:           s.os,
			Users:        users,
			Running:      s.power == driver.PowerRunning,
			BootTime:     s.boot,
			ShutdownTime: s.shutdown,
			Faults:       s.faults,
		},
		Power:    s.power,
		Since:    s.since,
		Staged:   staged,
		Applied:  s.applied,
		Overlaps: s.overlaps,
	}
}

// verifier is salt || HMAC-SHA256(salt, password). A fresh random salt per
// verifier means equal passwords do not have equal verifiers. A fast hash is
// enough: these are simulated machines, and the fleet has to sustain
// thousands of password changes per second in load tests.
type verifier []byte

const saltLen = 16

func newVerifier(password []byte) verifier {
	v := make(verifier, saltLen, saltLen+sha256.Size)
	rand.Read(v[:saltLen]) // never fails (crypto/rand doc)
	return v.mac(v[:saltLen], password)
}

func (v verifier) mac(salt, password []byte) verifier {
	h := hmac.New(sha256.New, salt)
	h.Write(password)
	return h.Sum(v)
}

func (v verifier) matches(password []byte) bool {
	if len(v) != saltLen+sha256.Size {
		return false
	}
	want := verifier(nil).mac(v[:saltLen], password)
	return hmac.Equal(v[saltLen:], want)
}
