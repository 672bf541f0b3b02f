package core

import (
	"context"
	"encoding/hex"
	"errors"

	"github.com/fleetpass/fleetpass/internal/events"
	"github.com/fleetpass/fleetpass/internal/store"
)

// Revocation ends what is open: a key revoked, a console session signed
// out, or a console password changed end that principal's /v1/events
// streams and /wait long polls. The change writes a revocation event in its
// own transaction; every replica's readers see it in the event log within a
// poll of the bus, and those of the principal it names check their
// credentials again. The event is a hint, the database is the truth: a
// reader ends only when its key or session is really gone.

// emitRevocation records that the credentials of ref ("key:ID" or
// "user:NAME") changed.
func (s *Service) emitRevocation(ctx context.Context, q store.Querier, tenant, ref string) error {
	return s.store.InsertEvent(ctx, q, tenant, events.TypeRevocation, ref, []byte("{}"))
}

// revocationRef is the ref of p's revocation events.
func (p Principal) revocationRef() string { return p.Kind + ":" + p.ID }

// RevocationConcerns reports whether an event row may end p's
// credentials: readers then ask StillAuthorized.
func RevocationConcerns(p Principal, row store.EventRow) bool {
	return row.Type == events.TypeRevocation && row.Ref == p.revocationRef()
}

// StillAuthorized reports whether p's credentials still hold: its key is
// not revoked, or its console session still exists and has not expired.
func (s *Service) StillAuthorized(ctx context.Context, p Principal) (bool, error) {
	switch p.Kind {
	case "key":
		k, err := s.store.GetKey(ctx, p.ID)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return k.RevokedAt == nil, nil
	case "user":
		th, err := hex.DecodeString(p.session)
		if err != nil || len(th) == 0 {
			return false, nil
		}
		sess, err := s.store.GetConsoleSession(ctx, th)
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		return s.store.Now().Before(sess.ExpiresAt), nil
	}
	return true, nil
}

// revokedError ends a long poll whose principal lost its credentials.
func revokedError() error {
	return &Error{Code: CodeUnauthenticated, Message: "the credentials of this request were revoked or signed out"}
}

// Revoked reports whether an event row ended p's credentials. Readers of
// the bus (/wait, /v1/events) end when it does.
func (s *Service) Revoked(ctx context.Context, p Principal, row store.EventRow) bool {
	if !RevocationConcerns(p, row) {
		return false
	}
	ok, err := s.StillAuthorized(ctx, p)
	return err == nil && !ok
}
