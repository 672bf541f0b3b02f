package core

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"

	"github.com/fleetpass/fleetpass/internal/password"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Error codes of console users and sessions.
const (
	CodeSignInFailed           = "SIGN_IN_FAILED"
	CodeSignInLocked           = "SIGN_IN_LOCKED"
	CodeSignInThrottled        = "SIGN_IN_THROTTLED"
	CodeSignInBusy             = "SIGN_IN_BUSY"
	CodeSessionExpired         = "SESSION_EXPIRED"
	CodePasswordChangeRequired = "PASSWORD_CHANGE_REQUIRED"
	CodeUserExists             = "USER_EXISTS"
)

// ConsoleAdmin is the name of the console user made at first start.
const ConsoleAdmin = "admin"

// Session lifetimes: a session ends after SessionIdle without use, and
// SessionMax after sign-in whatever its use.
const (
	SessionIdle = time.Hour
	SessionMax  = 12 * time.Hour
)

// Limits on failed sign-ins, counted in the database so every replica
// shares them, and counted before the password is checked, so parallel
// guesses cannot all pass an old count. A user name and client address
// pair is locked after PairFailureLimit failures in FailureWindow; an
// address after AddrFailureLimit whatever the names (it may front several
// people, so it gets more room). A user name is never locked out from
// everywhere, which would let anyone lock its owner out: past
// UserSlowAfter failures each attempt at it waits a delay that doubles up
// to MaxUserDelay.
const (
	PairFailureLimit = 5
	AddrFailureLimit = 20
	FailureWindow    = 15 * time.Minute
	LockDuration     = 15 * time.Minute
	UserSlowAfter    = 5
	MaxUserDelay     = 60 * time.Second
)

// Bounds on the password hashing of sign-ins: argon2id needs 19 MiB a
// verification, so at most MaxConcurrentHashes run at once per process (no
// more than its CPUs: more would only queue inside the scheduler);
// a sign-in waits HashQueueWait for a turn, then is answered 429.
const (
	MaxConcurrentHashes = 4
	HashQueueWait       = 3 * time.Second
)

// argon2id parameters: OWASP's minimum for argon2id (19 MiB, 2 passes, one
// lane), which keeps a sign-in around 50 ms on a small server.
const (
	argonTime    = 2
	argonMemory  = 19 * 1024
	argonThreads = 1
	argonKeyLen  = 32
)

var consoleUserRe = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// ConsolePasswordPolicy is the rule for console users' own passwords.
func ConsolePasswordPolicy() password.Policy {
	var allowed strings.Builder
	for c := byte(' '); c <= '~'; c++ {
		allowed.WriteByte(c)
	}
	return password.Policy{Name: "console", MinLength: 12, MaxLength: 128, Allowed: allowed.String(), ForbidUser: true}
}

// ConsoleUser is a console user as shown to admins.
type ConsoleUser struct {
	Name       string    `json:"name"`
	Tenant     string    `json:"tenant"`
	Admin      bool      `json:"admin"`
	MustChange bool      `json:"mustChangePassword"`
	CreatedAt  time.Time `json:"createdAt"`
}

// Session is a signed-in console session. Token is the cookie's value; it
// is stored only hashed.
type Session struct {
	Token      string
	User       string
	Tenant     string
	Admin      bool
	MustChange bool
	ExpiresAt  time.Time
}

// Usable refuses the session of a user who must still change the initial
// password: until then, changing it is all the console lets them do.
func (s Session) Usable() error {
	if s.MustChange {
		return errorf(CodeForbidden, "change your initial password first")
	}
	return nil
}

// PasswordPolicyFor is the rule a new password for instances of these OS
// types must meet through the native API and the console: the strictest
// that fits them all (the dialects apply their documents' own rules).
func PasswordPolicyFor(osTypes ...string) password.Policy { return password.Strictest(osTypes...) }

func hashConsolePassword(pw []byte) (string, error) {
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("salt: %w", err)
	}
	key := argon2.IDKey(pw, salt, argonTime, argonMemory, argonThreads, argonKeyLen)
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, argonMemory, argonTime, argonThreads,
		enc.EncodeToString(salt), enc.EncodeToString(key)), nil
}

