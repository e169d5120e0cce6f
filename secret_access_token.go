package iris

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-secrets-iris/irisauth"
)

// This file owns the creds/ secret: a leased IRIS access token, from its
// issue through its renewals to its revocation.

const (
	secretTypeAccessToken = "iris_access_token"

	// maxLeaseMargin bounds how much earlier than its token a lease ends.
	maxLeaseMargin = time.Minute
)

func secretAccessToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type: secretTypeAccessToken,
		Fields: map[string]*framework.FieldSchema{
			keyAccessToken: {Type: framework.TypeString, Description: "IRIS access token, sent as 'Authorization: Bearer <token>'."},
			keyTokenType:   {Type: framework.TypeString, Description: "Always Bearer."},
			keyScope:       {Type: framework.TypeString, Description: "Scopes IRIS granted, space-separated."},
			keyExpiresAt:   {Type: framework.TypeString, Description: "When IRIS stops accepting the token (RFC 3339)."},
			keyExpiresIn:   {Type: framework.TypeInt, Description: "Seconds until expires_at, when the response was made."},
		},
		Renew:  b.renewAccessToken,
		Revoke: b.revokeAccessToken,
	}
}

// leaseAccessToken wraps a freshly obtained token in a lease that ends
// before the token does.
func (b *backend) leaseAccessToken(ref credentialRef, cfg *credential, tok *irisauth.Token) (*logical.Response, error) {
	ttl, err := leaseTTL(ref, tok, b.now())
	if err != nil {
		return nil, err
	}
	internal := map[string]interface{}{
		internalConfigName:    ref.name,
		internalCredentialID:  cfg.identity(),
		internalAccessToken:   tok.AccessToken,
		internalGeneration:    cfg.Generation,
		internalTokenURL:      cfg.TokenURL,
		internalRevocationURL: cfg.RevocationURL,
	}
	if cfg.RenewableLeases && tok.RefreshToken != "" {
		internal[internalRefreshToken] = tok.RefreshToken
	}
	resp := b.Secret(secretTypeAccessToken).Response(b.tokenData(tok), internal)

	if cfg.TTL > 0 {
		ttl = min(ttl, cfg.TTL)
	} else if mountDefault := b.System().DefaultLeaseTTL(); mountDefault > 0 {
		ttl = min(ttl, mountDefault)
	}
	if cfg.MaxTTL > 0 {
		ttl = min(ttl, cfg.MaxTTL)
	}
	resp.Secret.TTL = ttl
	resp.Secret.Renewable = cfg.RenewableLeases
	if cfg.RenewableLeases {
		resp.Secret.MaxTTL = cfg.MaxTTL
	} else {
		resp.Secret.MaxTTL = ttl
	}
	b.metrics.leasesIssued.WithLabelValues(cfg.kind().name).Inc()
	return resp, nil
}

// tokenData is what a caller sees of a token, on reads and renewals alike.
func (b *backend) tokenData(tok *irisauth.Token) map[string]interface{} {
	expiresAt := tok.ExpiresAt()
	return map[string]interface{}{
		keyAccessToken: tok.AccessToken,
		keyTokenType:   tok.TokenType,
		keyScope:       tok.Scope,
		keyExpiresAt:   expiresAt.UTC().Format(time.RFC3339),
		keyExpiresIn:   max(int64(expiresAt.Sub(b.now())/time.Second), 0),
	}
}

// leaseTTL is how long a lease on tok may last: until the token expires,
// less a margin that absorbs clock skew and the time a consumer needs to use
// the token. It is whole seconds, since Vault counts leases in seconds. A
// token with no whole second left beyond the margin is no use to anyone.
func leaseTTL(ref credentialRef, tok *irisauth.Token, now time.Time) (time.Duration, error) {
	margin := min(tok.Lifetime/10, maxLeaseMargin)
	ttl := tok.ExpiresAt().Add(-margin).Sub(now).Truncate(time.Second)
	if ttl < time.Second {
		return 0, logical.CodedError(http.StatusBadGateway, fmt.Sprintf(
			"%s %q: IRIS issued a token that expires within the lease margin (%s); not handing it out", ref.noun(), ref.name, margin))
	}
	return ttl, nil
}

