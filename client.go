package iris

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"vault-plugin-secrets-iris/irisauth"
)

// The engine's side of the OAuth client: the mount's irisauth.Client, and
// the grant strategy every token path shares. The protocol itself lives in
// package irisauth.

func newIRISClient(logger hclog.Logger) *irisauth.Client {
	client := irisauth.NewClient(logger)
	client.UserAgent = "vault-plugin-secrets-iris/" + Version
	return client
}

// logIn obtains a new token from the API user's own credentials.
func (b *backend) logIn(ctx context.Context, cfg *apiUserConfig) (*irisauth.Token, error) {
	res, err := b.client.Exchange(ctx, cfg.logInGrant())
	return res.Token, err
}

// refreshOrLogIn uses the refresh token when there is one and falls back to
// logging in when IRIS refuses it (rotated elsewhere, expired, or consumed
// by a request whose answer was lost) or when there is none. The outcome
// says what became of the refresh token, whether or not a token came back.
func (b *backend) refreshOrLogIn(ctx context.Context, name string, cfg *apiUserConfig, refreshToken string) (*irisauth.Token, irisauth.RefreshOutcome, error) {
	if refreshToken == "" {
		tok, err := b.logIn(ctx, cfg)
		return tok, irisauth.RefreshTokenUnused, err
	}
	res, err := b.client.Exchange(ctx, cfg.refreshGrant(refreshToken))
	if err == nil || !irisauth.IsRejected(err, "invalid_grant") {
		return res.Token, res.RefreshToken, err
	}
	b.Logger().Info("refresh token refused; falling back to the password grant", "name", name)
	tok, err := b.logIn(ctx, cfg)
	return tok, res.RefreshToken, err
}

// revokeAtIRIS makes one short best-effort revocation call, where the API
// user has a revocation endpoint; a failure is logged, never returned, since
// Vault's side of a revocation must not depend on IRIS.
func (b *backend) revokeAtIRIS(ctx context.Context, name string, cfg *apiUserConfig, token, tokenTypeHint string) {
	if cfg.RevocationURL == "" || token == "" {
		return
	}
	if err := b.client.Revoke(ctx, cfg.endpoint(), cfg.RevocationURL, token, tokenTypeHint, cfg.revocationTimeout()); err != nil {
		b.Logger().Warn("best-effort revocation at IRIS failed", "name", name, "error", err)
	}
}
