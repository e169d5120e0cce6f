package iris

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	secretTypeAccessToken = "iris_access_token"

	keyAccessToken = "access_token"
	keyTokenType   = "token_type"
	keyScope       = "scope"
	keyExpiresAt   = "expires_at"
	keyExpiresIn   = "expires_in"

	// Lease internal data. The refresh token lives only here, in Vault's
	// lease storage, and is never returned to a caller.
	internalConfigName   = "config_name"
	internalRefreshToken = "refresh_token"
	internalAccessToken  = "access_token"
	internalGeneration   = "generation"

	// maxLeaseMargin bounds how much earlier than its token a lease ends.
	maxLeaseMargin = time.Minute
)

func pathCreds(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern: "creds/" + nameCapture,
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
			OperationVerb:   "generate",
			OperationSuffix: "access-token",
		},
		Fields: apiUserNameField(),
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: withFieldValidation(b.pathCredsRead),
				Summary:  "Get a new IRIS access token for the API user, as a lease that ends before the token does.",
				// A standby cannot create leases: forwarding up front keeps
				// the password grant from running once here and again on the
				// active node.
				ForwardPerformanceStandby: true,
			},
		},
		HelpSynopsis:    "Get a leased IRIS access token for an API user.",
		HelpDescription: strings.TrimSpace(credsHelp),
	}}
}

const credsHelp = `
Each read runs the OAuth password grant for the API user at config/<name> and
returns a fresh access token (access_token, token_type, scope, expires_at,
expires_in) under a lease of its own. The lease ends before the token does: its
TTL is the token's lifetime less a margin (10%, at most 60 seconds), capped by
the config's ttl.

Leases are not renewable unless the config sets renewable_leases=true; Vault
Agent then re-reads the path before the token expires. With
renewable_leases=true, renewing a lease runs the refresh-token grant and
returns a NEW access token; see the README for why this is off by default.

Revoking a lease forgets its refresh token and, where the config has a
revocation_url, asks IRIS to revoke it.

Many readers of one API user should use token/<name> instead: one shared token
instead of one password grant per read.
`

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

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name, cfg, errResp, err := b.apiUser(ctx, req, d)
	if errResp != nil || err != nil {
		return errResp, err
	}

	tok, err := b.client.PasswordGrant(ctx, cfg.credentials(), cfg.RequestTimeout)
	if err != nil {
		b.Logger().Warn("password grant failed", "name", name, "error", err)
		return nil, upstreamResponseError(name, err)
	}

	internal := map[string]interface{}{
		internalConfigName:  name,
		internalAccessToken: tok.AccessToken,
		internalGeneration:  cfg.Generation,
	}
	if cfg.RenewableLeases && tok.RefreshToken != "" {
		internal[internalRefreshToken] = tok.RefreshToken
	}
	resp := b.Secret(secretTypeAccessToken).Response(b.tokenData(tok), internal)

	ttl := leaseTTL(tok, b.now())
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
	return resp, nil
}