// renewAccessToken renews a lease by trading its refresh token for a new
// access token. It renews only as the credential that issued the lease: one
// deleted, or re-created or repointed under the same name since, is another
// credential, and nothing is sent for it. Vault turns any error here into a
// 400 with its own prefix, so each error's text must stand on its own.
func (b *backend) renewAccessToken(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	ref := refFor(req, internalString(req.Secret, internalConfigName))
	cfg, err := b.config(ctx, req.Storage, ref.name)
	if err != nil {
		return nil, err
	}
	if cfg == nil || cfg.identity() != leaseCredentialID(req.Secret) {
		return nil, fmt.Errorf("the credential that issued this lease no longer exists at %s (deleted, or replaced by another credential of the same name), so the lease cannot be renewed; read %s again for a new token",
			ref.configPath(), ref.credsPath())
	}
	ref = ref.of(cfg)
	if !cfg.RenewableLeases {
		return nil, fmt.Errorf("renewal is disabled for %s %q (renewable_leases=false); read %s again for a new token", ref.noun(), ref.name, ref.credsPath())
	}

	// Refuse before calling IRIS what Vault would refuse after: a renewal
	// past the lease's max TTL would otherwise spend a refresh token for
	// nothing.
	ttl, warnings, err := framework.CalculateTTL(b.System(), req.Secret.Increment, cfg.TTL, 0, cfg.MaxTTL, 0, req.Secret.IssueTime)
	if err != nil {
		return nil, fmt.Errorf("lease of %s %q cannot be renewed: %w; read %s again for a new token", ref.noun(), ref.name, err, ref.credsPath())
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("lease of %s %q has reached its max TTL; read %s again for a new token", ref.noun(), ref.name, ref.credsPath())
	}
	if cfg.TTL > 0 && ttl > cfg.TTL {
		// A caller's -increment overrides the config's ttl in CalculateTTL.
		ttl = cfg.TTL
		warnings = append(warnings, fmt.Sprintf("TTL capped at the %s's ttl of %s", ref.noun(), cfg.TTL))
	}

	refreshToken := internalString(req.Secret, internalRefreshToken)
	if internalString(req.Secret, internalGeneration) != cfg.Generation || !leaseIssuedAt(req.Secret, cfg.TokenURL) {
		// The credentials, scopes or token URL changed since the lease was
		// issued: its refresh token belongs to the old ones, and goes
		// nowhere else.
		refreshToken = ""
	}
	if refreshToken != "" {
		fresh, err := b.claimRefreshToken(ctx, req.Storage, refreshToken)
		if err != nil {
			// Nothing was sent: the lease keeps its refresh token for the
			// next renewal.
			return nil, fmt.Errorf("lease of %s %q was not renewed: recording its refresh token as spent failed: %w", ref.noun(), ref.name, err)
		}
		if !fresh {
			// An earlier renewal sent it and then failed: it may be spent.
			refreshToken = ""
		}
	}
	tok, outcome, err := b.refreshOrLogIn(ctx, ref, cfg, refreshToken)
	if err != nil {
		if refreshToken != "" && outcome == irisauth.RefreshTokenUnused {
			// IRIS provably never saw it (a 429, a refused connection): the
			// next renewal may send it after all.
			if err := b.releaseRefreshToken(ctx, req.Storage, refreshToken); err != nil {
				b.Logger().Warn("could not release an unused refresh token", "name", ref.name, "error", err)
			}
		}
		return nil, fmt.Errorf("renewing lease of %s", describeUpstreamError(ref, err))
	}
	now := b.now()
	tokenTTL, err := leaseTTL(ref, tok, now)
	if err != nil {
		b.abandonRefreshToken(ctx, ref.name, cfg, cfg.RevocationURL, tok.RefreshToken, "a renewal's token was not handed out", err)
		return nil, err
	}

	resp := &logical.Response{Secret: req.Secret, Data: b.tokenData(tok), Warnings: warnings}
	internal := make(map[string]interface{}, len(req.Secret.InternalData)+1)
	for k, v := range req.Secret.InternalData {
		internal[k] = v
	}
	internal[internalCredentialID] = cfg.identity()
	internal[internalAccessToken] = tok.AccessToken
	internal[internalGeneration] = cfg.Generation
	internal[internalTokenURL] = cfg.TokenURL
	internal[internalRevocationURL] = cfg.RevocationURL
	// The old refresh token is spent either way; keeping it would risk
	// sending it twice.
	delete(internal, internalRefreshToken)
	if tok.RefreshToken != "" {
		internal[internalRefreshToken] = tok.RefreshToken
	}
	resp.Secret.InternalData = internal

	ttl = min(ttl, tokenTTL)
	resp.Secret.TTL = ttl
	// Vault lets a caller's increment override TTL; MaxTTL, counted from the
	// issue time, is the only cap it honours, so it pins the lease's end to
	// the new token's (and to the config's ttl).
	resp.Secret.MaxTTL = now.Add(ttl).Sub(req.Secret.IssueTime.Truncate(time.Second)).Truncate(time.Second)
	if cfg.MaxTTL > 0 {
		resp.Secret.MaxTTL = min(resp.Secret.MaxTTL, cfg.MaxTTL)
	}
	b.metrics.leasesRenewed.WithLabelValues(cfg.kind().name).Inc()
	b.Logger().Debug("lease renewed", "name", ref.name, "ttl", ttl.String())
	return resp, nil
}

