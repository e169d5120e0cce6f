package iris

import (
	"context"

	"github.com/hashicorp/go-hclog"

	"vault-plugin-secrets-iris/irisauth"
)

// The engine's side of the OAuth client: the mount's irisauth.Client, the
// gate every grant passes (holds on refused credentials, health records),
// and the grant strategy every token path shares. The protocol itself lives
// in package irisauth.

func newIRISClient(logger hclog.Logger) *irisauth.Client {
	client := irisauth.NewClient(logger)
	client.UserAgent = "vault-plugin-secrets-iris/" + Version
	return client
}

// grant sends g for the credential unless its token URL's host is not allowed
// or its credentials are held back, and records the outcome.
func (b *backend) grant(ctx context.Context, ref credentialRef, cfg *credential, g irisauth.Grant) (irisauth.Result, error) {
	if err := b.checkHost(ctx, keyTokenURL, g.Endpoint.TokenURL); err != nil {
		b.Logger().Warn("grant not sent", "name", ref.name, "error", err)
		return irisauth.Result{RefreshOutcome: irisauth.RefreshTokenUnused}, err
	}
	t, err := b.grants.admit(ctx, ref.name, cfg, g.Type)
	if err != nil {
		return irisauth.Result{}, err
	}
	b.metrics.grantsInFlight.Inc()
	res, err := b.client.Exchange(ctx, g)
	b.metrics.grantsInFlight.Dec()
	dropForeignRefreshToken(cfg, res.Token)
	b.metrics.grantDone(ref.name, cfg.kind().name, g.Type, err, b.now())
	b.grants.record(t, ref.name, cfg, g.Type, err)
	if err != nil && refusesCredentials(g.Type, err) {
		b.Logger().Warn("IRIS refused the credential's secrets; holding further grants back", "name", ref.name, "error", err)
	}
	return res, err
}

// verify checks credentials about to be stored with one grant. It is not
// held back (an operator writing the config is the one who can fix what
// IRIS refused) until maxRefusedWrites writes in a row were refused, and it
// goes one at a time as other log-in grants do (admitVerify). Below that
// bound a refusal holds nothing, since the refused credentials are not
// stored.
func (b *backend) verify(ctx context.Context, cfg *credential) (*irisauth.Token, error) {
	g := cfg.logInGrant(true)
	if err := b.checkHost(ctx, keyTokenURL, g.Endpoint.TokenURL); err != nil {
		return nil, err
	}
	t, err := b.grants.admitVerify(ctx, cfg)
	if err != nil {
		return nil, err
	}
	res, err := b.client.Exchange(ctx, g)
	b.metrics.countGrant(cfg.kind().name, g.Type, err)
	dropForeignRefreshToken(cfg, res.Token)
	b.grants.verifyDone(t, cfg, err)
	return res.Token, err
}

// dropForeignRefreshToken forgets a refresh token that an API key's or
// app's grant returned: client_credentials holders never get one by the
// protocol, so nothing here would know how to keep it, and it is never
// stored or sent (not even to revoke it).
func dropForeignRefreshToken(cfg *credential, tok *irisauth.Token) {
	if tok != nil && !cfg.kind().actsAsUser {
		tok.RefreshToken = ""
	}
}

// logIn obtains a new token from the credential's own secrets.
func (b *backend) logIn(ctx context.Context, ref credentialRef, cfg *credential, keepsRefreshToken bool) (*irisauth.Token, error) {
	res, err := b.grant(ctx, ref, cfg, cfg.logInGrant(keepsRefreshToken))
	return res.Token, err
}

// refreshOrLogIn obtains a token for a holder that keeps refresh tokens. It
// sends the refresh token when there is one, and logs in instead, within
// the same call, whenever the refresh token may be spent: IRIS refused it,
// or the answer was lost after IRIS may have acted on it. A refresh token is
// therefore never sent twice; the outcome tells the caller whether the one
// it passed is still good (only when IRIS provably did not act on it).
func (b *backend) refreshOrLogIn(ctx context.Context, ref credentialRef, cfg *credential, refreshToken string) (*irisauth.Token, irisauth.RefreshOutcome, error) {
	if refreshToken == "" {
		tok, err := b.logIn(ctx, ref, cfg, true)
		return tok, irisauth.RefreshTokenUnused, err
	}
	res, err := b.grant(ctx, ref, cfg, cfg.refreshGrant(refreshToken))
	switch res.RefreshOutcome {
	case irisauth.RefreshTokenRotated, irisauth.RefreshTokenUnused:
		return res.Token, res.RefreshOutcome, err
	}
	b.metrics.refreshTokenDropped(res.RefreshOutcome)
	b.Logger().Info("refresh token refused or possibly spent; logging in with the password grant instead",
		"name", ref.name, "refresh_token", res.RefreshOutcome.String(), "error", err)
	tok, err := b.logIn(ctx, ref, cfg, true)
	return tok, res.RefreshOutcome, err
}

// revokeAtIRIS makes one short best-effort revocation call at
// revocationURL, the endpoint in force when the token was issued, if there
// was one and its host is still allowed; a failure is logged, never
// returned, since Vault's side of a revocation must not depend on IRIS.
// After an endpoint did not answer, calls are skipped for a while. It
// reports whether IRIS confirmed the revocation.
func (b *backend) revokeAtIRIS(ctx context.Context, name string, cfg *credential, revocationURL, token, tokenTypeHint string) (revoked bool) {
	if revocationURL == "" || token == "" {
		return false
	}
	if err := b.checkHost(ctx, keyRevocationURL, revocationURL); err != nil {
		b.Logger().Warn("revoked in Vault only: the token's revocation endpoint may not be called", "name", name, "error", err)
		return false
	}
	if b.grants.revocationPaused(name) {
		b.Logger().Debug("skipping remote revocation: the endpoint did not answer recently", "name", name)
		return false
	}
	err := b.client.Revoke(ctx, cfg.endpoint(), revocationURL, token, tokenTypeHint, cfg.revocationTimeout())
	if err != nil {
		b.grants.revocationFailed(name, cfg, err)
		b.Logger().Warn("best-effort revocation at IRIS failed", "name", name, "error", err)
	}
	return err == nil
}
