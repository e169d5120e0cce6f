package iris

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"vault-plugin-secrets-iris/irisauth"
)

// This file owns the creds/ secret: a leased IRIS access token, from its
// issue through its renewals to its revocation.

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
func (b *backend) leaseAccessToken(name string, cfg *apiUserConfig, tok *irisauth.Token) *logical.Response {
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
	return resp
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
// the token. It is whole seconds, since Vault counts leases in seconds.
func leaseTTL(tok *irisauth.Token, now time.Time) time.Duration {
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
	tok, _, err := b.refreshOrLogIn(ctx, name, cfg, refreshToken)
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
	b.revokeAtIRIS(ctx, name, cfg, token, hint)
	return nil, nil
}

func internalString(secret *logical.Secret, key string) string {
	v, _ := secret.InternalData[key].(string)
	return v
}
