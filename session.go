package iris

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-secrets-iris/irisauth"
)

// This file owns the shared token of token/: one stored session per API
// user, replaced with one grant at a time however many readers wait, written
// back under the lock that config writes take, and refreshed ahead of time
// in the background for the sessions that are read.

const (
	// sessionShapeVersion 2 added TokenURL and RevocationURL.
	sessionShapeVersion = 2

	// minOutageFloor is the least time a token must have left to be served
	// during an outage; below the larger of this and 5% of its lifetime,
	// readers get the error instead.
	minOutageFloor = time.Minute
)

// tokenSession is the one shared token of a credential, served by token/.
type tokenSession struct {
	ShapeVersion int       `json:"shape_version"`
	AccessToken  string    `json:"access_token"`
	TokenType    string    `json:"token_type"`
	Scope        string    `json:"scope"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	ObtainedAt   time.Time `json:"obtained_at"`
	ExpiresAt    time.Time `json:"expires_at"`
	// Generation is the config generation the session was obtained with;
	// a session from another generation is never served.
	Generation string `json:"generation"`
	// TokenURL and RevocationURL are the endpoint the session's tokens were
	// issued under, where alone they go back (shape 2 on).
	TokenURL      string `json:"token_url,omitempty"`
	RevocationURL string `json:"revocation_url,omitempty"`
}

func newSession(tok *irisauth.Token, cfg *credential) *tokenSession {
	sess := &tokenSession{
		ShapeVersion: sessionShapeVersion,
		AccessToken:  tok.AccessToken,
		TokenType:    tok.TokenType,
		Scope:        tok.Scope,
		RefreshToken: tok.RefreshToken,
		ObtainedAt:   tok.ObtainedAt,
		ExpiresAt:    tok.ExpiresAt(),
		Generation:   cfg.Generation,
	}
	sess.TokenURL, sess.RevocationURL = cfg.TokenURL, cfg.RevocationURL
	return sess
}

// issuedAt reports whether the session's tokens came from cfg's token URL;
// sessions of earlier releases recorded none, and their generation, which
// covers the token URL, stands in.
func (s *tokenSession) issuedAt(cfg *credential) bool {
	return s.Generation == cfg.Generation && (s.ShapeVersion < 2 || s.TokenURL == cfg.TokenURL)
}

// revocationURL is where the session's refresh token may be revoked: the
// endpoint recorded at issue, or for a session of an earlier release the
// one its config had when this release first loaded it.
func (s *tokenSession) revocationURL(cfg *credential) string {
	if s.ShapeVersion < 2 {
		return cfg.LegacyRevocationURL
	}
	return s.RevocationURL
}

func (s *tokenSession) token() *irisauth.Token {
	return &irisauth.Token{
		AccessToken:  s.AccessToken,
		TokenType:    s.TokenType,
		Scope:        s.Scope,
		RefreshToken: s.RefreshToken,
		ObtainedAt:   s.ObtainedAt,
		Lifetime:     s.ExpiresAt.Sub(s.ObtainedAt),
	}
}

func (s *tokenSession) withoutRefreshToken() *tokenSession {
	dropped := *s
	dropped.RefreshToken = ""
	return &dropped
}

func (s *tokenSession) lifetime() time.Duration { return s.ExpiresAt.Sub(s.ObtainedAt) }

// refreshAt is when the engine replaces the session's token: once less than
// a third of its lifetime is left, or the config's refresh_floor if that is
// larger (capped at half the lifetime, so a token is always served for at
// least half of its life).
func (s *tokenSession) refreshAt(cfg *credential) time.Time {
	lifetime := s.lifetime()
	before := lifetime / 3
	if cfg.RefreshFloor > before {
		before = min(cfg.RefreshFloor, lifetime/2)
	}
	return s.ExpiresAt.Add(-before)
}

// outageFloor is the least time left at which a token is still served when
// IRIS cannot replace it.
func (s *tokenSession) outageFloor() time.Duration {
	return max(minOutageFloor, s.lifetime()/20)
}

// sharedTokenRead is what a token/ read serves.
type sharedTokenRead struct {
	session *tokenSession
	// cfg is the config the session belongs to: the one read, or the one
	// that replaced it while the token was being replaced.
	cfg *credential
	// replaceFailed is why a due token could not be replaced, when the
	// current one is served anyway because it has life enough left.
	replaceFailed error
}

// sharedToken serves the credential's one shared token, replacing it first
// when it is due. Three rules keep that safe however many readers, writers
// and background grants meet:
//
//   - One grant per credential is in flight; every other caller waits for
//     its result (refreshSession).
//   - The result is written back only if the config is unchanged since the
//     grant began, under the lock config writes and deletes take
//     (storeSessionIfCurrent): a token obtained with credentials that have
//     since changed is never stored or served.
//   - The refresh token is written ahead: the stored session lets go of it
//     before it is sent, so that it is never sent twice, whatever fails or
//     restarts after.
//
// When IRIS cannot replace a due token that still has life enough left,
// the current one is served, with the failure in replaceFailed.
func (b *backend) sharedToken(ctx context.Context, s logical.Storage, ref credentialRef, cfg *credential) (sharedTokenRead, error) {
	name := ref.name
	// Marked once the read is served, so that a read that obtained the
	// token counts as a read of it: a Vault Agent re-reads only at ttl+1,
	// past the background due point, and its token must be replaced ahead
	// of that read, not by it.
	defer b.refresher.markRead(name)
	sess, err := b.session(ctx, s, name)
	if err != nil {
		return sharedTokenRead{}, err
	}
	if sess != nil && sess.Generation == cfg.Generation && b.now().Before(sess.refreshAt(cfg)) {
		return sharedTokenRead{session: sess, cfg: cfg}, nil
	}

	if !b.canWriteStorage() {
		// Only the active node may rotate the refresh token; Vault forwards
		// the request there when it sees this error, before any grant ran
		// here.
		return sharedTokenRead{}, logical.ErrReadOnly
	}

	fresh, replaceErr := b.refreshSession(ctx, s, ref, dueAtRefreshPoint)
	var stale *staleSessionError
	if errors.As(replaceErr, &stale) {
		// The config changed under the grant; one more try uses the new
		// one, so that readers see a 409 only under constant churn.
		if cfg, err = b.config(ctx, s, name); err != nil {
			return sharedTokenRead{}, err
		}
		if cfg == nil {
			return sharedTokenRead{}, replaceErr
		}
		fresh, replaceErr = b.refreshSession(ctx, s, ref, dueAtRefreshPoint)
	}
	if replaceErr == nil {
		return sharedTokenRead{session: fresh, cfg: cfg}, nil
	}

	// IRIS failed us: keep serving the current token while it has enough
	// life left for a consumer to use it.
	if sess, _ = b.session(ctx, s, name); sess != nil && sess.Generation == cfg.Generation &&
		sess.ExpiresAt.Sub(b.now()) > sess.outageFloor() {
		return sharedTokenRead{session: sess, cfg: cfg, replaceFailed: replaceErr}, nil
	}
	return sharedTokenRead{}, replaceErr
}

// dueAt says when a stored session is to be replaced. A reader replaces it
// at its refresh point; the background refresh earlier (backgroundDueAt).
type dueAt func(sess *tokenSession, cfg *credential) time.Time

func dueAtRefreshPoint(sess *tokenSession, cfg *credential) time.Time { return sess.refreshAt(cfg) }

// staleSessionError says a grant's result was thrown away because the
// config changed while it ran.
type staleSessionError struct{ noun, name string }

func (e *staleSessionError) Error() string {
	return fmt.Sprintf("%s %q was changed or deleted while its token was being replaced; read again", e.noun, e.name)
}

// refreshSession replaces the named session's token once it is due, unless
// another caller already did. However many callers arrive at once, one
// grant per credential is in flight; the others wait for its result, and
// the first caller's due rule decides.
func (b *backend) refreshSession(ctx context.Context, s logical.Storage, ref credentialRef, due dueAt) (*tokenSession, error) {
	ch := b.flights.DoChan(ref.name, func() (interface{}, error) {
		if !b.startFlight() {
			return nil, errMountClosed
		}
		defer b.endFlight()
		// The flight outlives any one caller: a caller that gives up must
		// not cancel the grant the others are waiting for. It ends with the
		// mount, though (see clean).
		flightCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		defer cancel()
		stop := context.AfterFunc(b.refresher.ctx, cancel)
		defer stop()
		return b.refreshSessionOnce(flightCtx, s, ref, due)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*tokenSession), nil
	}
}

func (b *backend) refreshSessionOnce(ctx context.Context, s logical.Storage, ref credentialRef, due dueAt) (*tokenSession, error) {
	name := ref.name
	cfg, err := b.configFromStorage(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, &staleSessionError{noun: ref.noun(), name: name}
	}
	sess, err := b.sessionFromStorage(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if sess != nil && !sess.issuedAt(cfg) {
		sess = nil
	}
	if sess != nil && b.now().Before(due(sess, cfg)) {
		// Someone replaced it while this caller queued.
		return sess, nil
	}

	refreshToken := ""
	if sess != nil && sess.RefreshToken != "" {
		// Write-ahead: the stored session lets go of the refresh token
		// before it is sent, so that no failure or restart after this point
		// can send it a second time.
		refreshToken = sess.RefreshToken
		if err := b.storeSessionIfCurrent(ctx, s, name, cfg, sess.withoutRefreshToken()); err != nil {
			return nil, err
		}
	}
	tok, outcome, grantErr := b.refreshOrLogIn(ctx, ref, cfg, refreshToken)
	if b.afterGrant != nil {
		b.afterGrant(name)
	}

	if grantErr != nil {
		if refreshToken != "" && outcome == irisauth.RefreshTokenUnused {
			// IRIS provably never saw it: it is as good as before.
			if err := b.storeSessionIfCurrent(ctx, s, name, cfg, sess); err != nil {
				b.abandonRefreshToken(ctx, name, cfg, sess.revocationURL(cfg), refreshToken, "an unused refresh token could not be put back", err)
			}
		}
		return nil, grantErr
	}
	fresh := newSession(tok, cfg)
	// The rotated refresh token is stored before the token is handed out:
	// IRIS has already retired the old one.
	if err := b.storeSessionIfCurrent(ctx, s, name, cfg, fresh); err != nil {
		b.abandonRefreshToken(ctx, name, cfg, cfg.RevocationURL, fresh.RefreshToken, "a new shared token could not be stored", err)
		return nil, err
	}
	b.Logger().Debug("shared token replaced", "name", name, "expires_at", fresh.ExpiresAt.UTC().Format(time.RFC3339))
	return fresh, nil
}

// storeSessionIfCurrent stores sess unless the config was written since cfg
// was read, whatever the write changed. It takes the lock config writes and deletes take, so that a session
// obtained with credentials that have since changed is never stored.
func (b *backend) storeSessionIfCurrent(ctx context.Context, s logical.Storage, name string, cfg *credential, sess *tokenSession) error {
	return b.withCredentialLock(name, func() error {
		current, err := b.configFromStorage(ctx, s, name)
		if err != nil {
			return err
		}
		if current == nil || current.Generation != cfg.Generation || current.Revision != cfg.Revision {
			return &staleSessionError{noun: cfg.kind().noun, name: name}
		}
		return b.putSession(ctx, s, name, sess)
	})
}

// sessionAfterConfigWrite brings the shared token in line with a config
// just stored (under the credential lock): the verifying grant's token becomes
// the session, so that it is not wasted and its refresh token is not left
// alive at IRIS with nobody holding it; a session obtained with credentials
// that have since changed is dropped. It returns the session it replaced or
// dropped, whose refresh token nobody holds any more.
func (b *backend) sessionAfterConfigWrite(ctx context.Context, s logical.Storage, name string, existing, cfg *credential, verified *irisauth.Token) (*tokenSession, error) {
	if verified == nil && (existing == nil || existing.Generation == cfg.Generation) {
		return nil, nil
	}
	var old *tokenSession
	var err error
	if existing != nil {
		if old, err = b.sessionFromStorage(ctx, s, name); err != nil {
			return nil, err
		}
	}
	if verified != nil {
		err = b.putSession(ctx, s, name, newSession(verified, cfg))
	} else {
		err = b.deleteSession(ctx, s, name)
	}
	return old, err
}

// revokeAbandonedSession revokes, best effort, the refresh token of a
// session a config write or delete let go of, with the config it was
// obtained under. Called outside the credential lock: it waits on IRIS.
func (b *backend) revokeAbandonedSession(ctx context.Context, name string, cfg *credential, old *tokenSession) {
	if old == nil || cfg == nil || old.Generation != cfg.Generation {
		return
	}
	b.abandonRefreshToken(ctx, name, cfg, old.revocationURL(cfg), old.RefreshToken, "the shared token was replaced or dropped", nil)
}

// abandonRefreshToken lets go of a refresh token nobody will hold: one
// obtained under cfg that could not be stored (the config was written
// meanwhile, or storage failed), or one that could not be put back. It is
// never stored or sent again; where cfg has a revocation endpoint it is
// revoked there, best effort, and otherwise left to expire at IRIS. The log
// line names the credential, never the token.
func (b *backend) abandonRefreshToken(ctx context.Context, name string, cfg *credential, revocationURL, refreshToken, why string, cause error) {
	if refreshToken == "" {
		return
	}
	var stale *staleSessionError
	log := b.Logger().Warn
	if cause == nil || errors.As(cause, &stale) {
		// A write replacing or racing a grant is ordinary; it is worth a
		// line, not an alarm.
		log = b.Logger().Info
	}
	args := []interface{}{"name", name}
	if cause != nil {
		args = append(args, "error", cause)
	}
	if revocationURL == "" {
		log(why+"; its refresh token is left to expire at IRIS (no revocation_url)", args...)
		return
	}
	log(why+"; revoking its refresh token at IRIS", args...)
	// Not tied to the caller: a grant cancelled by Clean still revokes what
	// it obtained, within the revocation timeout.
	b.revokeAtIRIS(context.WithoutCancel(ctx), name, cfg, revocationURL, refreshToken, "refresh_token")
}