// verifyConsolePassword checks pw against an encoded hash, using the
// parameters the hash was made with (so they can be raised later).
func verifyConsolePassword(encoded string, pw []byte) bool {
	parts := strings.Split(encoded, "$")
	if len(parts) != 6 || parts[1] != "argon2id" {
		return false
	}
	var m, t uint32
	var p uint8
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &m, &t, &p); err != nil {
		return false
	}
	enc := base64.RawStdEncoding
	salt, err1 := enc.DecodeString(parts[4])
	want, err2 := enc.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey(pw, salt, t, m, p, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// dummyHash is verified against when the user does not exist, so an
// unknown name costs the same time as a wrong password.
var dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$" +
	"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

func checkConsolePassword(pw []byte, user string) error {
	pol := ConsolePasswordPolicy()
	if err := password.Check(pol, pw, user); err != nil {
		var pe *password.Error
		if errors.As(err, &pe) {
			return &Error{Code: CodePasswordPolicy, Message: pe.Error(),
				Details: map[string]any{"policy": pol.Name, "violations": pe.Violations, "rules": pol.Describe()}}
		}
		return &Error{Code: CodePasswordPolicy, Message: "the password breaks the rule"}
	}
	return nil
}

// CreateConsoleUser makes a console user in tenant (admins only). The user
// must change the password at first sign-in.
func (s *Service) CreateConsoleUser(ctx context.Context, p Principal, name, tenant string, admin bool, pw []byte) (ConsoleUser, error) {
	defer sealer.Wipe(pw)
	if !p.Admin {
		return ConsoleUser{}, errorf(CodeForbidden, "only an admin may create console users")
	}
	tenant, err := p.TenantFor(tenant)
	if err != nil {
		return ConsoleUser{}, err
	}
	if !consoleUserRe.MatchString(name) {
		return ConsoleUser{}, fieldErrorf(CodeInvalidArgument, "name", "1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
	}
	if err := checkConsolePassword(pw, name); err != nil {
		return ConsoleUser{}, err
	}
	hash, err := hashConsolePassword(pw)
	if err != nil {
		return ConsoleUser{}, &Error{Code: CodeInternal, Message: "could not hash the password", Err: err}
	}
	now := s.store.Now().UTC().Truncate(time.Millisecond)
	u := store.ConsoleUser{Name: name, Tenant: tenant, Admin: admin, PasswordHash: hash, MustChange: true,
		CreatedAt: now, PasswordChangedAt: now}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.store.GetTenant(ctx, tx, tenant); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return errorf(CodeTenantNotFound, "tenant %q not found", tenant)
			}
			return err
		}
		if err := s.store.CreateConsoleUser(ctx, tx, u); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return errorf(CodeUserExists, "console user %q already exists", name)
			}
			return err
		}
		return s.audit(ctx, tx, p, tenant, "console_user.create", name, "")
	})
	if err != nil {
		return ConsoleUser{}, wrapStore(err)
	}
	return ConsoleUser{Name: name, Tenant: tenant, Admin: admin, MustChange: true, CreatedAt: now}, nil
}

// ListConsoleUsers lists the console users p may see.
func (s *Service) ListConsoleUsers(ctx context.Context, p Principal) ([]ConsoleUser, error) {
	us, err := s.store.ListConsoleUsers(ctx, p.scope())
	if err != nil {
		return nil, storeFailed(err)
	}
	out := make([]ConsoleUser, len(us))
	for i, u := range us {
		out[i] = ConsoleUser{Name: u.Name, Tenant: u.Tenant, Admin: u.Admin, MustChange: u.MustChange, CreatedAt: u.CreatedAt}
	}
	return out, nil
}

// EnsureConsoleAdmin makes the console's admin user when there is no
// console user at all, with a random password it returns once (the server
// writes it to a private file). created is false if users existed.
func (s *Service) EnsureConsoleAdmin(ctx context.Context) (name, pw string, created bool, err error) {
	n, err := s.store.CountConsoleUsers(ctx)
	if err != nil || n > 0 {
		return "", "", false, wrapStore(err)
	}
	if err := s.EnsureTenant(ctx, AdminTenant); err != nil {
		return "", "", false, wrapStore(err)
	}
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", "", false, fmt.Errorf("console admin password: %w", err)
	}
	pw = base64.RawURLEncoding.EncodeToString(b)
	system := Principal{Kind: "system", ID: "bootstrap", Tenant: AdminTenant, Admin: true, Address: "local"}
	if _, err := s.CreateConsoleUser(ctx, system, ConsoleAdmin, AdminTenant, true, []byte(pw)); err != nil {
		if CodeOf(err) == CodeUserExists {
			// Another replica made it first; its file holds the password.
			return "", "", false, nil
		}
		return "", "", false, err
	}
	return ConsoleAdmin, pw, true, nil
}

