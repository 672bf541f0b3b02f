// Package core is fleetpass's one service: every rule about tenants, keys,
// instances and operations lives here. The native API, the documented API
// dialects, the console and the CLI are thin adapters that translate their
// wire formats to calls of Service and its errors back.
package core

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/fleetpass/fleetpass/internal/apiv1"
	"github.com/fleetpass/fleetpass/internal/ctlchar"
	"github.com/fleetpass/fleetpass/internal/engine"
	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/ratelimit"
	"github.com/fleetpass/fleetpass/internal/sealer"
	"github.com/fleetpass/fleetpass/internal/store"
)

// MaxBatch is the most instances one request may name (docs/design.md#what-it-is).
const MaxBatch = 100

// AdminTenant is the tenant of the bootstrap admin key.
const AdminTenant = "admin"

// Principal is who makes a request: an API key or a console user, with the
// tenant it acts in and the address it came from.
type Principal struct {
	Kind      string // "key" or "user"
	ID        string
	Tenant    string
	Admin     bool
	Address   string
	RequestID string
	// session is the hex SHA-256 of a console user's session token, so
	// open streams can tell when that session ends.
	session string
}

func (p Principal) requester() apiv1.Requester {
	return apiv1.Requester{Kind: p.Kind, ID: p.ID, Address: p.Address}
}

// Sees reports whether p may see what belongs to tenant: an admin sees
// every tenant, anyone else only their own. Whatever p may not see is
// answered exactly like what does not exist.
func (p Principal) Sees(tenant string) bool { return p.Admin || tenant == p.Tenant }

// TenantFor resolves the tenant a request names: empty means p's own; any
// other is p's to name only if p sees it, else it is not found.
func (p Principal) TenantFor(requested string) (string, error) {
	if requested == "" {
		return p.Tenant, nil
	}
	if !p.Sees(requested) {
		return "", errorf(CodeTenantNotFound, "tenant %q not found", requested)
	}
	return requested, nil
}

// scope is the tenant filter for p: empty (all) for admins.
func (p Principal) scope() string {
	if p.Admin {
		return ""
	}
	return p.Tenant
}

// Service is the core service.
type Service struct {
	store   *store.Store
	engine  *engine.Engine
	sealer  *sealer.Sealer
	bus     *events.Bus
	log     *slog.Logger
	drivers engine.Drivers
	hosts   HostConnector
	bmcs    BMCChecker
	limiter ratelimit.Limiter
	// replicas is the cluster membership (/v1/replicas).
	replicas Replicas

	// maxPerTenant is the per-tenant instance quota.
	maxPerTenant int
	// hashSem bounds console password verifications at once.
	hashSem chan struct{}

	touchMu sync.Mutex
	touched map[string]time.Time
}

// New makes the service.
func New(s *store.Store, e *engine.Engine, seal *sealer.Sealer, bus *events.Bus, d engine.Drivers, log *slog.Logger) *Service {
	return &Service{store: s, engine: e, sealer: seal, bus: bus, drivers: d, log: log, touched: make(map[string]time.Time),
		hashSem: make(chan struct{}, min(MaxConcurrentHashes, runtime.GOMAXPROCS(0)))}
}

// Bus is the event bus (for /v1/events).
func (s *Service) Bus() *events.Bus { return s.bus }

// EventPosition is where a reader of the event log starting now begins
// (events.Bus.Last).
func (s *Service) EventPosition(ctx context.Context) (int64, error) {
	pos, err := s.bus.Last(ctx)
	if err != nil {
		return 0, storeFailed(err)
	}
	return pos, nil
}

