package iris

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-secrets-iris/irisauth"
)

// This file owns the stored credential: its shape, defaults and rules, its
// generation, and how it turns into grants for the OAuth client.

const (
	// configShapeVersion 2 added ID; 3 added Revision and
	// LegacyRevocationURL. Entries of earlier shapes are read as they are
	// (see identity, Revision's empty value, which the next write replaces,
	// and upgradeLoaded, which sets LegacyRevocationURL).
	configShapeVersion = 3

	defaultRequestTimeout = 10 * time.Second
	minRequestTimeout     = time.Second
	maxRequestTimeout     = 30 * time.Second

	// maxRevocationTimeout keeps best-effort revocations short: they run
	// inside revoke and write requests that should not wait on a slow IRIS.
	maxRevocationTimeout = 3 * time.Second
)

// scopeOfflineAccess makes IRIS issue refresh tokens.
const scopeOfflineAccess = "offline_access"

var defaultScopes = []string{"api", scopeOfflineAccess}

// credential is one stored IRIS credential of any kind: an API user, an API
// key or an app installation.
type credential struct {
	// ShapeVersion lets a later release upgrade stored entries.
	ShapeVersion int `json:"shape_version"`
	// ID is fixed when the credential is created, and changes only with its
	// client ID or username: a lease or session of one credential is never
	// renewed as another that was given the same name since.
	ID string `json:"id,omitempty"`
	// Kind is one of credentialKinds; entries written before kinds existed
	// have none and are API users.
	Kind            string        `json:"kind,omitempty"`
	AccountID       string        `json:"account_id,omitempty"`
	ClientID        string        `json:"client_id"`
	ClientSecret    string        `json:"client_secret"`
	Username        string        `json:"username"`
	Password        string        `json:"password"`
	Scopes          []string      `json:"scopes"`
	TokenURL        string        `json:"token_url"`
	RevocationURL   string        `json:"revocation_url,omitempty"`
	TTL             time.Duration `json:"ttl"`
	MaxTTL          time.Duration `json:"max_ttl"`
	RequestTimeout  time.Duration `json:"request_timeout"`
	RenewableLeases bool          `json:"renewable_leases"`
	RefreshFloor    time.Duration `json:"refresh_floor"`
	// LegacyRevocationURL is where leases and sessions of releases that
	// recorded no endpoint are revoked: the revocation URL the config had
	// when this release first loaded it. A later change of revocation_url
	// does not move their tokens.
	LegacyRevocationURL string `json:"legacy_revocation_url,omitempty"`
	// Generation changes whenever a field that decides which tokens IRIS
	// issues changes, so that state derived from an older config (a shared
	// token session, say) can tell it is stale.
	Generation string `json:"generation"`
	// Revision changes with every write, whatever it changed: a grant that
	// ran while the config was written is never stored over what the write
	// left (a verifying grant's session, say). Entries written before it
	// existed have none until their next write.
	Revision string `json:"revision,omitempty"`
}

// newCredential is a new credential of kind with every default set. Only
// API users have default scopes: an API key's or app's allowed scopes are
// its own, and asking for more is refused.
func newCredential(kind *credentialKind) *credential {
	cfg := &credential{
		ShapeVersion:   configShapeVersion,
		Kind:           kind.name,
		TokenURL:       kind.defaultTokenURL,
		RequestTimeout: defaultRequestTimeout,
	}
	if kind.actsAsUser {
		cfg.Scopes = defaultScopes
	}
	return cfg
}

// upgradeLoaded brings an entry of an earlier shape up to date in memory;
// the next write stores it so.
func (c *credential) upgradeLoaded() {
	if c.ShapeVersion < 3 {
		c.LegacyRevocationURL = c.RevocationURL
	}
}

// kind is the config's credential kind.
func (c *credential) kind() *credentialKind {
	if k, ok := credentialKinds[c.Kind]; ok {
		return k
	}
	return credentialKinds[kindAPIUser]
}