func tokenHash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// SignIn checks a console user's password and opens a session. The
// attempt is counted first (per user and address, per address, per user);
// past the limits it is refused without looking at the password. A failure
// logs the user name only if such a user exists: a password typed into the
// name field must not reach the log.
func (s *Service) SignIn(ctx context.Context, name string, pw []byte, addr, requestID string) (Session, error) {
	defer sealer.Wipe(pw)
	now := s.store.Now()
	lname := strings.ToLower(name)
	// An address holds no "/", so the pair's subject reads one way only.
	pair := "pair:" + addr + "/" + lname
	gates := []struct {
		subject string
		lockAt  int
		delay   bool
		code    string
	}{
		{pair, PairFailureLimit, false, CodeSignInLocked},
		{"addr:" + addr, AddrFailureLimit, false, CodeSignInLocked},
		{"user:" + lname, UserSlowAfter, true, CodeSignInThrottled},
	}
	for _, g := range gates {
		var a store.SignInAttempt
		var err error
		if g.delay {
			a, err = s.store.CountSignInDelayed(ctx, s.store.DB, g.subject, now, FailureWindow, g.lockAt, MaxUserDelay)
		} else {
			a, err = s.store.CountSignInAttempt(ctx, s.store.DB, g.subject, now, FailureWindow, g.lockAt, LockDuration)
		}
		if err != nil {
			return Session{}, storeFailed(err)
		}
		if a.Counted {
			continue
		}
		wait := a.LockedUntil.Sub(now)
		secs := int(wait/time.Second) + 1
		msg := fmt.Sprintf("too many failed sign-ins; try again in %d minute(s)", int(wait.Minutes())+1)
		if g.delay {
			msg = fmt.Sprintf("too many failed sign-ins for this user; try again in %d second(s)", secs)
		}
		return Session{}, &Error{Code: g.code, Message: msg, Details: map[string]any{"retryAfterSeconds": secs}}
	}
	u, err := s.store.GetConsoleUser(ctx, s.store.DB, name)
	found := err == nil
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return Session{}, storeFailed(err)
	}
	hash := dummyHash
	if found {
		hash = u.PasswordHash
	}
	ok, err := s.verifyBounded(ctx, hash, pw)
	if err != nil {
		return Session{}, err
	}
	if !ok || !found {
		if found {
			s.log.Info("console sign-in failed", "user", u.Name, "address", addr, "request_id", requestID)
		} else {
			s.log.Info("console sign-in failed: no such user", "address", addr, "request_id", requestID)
		}
		return Session{}, errorf(CodeSignInFailed, "wrong user name or password")
	}
	subjects := []string{pair, "user:" + lname}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return Session{}, fmt.Errorf("session token: %w", err)
	}
	token := base64.RawURLEncoding.EncodeToString(b)
	sess := store.ConsoleSession{TokenHash: tokenHash(token), User: u.Name, CreatedAt: now, LastSeenAt: now,
		ExpiresAt: now.Add(SessionMax)}
	p := Principal{Kind: "user", ID: u.Name, Tenant: u.Tenant, Admin: u.Admin, Address: addr, RequestID: requestID}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		// Only the user's counts are forgiven: a success must not let one
		// address keep guessing at other names.
		for _, sub := range subjects {
			if err := s.store.ClearSignInFailures(ctx, tx, sub); err != nil {
				return err
			}
		}
		if err := s.store.CreateConsoleSession(ctx, tx, sess); err != nil {
			return err
		}
		// Sign-ins are rare enough to carry the clean-up of ended
		// sessions and old failure counts, so no background job is needed.
		if err := s.store.PruneConsoleSessions(ctx, tx, now); err != nil {
			return err
		}
		if err := s.store.PruneSignInFailures(ctx, tx, now.Add(-FailureWindow)); err != nil {
			return err
		}
		return s.audit(ctx, tx, p, u.Tenant, "console.sign_in", u.Name, "")
	})
	if err != nil {
		return Session{}, wrapStore(err)
	}
	return Session{Token: token, User: u.Name, Tenant: u.Tenant, Admin: u.Admin, MustChange: u.MustChange,
		ExpiresAt: sess.ExpiresAt}, nil
}

