//go:build e2e

package e2e

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDurability stops a Vault server with file storage and starts it again:
// configs and leases live in Vault's storage, and the plugin process that
// comes back must carry on with them.
func TestDurability(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	v := startFileVault(t, rec)
	t.Cleanup(func() { v.finish(t) })

	em := newEmulator(t, rec, 600*time.Second)
	v.writeConfig(t, "durable", em, "renewable_leases=true", "ttl=5m")
	renewable := v.readCreds(t, "durable")
	require.True(t, renewable.Renewable)
	other := v.readCreds(t, "durable")
	refreshToken := em.issuedFor(t, renewable.Data.AccessToken).RefreshToken
	require.NotEmpty(t, refreshToken)

	v.stop()
	v.restart(t)

	var list struct {
		Details []struct{ Name, Version string } `json:"details"`
	}
	v.cliJSON(t, &list, "plugin", "list", "-format=json", "-detailed", "secret")
	registered := false
	for _, p := range list.Details {
		registered = registered || (p.Name == pluginName && p.Version == pluginVersion)
	}
	assert.True(t, registered, "the plugin registration did not survive the restart")

	cfg := v.readConfig(t, "durable")
	assert.Equal(t, em.User.ClientID, cfg.ClientID)
	assert.True(t, cfg.RenewableLeases)
	assert.Equal(t, 300, cfg.TTL)
	assert.Contains(t, v.listConfigs(t), "durable")

	// The lease's refresh token was in Vault's lease storage across the
	// restart.
	r := v.renewLease(t, renewable.LeaseID)
	require.NotEmpty(t, r.Data.AccessToken)
	assert.NotEqual(t, renewable.Data.AccessToken, r.Data.AccessToken)
	refreshes := em.refreshRequests()
	require.Len(t, refreshes, 1)
	assert.Equal(t, refreshToken, refreshes[0].RefreshToken)
	assert.Zero(t, em.Stats().RefreshReuse)
	_, tokenExpiry := em.Introspect(r.Data.AccessToken)
	assert.False(t, v.lookupLease(t, renewable.LeaseID).ExpireTime.After(tokenExpiry))

	// The secrets are still in storage: a new read works without rewriting
	// the config.
	v.readCreds(t, "durable")

	for _, l := range []leasedToken{renewable, other} {
		v.mustCLI(t, "lease", "revoke", l.LeaseID)
		v.waitLeaseGone(t, l.LeaseID)
	}
}