// leaseCredentialID is the identity of the credential that issued the lease.
// Leases issued before identities existed carry their config generation,
// which stands in for it (see credential.identity).
func leaseCredentialID(secret *logical.Secret) string {
	if id := internalString(secret, internalCredentialID); id != "" {
		return id
	}
	return legacyIdentity(internalString(secret, internalGeneration))
}

// claimRefreshToken records in storage, before a lease's refresh token is
// sent, that it is being spent; it reports false when an earlier renewal
// already did. Vault keeps a lease's data as it was when a renewal fails, so
// this record is what keeps a refresh token from being sent twice. Records
// expire with the longest lease the mount allows (sweepSpentRefreshTokens).
func (b *backend) claimRefreshToken(ctx context.Context, s logical.Storage, refreshToken string) (bool, error) {
	key := spentRecordKey(refreshToken)
	var fresh bool
	err := b.withSpentRecordLock(key, func() error {
		_, found, err := spentRecord(ctx, s, key)
		if err != nil || found {
			return err
		}
		fresh = true
		return putSpentRecord(ctx, s, key, b.now())
	})
	return fresh, err
}

// releaseRefreshToken undoes claimRefreshToken for a refresh token IRIS
// provably never saw.
func (b *backend) releaseRefreshToken(ctx context.Context, s logical.Storage, refreshToken string) error {
	key := spentRecordKey(refreshToken)
	return b.withSpentRecordLock(key, func() error { return deleteSpentRecord(ctx, s, key) })
}

// sweepSpentRefreshTokens deletes the records of refresh tokens whose leases
// have ended for certain.
func (b *backend) sweepSpentRefreshTokens(ctx context.Context, s logical.Storage) error {
	keys, err := listSpentRecords(ctx, s)
	if err != nil {
		return err
	}
	cutoff := b.now().Add(-b.System().MaxLeaseTTL())
	for _, key := range keys {
		spentAt, found, err := spentRecord(ctx, s, key)
		if err != nil || !found || spentAt.IsZero() || !spentAt.Before(cutoff) {
			continue
		}
		if err := b.withSpentRecordLock(key, func() error { return deleteSpentRecord(ctx, s, key) }); err != nil {
			return err
		}
	}
	return nil
}

// revokeAccessToken always succeeds: a lease that cannot be revoked because
// its credential is gone or IRIS is down would pile up and stall
// `vault secrets disable`. Vault deletes the lease, and with it the refresh
// token, once this returns. Its token is revoked remotely only at the
// revocation endpoint in force when it was issued.
func (b *backend) revokeAccessToken(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	b.metrics.leasesRevoked.WithLabelValues("local").Inc()
	name := internalString(req.Secret, internalConfigName)
	cfg, err := b.config(ctx, req.Storage, name)
	if err != nil || cfg == nil || cfg.identity() != leaseCredentialID(req.Secret) {
		// Another credential's secrets and endpoint are never used for this
		// lease's token.
		return nil, nil
	}
	token, hint := internalString(req.Secret, internalRefreshToken), "refresh_token"
	if token == "" {
		token, hint = internalString(req.Secret, internalAccessToken), "access_token"
	}
	if token == "" {
		return nil, nil
	}
	if b.revokeAtIRIS(ctx, name, cfg, leaseRevocationURL(req.Secret, cfg), token, hint) {
		b.metrics.leasesRevoked.WithLabelValues("remote").Inc()
	}
	return nil, nil
}

// leaseIssuedAt reports whether the lease's tokens came from tokenURL.
// Leases of earlier releases recorded none; their generation, which covers
// the token URL, stands in.
func leaseIssuedAt(secret *logical.Secret, tokenURL string) bool {
	recorded, ok := secret.InternalData[internalTokenURL].(string)
	return !ok || recorded == tokenURL
}

// leaseRevocationURL is where the lease's tokens may be revoked: the
// endpoint recorded at issue, or for a lease of an earlier release the one
// its config had when this release first loaded it.
func leaseRevocationURL(secret *logical.Secret, cfg *credential) string {
	if recorded, ok := secret.InternalData[internalRevocationURL].(string); ok {
		return recorded
	}
	return cfg.LegacyRevocationURL
}

func internalString(secret *logical.Secret, key string) string {
	v, _ := secret.InternalData[key].(string)
	return v
}