// tokenData is what a caller sees of a token, on reads and renewals alike.
func (b *backend) tokenData(tok *Token) map[string]interface{} {
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
// the token. It is whole seconds, since Vault counts leases in seconds.
func leaseTTL(tok *Token, now time.Time) time.Duration {
	margin := min(tok.Lifetime/10, maxLeaseMargin)
	ttl := tok.ExpiresAt().Add(-margin).Sub(now).Truncate(time.Second)
	return max(ttl, time.Second)
}

// renewAccessToken renews a lease by trading its refresh token for a new
// access token. Vault turns any error here into a 400 with its own prefix, so
// each error's text must stand on its own.
func (b *backend) renewAccessToken(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	name := internalString(req.Secret, internalConfigName)
	cfg, err := b.config(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, fmt.Errorf("API user %q no longer exists at iris/config/%s, so its leases cannot be renewed; read iris/creds/<name> of a configured API user instead", name, name)
	}
	if !cfg.RenewableLeases {
		return nil, fmt.Errorf("renewal is disabled for API user %q (renewable_leases=false); read iris/creds/%s for a new token", name, name)
	}

	// Refuse before calling IRIS what Vault would refuse after: a renewal
	// past the lease's max TTL would otherwise spend a refresh token for
	// nothing.
	ttl, warnings, err := framework.CalculateTTL(b.System(), req.Secret.Increment, cfg.TTL, 0, cfg.MaxTTL, 0, req.Secret.IssueTime)
	if err != nil {
		return nil, fmt.Errorf("lease of API user %q cannot be renewed: %w; read iris/creds/%s for a new token", name, err, name)
	}
	if ttl <= 0 {
		return nil, fmt.Errorf("lease of API user %q has reached its max TTL; read iris/creds/%s for a new token", name, name)
	}

	refreshToken := internalString(req.Secret, internalRefreshToken)
	if internalString(req.Secret, internalGeneration) != cfg.Generation {
		// The credentials, scopes or token URL changed since the lease was
		// issued: its refresh token belongs to the old ones.
		refreshToken = ""
	}
	tok, err := b.refreshOrLogIn(ctx, name, cfg, refreshToken)
	if err != nil {
		return nil, fmt.Errorf("renewing lease of %s", describeUpstreamError(name, err))
	}

	resp := &logical.Response{Secret: req.Secret, Data: b.tokenData(tok), Warnings: warnings}
	internal := make(map[string]interface{}, len(req.Secret.InternalData))
	for k, v := range req.Secret.InternalData {
		internal[k] = v
	}
	internal[internalAccessToken] = tok.AccessToken
	internal[internalGeneration] = cfg.Generation
	// The old refresh token is spent either way; keeping it would risk
	// sending it twice.
	delete(internal, internalRefreshToken)
	if tok.RefreshToken != "" {
		internal[internalRefreshToken] = tok.RefreshToken
	}
	resp.Secret.InternalData = internal

	now := b.now()
	ttl = min(ttl, leaseTTL(tok, now))
	resp.Secret.TTL = ttl
	// Vault lets a caller's increment override TTL; MaxTTL, counted from the
	// issue time, is the only cap it honours, so it pins the lease's end to
	// the new token's.
	resp.Secret.MaxTTL = now.Add(ttl).Sub(req.Secret.IssueTime.Truncate(time.Second)).Truncate(time.Second)
	if cfg.MaxTTL > 0 {
		resp.Secret.MaxTTL = min(resp.Secret.MaxTTL, cfg.MaxTTL)
	}
	b.Logger().Debug("lease renewed", "name", name, "ttl", ttl.String())
	return resp, nil
}

// refreshOrLogIn uses the refresh token when there is one and falls back to
// the password grant when IRIS refuses it (rotated elsewhere, expired, or
// consumed by a request whose answer was lost) or when there is none (API
// users created before 2025 get none).
func (b *backend) refreshOrLogIn(ctx context.Context, name string, cfg *apiUserConfig, refreshToken string) (*Token, error) {
	if refreshToken != "" {
		tok, err := b.client.RefreshGrant(ctx, cfg.credentials(), refreshToken, cfg.RequestTimeout)
		if err == nil {
			return tok, nil
		}
		if !IsRejected(err, "invalid_grant") {
			return nil, err
		}
		b.Logger().Info("refresh token refused; falling back to the password grant", "name", name)
	}
	return b.client.PasswordGrant(ctx, cfg.credentials(), cfg.RequestTimeout)
}

// revokeAccessToken always succeeds: a lease that cannot be revoked because
// its API user is gone or IRIS is down would pile up and stall
// `vault secrets disable`. Vault deletes the lease, and with it the refresh
// token, once this returns.
func (b *backend) revokeAccessToken(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	name := internalString(req.Secret, internalConfigName)
	cfg, err := b.config(ctx, req.Storage, name)
	if err != nil || cfg == nil || cfg.RevocationURL == "" {
		return nil, nil
	}
	token, hint := internalString(req.Secret, internalRefreshToken), "refresh_token"
	if token == "" {
		token, hint = internalString(req.Secret, internalAccessToken), "access_token"
	}
	if token == "" {
		return nil, nil
	}
	if err := b.client.Revoke(ctx, cfg.credentials(), token, hint, revocationTimeout(cfg)); err != nil {
		b.Logger().Warn("best-effort revocation at IRIS failed; the lease is revoked in Vault anyway", "name", name, "error", err)
	}
	return nil, nil
}

func internalString(secret *logical.Secret, key string) string {
	v, _ := secret.InternalData[key].(string)
	return v
}
