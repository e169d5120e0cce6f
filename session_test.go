package iris

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// A refresh token nobody holds any more is revoked, where the API user has a
// revocation endpoint: one left alive at IRIS would be a credential nobody
// watches.
func TestAbandonedSessionRefreshTokenIsRevoked(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": env.iris.RevocationURL})
	require.Equal(t, 1, env.iris.LiveRefreshTokens(demoUser.Username))

	// A verified write replaces the session with its own grant's.
	env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "30m"})
	require.Equal(t, 1, env.iris.LiveRefreshTokens(demoUser.Username))
	require.Equal(t, 1, env.iris.Stats().Revocations)

	// A non-renewable creds/ read asks for no refresh token at all.
	env.readCreds("demo")
	require.Equal(t, 1, env.iris.LiveRefreshTokens(demoUser.Username))

	env.mustRequest(logical.DeleteOperation, "config/demo", nil)
	require.Zero(t, env.iris.LiveRefreshTokens(demoUser.Username))
}

// A refresh token IRIS refused is dropped even when the password grant that
// follows fails for another reason.
func TestRefusedRefreshTokenIsDroppedWhenTheFallbackFails(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	refused := env.storedSession("demo").RefreshToken
	env.iris.RevokeAll(demoUser.Username)
	env.clock.Advance(2400 * time.Second)
	// The refresh is refused; every password grant then meets a 503.
	env.iris.SetFault(&iristest.Fault{Status: 503})
	env.iris.FailNext(1, iristest.Fault{}) // the refresh itself is answered normally
	resp := env.readToken("demo")
	require.Len(t, resp.Warnings, 1)
	require.Empty(t, env.storedSession("demo").RefreshToken)

	env.iris.SetFault(nil)
	env.iris.ResetStats()
	env.readToken("demo")
	for _, r := range env.iris.Requests() {
		require.NotEqual(t, refused, r.RefreshToken)
	}
}
