package iris

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	keyTokenHeld           = "token_held"
	keyTokenObtainedAt     = "token_obtained_at"
	keyTokenExpiresAt      = "token_expires_at"
	keyTokenReplacedAt     = "token_replaced_at"
	keyRefreshTokenHeld    = "refresh_token_held"
	keyLastSuccessAt       = "last_success_at"
	keyLastSuccessGrant    = "last_success_grant"
	keyLastFailureAt       = "last_failure_at"
	keyLastFailure         = "last_failure"
	keyConsecutiveFailures = "consecutive_failures"
	keyGrantsHeldUntil     = "grants_held_until"
	keyGrantsHeldBecause   = "grants_held_because"
	keyGrantsLastHour      = "grants_last_hour"
)

func pathStatus(b *backend) []*framework.Path {
	return []*framework.Path{
		apiUserPath("status", "read", "api-user-status", &framework.PathOperation{
			Callback: b.pathStatusRead,
			Summary:  "Show how an API user is doing, without any secret or token.",
		}, "Show the health of an API user's token grants.", statusHelp),
		b.apiUserListPath("status", "api-user-statuses", "List the API users that have a status.",
			"List the API users whose status can be read.",
			"Lists the names under config/, for monitoring that may read status/ but not config/."),
	}
}

const statusHelp = `
Tells an operator or a monitoring system how an API user is doing, with no
secret and no token in it:

  kind                  the kind of credential
  token_held            whether token/ holds a shared token, and its
  token_obtained_at     times (RFC 3339): when it was obtained, when IRIS
  token_expires_at      stops accepting it, and when the engine replaces it
  token_replaced_at
  refresh_token_held    whether a refresh token is held (never the token)
  last_success_at       the last successful grant of this name and its
  last_success_grant    grant type
  last_failure_at       the last failed grant of this name and why, as
  last_failure          errors show it
  consecutive_failures  failed grants of this name since its last success
  grants_held_until     while IRIS's refusal of the credentials holds new
                        grants back: when the next attempt may be made
  grants_held_because   and the refusal that started the hold
  grants_last_hour      grants of this name sent to IRIS in the last hour

A hold is kept per upstream identity (the token URL's host, the client ID
and the username), so the two grants_held_ fields show on every name that
shares the identity, whichever name's grant IRIS refused; the other grant
fields count the grants of this name only.

The token fields come from storage and survive a restart; the grant fields
are counted in memory by the node serving the mount, and start afresh when
the plugin restarts. A policy with read on status/* gives monitoring this
view without access to tokens.
`

func (b *backend) pathStatusRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	ref, cfg, errResp, err := b.apiUser(ctx, req, d)
	if errResp != nil || err != nil {
		return errResp, err
	}
	sess, err := b.sessions.load(ctx, req.Storage, ref.name)
	if err != nil {
		return nil, err
	}
	if sess != nil && sess.Generation != cfg.Generation {
		sess = nil
	}
	grants := b.grants.report(ref.name, cfg)
	data := map[string]interface{}{
		keyKind:                cfg.kind().name,
		keyTokenHeld:           sess != nil,
		keyTokenObtainedAt:     "",
		keyTokenExpiresAt:      "",
		keyTokenReplacedAt:     "",
		keyRefreshTokenHeld:    sess != nil && sess.RefreshToken != "",
		keyLastSuccessAt:       timestamp(grants.LastSuccess),
		keyLastSuccessGrant:    string(grants.LastSuccessGrant),
		keyLastFailureAt:       timestamp(grants.LastFailure),
		keyLastFailure:         grants.LastFailureReason,
		keyConsecutiveFailures: grants.ConsecutiveFailures,
		keyGrantsHeldUntil:     timestamp(grants.HeldUntil),
		keyGrantsHeldBecause:   grants.HeldBecause,
		keyGrantsLastHour:      grants.GrantsLastHour,
	}
	if sess != nil {
		data[keyTokenObtainedAt] = timestamp(sess.ObtainedAt)
		data[keyTokenExpiresAt] = timestamp(sess.ExpiresAt)
		data[keyTokenReplacedAt] = timestamp(sess.refreshAt(cfg))
	}
	return &logical.Response{Data: data}, nil
}

// timestamp is RFC 3339, or empty for a time that never was.
func timestamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