// validate returns what is wrong with the config; creating says whether the
// fields were all given in this write, which changes how a missing one is
// worded.
func (c *credential) validate(creating bool) []string {
	var problems []string
	required := []struct{ key, value string }{{keyClientID, c.ClientID}, {keyClientSecret, c.ClientSecret}}
	if c.kind().actsAsUser {
		required = append(required, struct{ key, value string }{keyUsername, c.Username}, struct{ key, value string }{keyPassword, c.Password})
	}
	for _, f := range required {
		if f.value != "" {
			continue
		}
		if creating {
			problems = append(problems, f.key+" is required")
		} else {
			problems = append(problems, f.key+" must not be empty")
		}
	}
	if len(c.Scopes) == 0 {
		if c.kind().actsAsUser {
			problems = append(problems, "scopes must name at least one scope")
		} else {
			problems = append(problems, "scopes must name the scopes to request (a subset of those the "+c.kind().name+" is allowed)")
		}
	}
	if problem := checkEndpointURL(keyTokenURL, c.TokenURL, true); problem != "" {
		problems = append(problems, problem)
	}
	if problem := checkEndpointURL(keyRevocationURL, c.RevocationURL, false); problem != "" {
		problems = append(problems, problem)
	}
	if c.TTL < 0 || c.MaxTTL < 0 {
		problems = append(problems, "ttl and max_ttl must not be negative")
	} else if c.MaxTTL > 0 && c.TTL > c.MaxTTL {
		problems = append(problems, "ttl must not exceed max_ttl")
	}
	if c.RequestTimeout < minRequestTimeout || c.RequestTimeout > maxRequestTimeout {
		problems = append(problems, fmt.Sprintf("request_timeout must be between %s and %s", minRequestTimeout, maxRequestTimeout))
	}
	if c.RefreshFloor < 0 {
		problems = append(problems, "refresh_floor must not be negative")
	}
	return problems
}

// identity is the credential's ID. Entries written before IDs existed (all
// of them API users) have none; their generation stands in, as it does in
// their leases, so that a lease of an API user left unchanged by the
// upgrade still renews.
func (c *credential) identity() string {
	if c.ID != "" {
		return c.ID
	}
	return legacyIdentity(c.Generation)
}

func legacyIdentity(generation string) string { return "generation:" + generation }

// tokenIdentity is what decides which tokens IRIS issues for this config.
func (c *credential) tokenIdentity() string {
	return strings.Join([]string{c.ClientID, c.ClientSecret, c.Username, c.Password,
		strings.Join(c.Scopes, " "), c.TokenURL}, "\x00")
}

// endpoint is the credential's OAuth client at its token URL.
func (c *credential) endpoint() irisauth.Endpoint {
	return irisauth.Endpoint{
		TokenURL:       c.TokenURL,
		ClientID:       c.ClientID,
		ClientSecret:   c.ClientSecret,
		Auth:           c.kind().auth,
		AttemptTimeout: c.RequestTimeout,
	}
}

// logInGrant obtains a token from the credential itself: the password grant
// of an API user, the client-credentials grant of the other kinds. Only a
// caller that keeps the refresh token asks for one (offline_access): one
// that would throw it away would leave it alive at IRIS for nobody.
func (c *credential) logInGrant(keepsRefreshToken bool) irisauth.Grant {
	if !c.kind().actsAsUser {
		return c.endpoint().ClientCredentialsGrant(c.Scopes)
	}
	return c.endpoint().PasswordGrant(c.Username, c.Password, c.scopesFor(keepsRefreshToken))
}

func (c *credential) scopesFor(keepsRefreshToken bool) []string {
	if keepsRefreshToken {
		return c.Scopes
	}
	scopes := make([]string, 0, len(c.Scopes))
	for _, s := range c.Scopes {
		if s != scopeOfflineAccess {
			scopes = append(scopes, s)
		}
	}
	return scopes
}

func (c *credential) refreshGrant(refreshToken string) irisauth.Grant {
	return c.endpoint().RefreshGrant(refreshToken)
}

func (c *credential) revocationTimeout() time.Duration {
	return min(c.RequestTimeout, maxRevocationTimeout)
}

// normalizeScopes accepts comma- and space-separated scopes alike, since the
// OAuth wire format is space-separated and Vault's lists are comma-separated.
// An empty result is left to validate.
func normalizeScopes(in []string) ([]string, string) {
	var scopes []string
	for _, item := range in {
		for _, s := range strings.Fields(item) {
			if !slices.Contains(scopes, s) {
				scopes = append(scopes, s)
			}
		}
	}
	for _, s := range scopes {
		for _, r := range s {
			// RFC 6749 §3.3 scope-token characters.
			if r < 0x21 || r == 0x22 || r == 0x5c || r > 0x7e {
				return nil, fmt.Sprintf("scope %q has a character OAuth does not allow", truncateForMessage(s))
			}
		}
	}
	return scopes, ""
}