// StreamStart is where p's event stream begins: after *resume when the
// client names a position (Last-Event-ID); else, when it follows operation
// opID, just before that operation's first event, so that a client
// connecting after it accepted the operation, or after its end, still gets
// its whole story; else at the log's end. An operation p may not see, or
// one whose events were pruned, starts at the end too: the stream then
// shows nothing of it, as it would of any other tenant's.
func (s *Service) StreamStart(ctx context.Context, p Principal, resume *int64, opID string) (int64, error) {
	// Taken whatever the answer: it brings an idle bus to the log's end, so
	// that it need not read its way there.
	end, err := s.EventPosition(ctx)
	switch {
	case err != nil:
		return 0, err
	case resume != nil:
		return *resume, nil
	case opID == "":
		return end, nil
	}
	first, tenant, ok, err := s.store.FirstOperationEvent(ctx, opID)
	if err != nil {
		return 0, storeFailed(err)
	}
	if !ok || !EventVisible(p, tenant) {
		return end, nil
	}
	return first - 1, nil
}

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewID makes a random id: prefix, a dash, n lowercase base32 characters.
func NewID(prefix string, n int) string {
	b := make([]byte, (n*5+7)/8)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return prefix + "-" + strings.ToLower(b32.EncodeToString(b))[:n]
}

// InstanceIDPattern is what an instance id looks like: "ins-" and 8 to 12
// lowercase letters and digits.
const InstanceIDPattern = `^ins-[a-z0-9]{8,12}$`