// SessionPrincipal resolves a session token to the principal it acts as.
// Expired, idle and unknown sessions give the same error.
func (s *Service) SessionPrincipal(ctx context.Context, token, addr, requestID string) (Principal, Session, error) {
	expired := errorf(CodeSessionExpired, "your session has ended; sign in again")
	if token == "" {
		return Principal{}, Session{}, expired
	}
	th := tokenHash(token)
	sess, err := s.store.GetConsoleSession(ctx, th)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, Session{}, expired
	}
	if err != nil {
		return Principal{}, Session{}, storeFailed(err)
	}
	now := s.store.Now()
	if now.After(sess.ExpiresAt) || now.Sub(sess.LastSeenAt) > SessionIdle {
		_ = s.store.DeleteConsoleSession(ctx, s.store.DB, th)
		return Principal{}, Session{}, expired
	}
	u, err := s.store.GetConsoleUser(ctx, s.store.DB, sess.User)
	if errors.Is(err, store.ErrNotFound) {
		return Principal{}, Session{}, expired
	}
	if err != nil {
		return Principal{}, Session{}, storeFailed(err)
	}
	// Writing on every request would serialise reads behind SQLite's
	// single writer; a minute's precision is plenty for an idle timeout.
	if now.Sub(sess.LastSeenAt) > time.Minute {
		if err := s.store.TouchConsoleSession(ctx, th, now); err != nil {
			s.log.Warn("record console session use", "err", err)
		}
	}
	p := Principal{Kind: "user", ID: u.Name, Tenant: u.Tenant, Admin: u.Admin, Address: addr, RequestID: requestID,
		session: hex.EncodeToString(th)}
	return p, Session{Token: token, User: u.Name, Tenant: u.Tenant, Admin: u.Admin, MustChange: u.MustChange,
		ExpiresAt: sess.ExpiresAt}, nil
}

// SignOut ends a session. Ending an unknown session is not an error.
func (s *Service) SignOut(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	th := tokenHash(token)
	sess, err := s.store.GetConsoleSession(ctx, th)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return storeFailed(err)
	}
	tenant := ""
	if u, err := s.store.GetConsoleUser(ctx, s.store.DB, sess.User); err == nil {
		tenant = u.Tenant
	}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.store.DeleteConsoleSession(ctx, tx, th); err != nil {
			return err
		}
		return s.emitRevocation(ctx, tx, tenant, "user:"+sess.User)
	})
	if err == nil {
		s.bus.Poke()
	}
	return wrapStore(err)
}

// ChangeConsolePassword changes the signed-in user's own password after
// checking the current one, and ends the user's other sessions.
func (s *Service) ChangeConsolePassword(ctx context.Context, p Principal, token string, current, next []byte) error {
	defer sealer.Wipe(current)
	defer sealer.Wipe(next)
	if p.Kind != "user" {
		return errorf(CodeForbidden, "only a console user has a console password")
	}
	u, err := s.store.GetConsoleUser(ctx, s.store.DB, p.ID)
	if err != nil {
		return wrapStore(err)
	}
	ok, err := s.verifyBounded(ctx, u.PasswordHash, current)
	if err != nil {
		return err
	}
	if !ok {
		return &Error{Code: CodeSignInFailed, Message: "the current password is wrong",
			Details: map[string]any{"field": "current"}}
	}
	if subtle.ConstantTimeCompare(current, next) == 1 {
		return &Error{Code: CodeInvalidArgument, Message: "the new password must differ from the current one",
			Details: map[string]any{"field": "new"}}
	}
	if err := checkConsolePassword(next, u.Name); err != nil {
		return err
	}
	hash, err := hashConsolePassword(next)
	if err != nil {
		return &Error{Code: CodeInternal, Message: "could not hash the password", Err: err}
	}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.store.SetConsolePassword(ctx, tx, u.Name, hash, false); err != nil {
			return err
		}
		if err := s.store.DeleteConsoleSessionsOf(ctx, tx, u.Name, tokenHash(token)); err != nil {
			return err
		}
		if err := s.emitRevocation(ctx, tx, u.Tenant, "user:"+u.Name); err != nil {
			return err
		}
		return s.audit(ctx, tx, p, u.Tenant, "console_user.password_change", u.Name, "")
	})
	if err == nil {
		s.bus.Poke()
	}
	return wrapStore(err)
}

// CSRFToken is the anti-forgery token of a session: a MAC of its token, so
// it needs no storage and dies with the session.
func (s *Service) CSRFToken(sessionToken string) string {
	return base64.RawURLEncoding.EncodeToString(s.sealer.MAC([]byte("console-csrf\x00"), []byte(sessionToken)))
}

// CheckCSRF reports whether got is the anti-forgery token of the session.
func (s *Service) CheckCSRF(sessionToken, got string) bool {
	want := s.CSRFToken(sessionToken)
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// verifyBounded checks a password against its hash with at most
// MaxConcurrentHashes verifications at once in this process, so
// unauthenticated requests cannot make the server's memory grow: past
// HashQueueWait in the queue, the request is refused with 429.
func (s *Service) verifyBounded(ctx context.Context, hash string, pw []byte) (bool, error) {
	t := time.NewTimer(HashQueueWait)
	defer t.Stop()
	select {
	case s.hashSem <- struct{}{}:
	case <-t.C:
		return false, &Error{Code: CodeSignInBusy, Message: "the server is busy checking other sign-ins; try again in a moment",
			Details: map[string]any{"retryAfterSeconds": 1}}
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-s.hashSem }()
	return verifyConsolePassword(hash, pw), nil
}