// checkEndpointURL enforces where credentials may be sent: https anywhere,
// plain http only to this machine, and never with credentials in the URL
// (config reads return it).
func checkEndpointURL(key, raw string, required bool) string {
	if raw == "" {
		if required {
			return key + " is required"
		}
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || u.Hostname() == "" || u.Opaque != "" {
		// Not quoted: an unparsable URL may still hold credentials.
		return fmt.Sprintf("%s is not an absolute URL", key)
	}
	if u.User != nil {
		return fmt.Sprintf("%s must not contain credentials", key)
	}
	if u.Fragment != "" || u.RawQuery != "" {
		return fmt.Sprintf("%s must not have a query or fragment", key)
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return ""
		}
		return fmt.Sprintf("%s must use https:// (http:// is allowed only for loopback hosts such as 127.0.0.1)", key)
	default:
		return fmt.Sprintf("%s must use https://", key)
	}
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// randomID mints the credential's ID, generation and revision: 96 random
// bits, so that no two are ever equal by chance.
func randomID() string {
	var buf [12]byte
	if _, err := rand.Read(buf[:]); err != nil {
		// crypto/rand does not fail on supported platforms.
		panic("crypto/rand failed")
	}
	return hex.EncodeToString(buf[:])
}

// storeCredential stores cfg in place of existing (nil: a new credential), unless
// a write or delete landed since existing was read; verified, the token of
// the verifying grant if there was one, becomes the shared token. A write
// ends any hold on the credential's grants: it may have fixed what IRIS
// refused. A write that fails changes nothing when it can: the config is
// put back as it was. A verifying token that is not stored is let go of
// (abandonRefreshToken).
func (b *backend) storeCredential(ctx context.Context, s logical.Storage, name string, existing, cfg *credential, verified *irisauth.Token) error {
	var abandoned *tokenSession
	configWritten := false
	err := b.withCredentialLock(name, func() error {
		// The verifying grant ran unlocked: a write or delete that landed
		// meanwhile must not be undone by storing a copy of what it replaced.
		current, err := b.configFromStorage(ctx, s, name)
		if err != nil {
			return err
		}
		if (existing == nil) != (current == nil) || (existing != nil && !reflect.DeepEqual(*existing, *current)) {
			return logical.CodedError(http.StatusConflict, fmt.Sprintf("%s %q was changed or deleted while this write ran; nothing was stored, write again", cfg.kind().noun, name))
		}
		if err := b.putConfig(ctx, s, name, cfg); err != nil {
			return err
		}
		configWritten = true
		abandoned, err = b.sessionAfterConfigWrite(ctx, s, name, existing, cfg, verified)
		if err != nil {
			// The session is as it was (a failed write changes nothing), so
			// the config goes back too.
			if undoErr := b.restoreConfig(ctx, s, name, existing); undoErr != nil {
				b.Logger().Error("could not put the previous config back after a failed write; the new one stays", "name", name, "error", undoErr)
			} else {
				configWritten = false
			}
		}
		return err
	})
	if err != nil {
		if verified != nil {
			b.abandonRefreshToken(ctx, name, cfg, cfg.RevocationURL, verified.RefreshToken, "the verifying grant's token was not stored", err)
		}
		var coded logical.HTTPCodedError
		switch {
		case errors.As(err, &coded):
			return err
		case configWritten:
			// The old session stays stored, but a new generation never
			// serves it: its refresh token is held by nobody.
			if existing != nil && existing.Generation != cfg.Generation {
				b.revokeAbandonedSession(ctx, name, existing, abandoned)
			}
			return fmt.Errorf("%s %q was stored, but its shared token could not be brought in line (the next token/ read replaces it): %w", cfg.kind().noun, name, err)
		default:
			return fmt.Errorf("%s %q: nothing was stored: %w", cfg.kind().noun, name, err)
		}
	}
	// status/ counts the verifying grant like any other.
	b.grants.configWritten(name, cfg, verified != nil)
	b.revokeAbandonedSession(ctx, name, existing, abandoned)
	return nil
}

// restoreConfig puts back the config a failed write replaced (nil: there
// was none). Under the credential lock.
func (b *backend) restoreConfig(ctx context.Context, s logical.Storage, name string, previous *credential) error {
	if previous == nil {
		return b.deleteConfig(ctx, s, name)
	}
	return b.putConfig(ctx, s, name, previous)
}

// deleteCredential deletes the credential and its shared token. Under the session
// lock, so that a grant in flight cannot write a session back after the
// delete: delete always wins. The session goes first: a failure after it
// leaves the config as it was, with a session the next read obtains again.
func (b *backend) deleteCredential(ctx context.Context, s logical.Storage, name string) error {
	var cfg *credential
	var abandoned *tokenSession
	err := b.withCredentialLock(name, func() error {
		var err error
		if cfg, err = b.configFromStorage(ctx, s, name); err != nil {
			return err
		}
		if abandoned, err = b.sessionFromStorage(ctx, s, name); err != nil {
			return err
		}
		if err := b.deleteSession(ctx, s, name); err != nil {
			abandoned = nil // still stored, still held
			return err
		}
		return b.deleteConfig(ctx, s, name)
	})
	// The session is gone whenever abandoned is set, even if the config
	// delete then failed.
	b.revokeAbandonedSession(ctx, name, cfg, abandoned)
	if err != nil {
		return fmt.Errorf("credential %q was not deleted: %w", name, err)
	}
	b.grants.forget(name)
	b.refresher.forgetRead(name)
	return nil
}
