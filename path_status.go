package iris

import (
	"context"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathStatus(b *backend) []*framework.Path {
	list := b.credentialListPath("status", "credential-statuses", "List the credentials that have a status.",
		"List the credentials whose status can be read, or read the whole mount's.",
		strings.TrimSpace(mountStatusHelp))
	list.Operations[logical.ReadOperation] = &framework.PathOperation{
		// Its own name: it reads the mount, not a list of credentials.
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix, OperationSuffix: "mount-status"},
		Callback:     withFieldValidation(b.pathMountStatusRead),
		Summary:      "Count the mount's credentials by state and name those that are not healthy.",
	}
	return []*framework.Path{
		list,
		credentialPath("status", "read", "credential-status", &framework.PathOperation{
			Callback: b.pathStatusRead,
			Summary:  "Show how a credential is doing, without any secret or token.",
		}, "Show the health of a credential's token grants.", statusHelp),
	}
}

// maxNamesPerState bounds each list of names in the mount-wide status.
const maxNamesPerState = 100

const mountStatusHelp = `
LIST status/ names the configured credentials, for monitoring that may read
status/ but not config/.

READ status (no name) answers the whole mount: "counts" has the number of
credentials in each state, and for every state but healthy, "<state>" lists
up to 100 names (sorted) and "<state>_truncated" says whether more were left
out. Each credential is in the first state that applies:

  held             IRIS refused its credentials and new grants are held back
                   (see grants_held_until on status/<name>)
  failing          the last grant sent for it failed
  no_shared_token  token/ was read since the plugin started, but no
                   unexpired shared token is stored
  never_read       no unexpired shared token is stored, and token/ was not
                   read since the plugin started (left to expire, or used
                   only through creds/)
  healthy          an unexpired shared token is stored and the last grant, if
                   any, succeeded

Whether a token is stored comes from storage; grants and reads are counted in
memory by the node serving the mount and start afresh when the plugin
restarts, so after a restart a failing credential shows as failing again only
once a grant for it fails.
`

func (b *backend) pathMountStatusRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	figures, err := b.fleet(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	counts := make(map[string]interface{}, len(credentialStates))
	names := make(map[string][]string, len(credentialStates))
	for _, state := range credentialStates {
		counts[state] = 0
	}
	for _, f := range figures {
		counts[f.state] = counts[f.state].(int) + 1
		names[f.state] = append(names[f.state], f.name)
	}
	data := map[string]interface{}{"counts": counts, "total": len(figures)}
	for _, state := range credentialStates {
		if state == stateHealthy {
			continue
		}
		list := names[state]
		data[state+"_truncated"] = len(list) > maxNamesPerState
		if len(list) > maxNamesPerState {
			list = list[:maxNamesPerState]
		}
		if list == nil {
			list = []string{}
		}
		data[state] = list
	}
	return &logical.Response{Data: data}, nil
}

const statusHelp = `
Tells an operator or a monitoring system how a credential is doing, with no
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
	named, err := b.namedCredential(ctx, req, d)
	if err != nil {
		return nil, err
	}
	ref, cfg := named.ref, named.cfg
	sess, err := b.session(ctx, req.Storage, ref.name)
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