var (
	instanceIDRe = regexp.MustCompile(InstanceIDPattern)
	tenantIDRe   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,39}$`)
	userNameRe   = regexp.MustCompile(`^[A-Za-z0-9_.][A-Za-z0-9_.@$ -]{0,63}$`)
)

// ValidInstanceID reports whether id has the form of an instance id.
func ValidInstanceID(id string) bool { return instanceIDRe.MatchString(id) }

// ---- authentication and keys

func hashSecret(secret []byte) []byte {
	h := sha256.Sum256(secret)
	return h[:]
}

// Authenticate checks an API key. Unknown, revoked and wrong keys all give
// the same answer, compared in constant time.
func (s *Service) Authenticate(ctx context.Context, keyID string, secret []byte, addr, requestID string) (Principal, error) {
	unauth := errorf(CodeUnauthenticated, "the API key is missing, unknown, revoked or wrong")
	k, err := s.store.GetKey(ctx, keyID)
	if errors.Is(err, store.ErrNotFound) {
		// Spend the same work as a real comparison.
		subtle.ConstantTimeCompare(hashSecret(secret), make([]byte, sha256.Size))
		return Principal{}, unauth
	}
	if err != nil {
		return Principal{}, storeFailed(err)
	}
	if subtle.ConstantTimeCompare(hashSecret(secret), k.SecretHash) != 1 || k.RevokedAt != nil {
		return Principal{}, unauth
	}
	s.touchKey(ctx, k.ID)
	return Principal{Kind: "key", ID: k.ID, Tenant: k.Tenant, Admin: k.Admin, Address: addr, RequestID: requestID}, nil
}

// KeySecret returns a key's secret for HMAC-signed dialects, which need it
// to recompute a request's signature.
func (s *Service) KeySecret(ctx context.Context, keyID string) ([]byte, Principal, error) {
	k, err := s.store.GetKey(ctx, keyID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && k.RevokedAt != nil) {
		return nil, Principal{}, errorf(CodeUnauthenticated, "unknown or revoked key")
	}
	if err != nil {
		return nil, Principal{}, storeFailed(err)
	}
	secret, err := s.sealer.Open(k.SecretSealed, []byte("key/"+k.ID))
	if err != nil {
		return nil, Principal{}, internalErr(fmt.Errorf("open the secret of key %s: %w", k.ID, err))
	}
	s.touchKey(ctx, k.ID)
	return secret, Principal{Kind: "key", ID: k.ID, Tenant: k.Tenant, Admin: k.Admin}, nil
}

// touchKey records a key's last use at most once a minute per key.
func (s *Service) touchKey(ctx context.Context, id string) {
	now := time.Now()
	s.touchMu.Lock()
	last, ok := s.touched[id]
	if ok && now.Sub(last) < time.Minute {
		s.touchMu.Unlock()
		return
	}
	s.touched[id] = now
	s.touchMu.Unlock()
	if err := s.store.TouchKey(ctx, id, now); err != nil {
		s.log.Warn("record key use", "key_id", id, "err", err)
	}
}

// NewKeyMaterial makes a key id and secret.
func NewKeyMaterial() (id string, secret string) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return NewID("fpk", 16), base64.RawURLEncoding.EncodeToString(b)
}

// CreateKey makes an API key in tenant (the caller's own unless admin). The
// secret is returned once; the store keeps its hash and a sealed copy.
func (s *Service) CreateKey(ctx context.Context, p Principal, req apiv1.KeyCreate) (apiv1.KeyCreated, error) {
	tenant, err := p.TenantFor(req.Tenant)
	if err != nil {
		return apiv1.KeyCreated{}, err
	}
	if len(req.Name) > 100 || ctlchar.Contains(req.Name) {
		return apiv1.KeyCreated{}, fieldErrorf(CodeInvalidArgument, "name", "at most 100 printable characters (no control characters)")
	}
	id, secret := NewKeyMaterial()
	var out apiv1.KeyCreated
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.store.GetTenant(ctx, tx, tenant); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return errorf(CodeTenantNotFound, "tenant %q not found", tenant)
			}
			return err
		}
		k, err := s.insertKey(ctx, tx, id, secret, tenant, req.Name, false)
		if err != nil {
			return err
		}
		out = apiv1.KeyCreated{Key: k, Secret: secret}
		return s.audit(ctx, tx, p, tenant, "key.create", id, "")
	})
	return out, wrapStore(err)
}

// InsertKey stores a key with a given id and secret (bootstrap).
func (s *Service) InsertKey(ctx context.Context, id, secret, tenant, name string, admin bool) error {
	return s.store.InTx(ctx, func(tx *sql.Tx) error {
		if _, err := s.store.CreateTenant(ctx, tx, tenant, tenant); err != nil && !errors.Is(err, store.ErrConflict) {
			return err
		}
		_, err := s.insertKey(ctx, tx, id, secret, tenant, name, admin)
		return err
	})
}

func (s *Service) insertKey(ctx context.Context, tx *sql.Tx, id, secret, tenant, name string, admin bool) (apiv1.Key, error) {
	sealed, err := s.sealer.Seal([]byte(secret), []byte("key/"+id))
	if err != nil {
		return apiv1.Key{}, internalErr(fmt.Errorf("seal the secret of key %s: %w", id, err))
	}
	k := store.KeyRecord{Key: apiv1.Key{ID: id, Tenant: tenant, Name: name, Admin: admin, CreatedAt: s.store.Now().UTC().Truncate(time.Millisecond)},
		SecretHash: hashSecret([]byte(secret)), SecretSealed: sealed}
	return k.Key, s.store.CreateKey(ctx, tx, k)
}

// CountKeys counts API keys (the bootstrap runs on an empty database).
func (s *Service) CountKeys(ctx context.Context) (int, error) { return s.store.CountKeys(ctx) }

// ListKeys lists the keys p may see.
func (s *Service) ListKeys(ctx context.Context, p Principal) ([]apiv1.Key, error) {
	keys, err := s.store.ListKeys(ctx, p.scope())
	return keys, wrapStore(err)
}

// RevokeKey revokes a key p may see.
func (s *Service) RevokeKey(ctx context.Context, p Principal, id string) error {
	k, err := s.store.GetKey(ctx, id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !p.Sees(k.Tenant)) {
		return errorf(CodeKeyNotFound, "key %q not found or already revoked", id)
	}
	if err != nil {
		return storeFailed(err)
	}
	err = s.store.InTx(ctx, func(tx *sql.Tx) error {
		if err := s.store.RevokeKey(ctx, tx, p.scope(), id); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return errorf(CodeKeyNotFound, "key %q not found or already revoked", id)
			}
			return err
		}
		// The key's tenant sees who revoked its key, the admin included.
		if err := s.audit(ctx, tx, p, k.Tenant, "key.revoke", id, ""); err != nil {
			return err
		}
		return s.emitRevocation(ctx, tx, k.Tenant, "key:"+id)
	})
	if err == nil {
		s.bus.Poke()
	}
	return wrapStore(err)
}

// ---- tenants

// CreateTenant makes a tenant (admin only).
func (s *Service) CreateTenant(ctx context.Context, p Principal, req apiv1.TenantCreate) (apiv1.Tenant, error) {
	if !p.Admin {
		return apiv1.Tenant{}, errorf(CodeForbidden, "only an admin key may create tenants")
	}
	if !tenantIDRe.MatchString(req.Name) {
		return apiv1.Tenant{}, fieldErrorf(CodeInvalidArgument, "name", "1-40 characters of a-z, 0-9 and '-', starting with a letter or digit")
	}
	var t apiv1.Tenant
	err := s.store.InTx(ctx, func(tx *sql.Tx) error {
		var err error
		t, err = s.store.CreateTenant(ctx, tx, req.Name, req.Name)
		if errors.Is(err, store.ErrConflict) {
			return errorf(CodeTenantExists, "tenant %q already exists", req.Name)
		}
		if err != nil {
			return err
		}
		return s.audit(ctx, tx, p, t.ID, "tenant.create", t.ID, "")
	})
	return t, wrapStore(err)
}

// EnsureTenant creates a tenant if it does not exist (bootstrap, demo).
func (s *Service) EnsureTenant(ctx context.Context, id string) error {
	_, err := s.store.CreateTenant(ctx, s.store.DB, id, id)
	if errors.Is(err, store.ErrConflict) {
		return nil
	}
	return err
}

// ListTenants lists the tenants p may see.
func (s *Service) ListTenants(ctx context.Context, p Principal) ([]apiv1.Tenant, error) {
	all, err := s.store.ListTenants(ctx)
	if err != nil {
		return nil, storeFailed(err)
	}
	if p.Admin {
		return all, nil
	}
	for _, t := range all {
		if t.ID == p.Tenant {
			return []apiv1.Tenant{t}, nil
		}
	}
	return []apiv1.Tenant{}, nil
}

// ---- audit

func (s *Service) audit(ctx context.Context, q store.Querier, p Principal, tenant, action, target, opID string) error {
	return s.store.InsertAudit(ctx, q, s.auditEntry(p, tenant, action, target, opID))
}

// auditEntry is the audit line of p's action.
func (s *Service) auditEntry(p Principal, tenant, action, target, opID string) apiv1.AuditEntry {
	return apiv1.AuditEntry{Tenant: tenant, Actor: p.requester(), Action: action, Target: target, OperationID: opID,
		RequestID: p.RequestID}
}

// ListAudit lists the audit trail p may see, newest first.
func (s *Service) ListAudit(ctx context.Context, p Principal, cursor string, limit int) (apiv1.AuditList, error) {
	var before int64
	if cursor != "" {
		if _, err := fmt.Sscanf(cursor, "a%d", &before); err != nil {
			return apiv1.AuditList{}, fieldErrorf(CodeInvalidArgument, "cursor", "not one this server gave")
		}
	}
	limit = clampLimit(limit)
	entries, err := s.store.ListAudit(ctx, p.scope(), before, limit+1)
	if err != nil {
		return apiv1.AuditList{}, storeFailed(err)
	}
	out := apiv1.AuditList{Entries: entries}
	if len(entries) > limit {
		out.Entries = entries[:limit]
		out.NextCursor = fmt.Sprintf("a%d", entries[limit-1].ID)
	}
	return out, nil
}

func clampLimit(n int) int {
	switch {
	case n <= 0:
		return 50
	case n > 1000:
		return 1000
	}
	return n
}

// wrapStore turns non-core errors into a store failure.
func wrapStore(err error) error {
	if err == nil {
		return nil
	}
	var ce *Error
	if errors.As(err, &ce) {
		return ce
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return storeFailed(err)
}
