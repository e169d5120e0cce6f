package iris

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathCreds(b *backend) []*framework.Path {
	return []*framework.Path{credentialPath("creds", "generate", "access-token", &framework.PathOperation{
		Callback: b.pathCredsRead,
		Summary:  "Get a new IRIS access token for the credential, as a lease that ends before the token does.",
		// A standby cannot create leases: forwarding up front keeps the
		// grant from running once here and again on the active node.
		ForwardPerformanceStandby: true,
	}, "Get a leased IRIS access token for a credential.", credsHelp)}
}

const credsHelp = `
Each read runs the credential's own grant at config/<name> (the password grant
for an API user, the client_credentials grant for an API key or an app
installation) and returns a fresh access token (access_token, token_type, scope, expires_at,
expires_in) under a lease of its own. The lease ends before the token does: its
TTL is the token's lifetime less a margin (10%, at most 60 seconds), capped by
the config's ttl.

Leases are not renewable unless the config sets renewable_leases=true, which
only an API user can; Vault Agent then re-reads the path before the token
expires. With renewable_leases=true, renewing a lease runs the refresh-token
grant and returns a NEW access token; see
docs/configuration.md#renewable-leases-renewable_leasestrue for why this is
off by default.

Revoking a lease forgets its refresh token and, where the config has a
revocation_url, asks IRIS to revoke it.

Many readers of one credential should use token/<name> instead: one shared
token instead of one grant per read.
`

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	named, err := b.namedCredential(ctx, req, d)
	if err != nil {
		return nil, err
	}
	ref, cfg := named.ref, named.cfg
	tok, err := b.logIn(ctx, ref, cfg, cfg.RenewableLeases)
	if err != nil {
		b.Logger().Warn("could not obtain a token", "name", ref.name, "error", err)
		return nil, upstreamResponseError(ref, err)
	}
	resp, err := b.leaseAccessToken(ref, cfg, tok)
	if err != nil && cfg.RenewableLeases {
		b.abandonRefreshToken(ctx, ref.name, cfg, cfg.RevocationURL, tok.RefreshToken, "a token was not handed out", err)
	}
	return resp, err
}
