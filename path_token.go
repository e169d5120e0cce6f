package iris

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	// outageRetryTTL is the ttl handed out with a token served during an
	// IRIS outage, so that Agent templates come back soon.
	outageRetryTTL = 15 * time.Second
)

func pathToken(b *backend) []*framework.Path {
	return []*framework.Path{credentialPath("token", "read", "shared-token", &framework.PathOperation{
		Callback: b.pathTokenRead,
		Summary:  "Get the credential's shared, always-fresh IRIS access token (no lease).",
	}, "Get the shared IRIS access token of a credential.", tokenHelp)}
}

const tokenHelp = `
Returns the one token the engine keeps for the credential at config/<name>,
and replaces it once less than
a third of its lifetime is left. Every reader gets the same token, so a
thousand readers cost one grant per token lifetime.

The response has no lease. Besides access_token, token_type, scope, expires_at
and expires_in it carries ttl (seconds until the engine replaces this token)
and rotation_period (seconds between replacements), both integers: Vault Agent
templates re-read such a response ttl+1 seconds later, so rendered files
always hold a live token. last_vault_rotation (RFC 3339) says when the
current token was obtained, so that the Vault Secrets Operator re-syncs after
each replacement.

When IRIS cannot be reached, a read keeps serving the current token, with a
warning and a short ttl, while it has more than max(60s, 5% of its lifetime)
left.
`

func (b *backend) pathTokenRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	named, err := b.namedCredential(ctx, req, d)
	if err != nil {
		return nil, err
	}
	ref, cfg := named.ref, named.cfg
	name := ref.name
	served, err := b.sharedToken(ctx, req.Storage, ref, cfg)
	if err != nil {
		var stale *staleSessionError
		if errors.As(err, &stale) {
			return nil, logical.CodedError(http.StatusConflict, stale.Error())
		}
		if errors.Is(err, logical.ErrReadOnly) {
			return nil, err
		}
		b.Logger().Warn("could not obtain a token", "name", name, "error", err)
		return nil, upstreamResponseError(ref, err)
	}
	sess, now := served.session, b.now()
	resp := b.sessionResponse(sess, served.cfg, now)
	if served.replaceFailed != nil {
		b.Logger().Warn("serving the current token while IRIS cannot replace it", "name", name, "error", served.replaceFailed)
		retry := min(outageRetryTTL, sess.ExpiresAt.Sub(now)-sess.outageFloor())
		resp.Data[keyAgentTTL] = max(int64(retry/time.Second), 1)
		resp.AddWarning(fmt.Sprintf("could not replace the token: %s; serving the current token until IRIS answers again",
			describeUpstreamError(ref, served.replaceFailed)))
	}
	return resp, nil
}

func (b *backend) sessionResponse(sess *tokenSession, cfg *credential, now time.Time) *logical.Response {
	data := b.tokenData(sess.token())
	refreshAt := sess.refreshAt(cfg)
	data[keyAgentTTL] = max(int64(refreshAt.Sub(now)/time.Second), 1)
	data[keyRotationPeriod] = max(int64(refreshAt.Sub(sess.ObtainedAt)/time.Second), 1)
	data[keyLastRotation] = sess.ObtainedAt.UTC().Format(time.RFC3339)
	return &logical.Response{Data: data}
}
