package iris

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// A lease belongs to the API user that issued it. Another API user given the
// same name since (re-created, or repointed at another client or username)
// neither renews it nor revokes its token.
func TestLeaseBoundToItsCredential(t *testing.T) {
	t.Parallel()
	other := iristest.User{ClientID: "0oa-other-client", ClientSecret: "other-secret-Vb61", Username: "other-api-user", Password: "other-password-Qz08"}
	replacements := []struct {
		name    string
		replace func(env *testEnv)
	}{
		{"deleted and re-created", func(env *testEnv) {
			env.mustRequest(logical.DeleteOperation, "config/demo", nil)
			env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true, "revocation_url": env.iris.RevocationURL})
		}},
		{"client_id swapped", func(env *testEnv) {
			env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"client_id": other.ClientID, "client_secret": other.ClientSecret, "verify": false})
		}},
		{"username swapped", func(env *testEnv) {
			env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"username": other.Username, "password": other.Password, "verify": false})
		}},
	}
	for _, tc := range replacements {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true, "revocation_url": env.iris.RevocationURL})
			lease := issued(env.readCreds("demo"), time.Now())
			tc.replace(env)
			env.iris.ResetStats()

			_, err := env.renew(lease, 0)
			require.ErrorContains(t, err, "replaced by another credential of the same name")
			require.ErrorContains(t, err, "read iris/creds/demo again")
			require.NoError(t, env.revoke(lease))
			st := env.iris.Stats()
			require.Zero(t, st.Requests+st.Revocations, "nothing is sent for a lease of another API user")
		})
	}
	t.Run("a password change is the same API user", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
		lease := issued(env.readCreds("demo"), time.Now())
		env.iris.SetPassword(demoUser.Username, "rotated-by-admin")
		env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": "rotated-by-admin"})
		_, err := env.renew(lease, 0)
		require.NoError(t, err)
	})
}

func TestRenewalTTLCappedByConfigTTL(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true, "ttl": "10m"})
	lease := issued(env.readCreds("demo"), time.Now())
	require.Equal(t, 10*time.Minute, lease.TTL)

	renewed, err := env.renew(lease, 24*time.Hour)
	require.NoError(t, err)
	require.Equal(t, 10*time.Minute, renewed.Secret.TTL)
	// Vault lets an increment override TTL; only MaxTTL caps it.
	require.LessOrEqual(t, renewed.Secret.MaxTTL, 10*time.Minute+time.Second)
}

func TestTokenInsideLeaseMarginIsNeverLeased(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.iris.SetTokenLifetime(time.Second)
	_, err := env.request(logical.ReadOperation, "creds/demo", nil)
	var coded logical.HTTPCodedError
	require.ErrorAs(t, err, &coded)
	require.Equal(t, http.StatusBadGateway, coded.Code())
	require.ErrorContains(t, err, "expires within the lease margin")
}

// A revocation endpoint that accepts connections and never answers costs
// one timeout, not one per lease: revoking a mount's leases (an unmount)
// must not stall.
func TestHangingRevocationEndpointCostsOneTimeout(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(release) })

	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": hang.URL + "/revoke", "request_timeout": 1})
	var leases []*logical.Secret
	for range 50 {
		leases = append(leases, issued(env.readCreds("demo"), time.Now()))
	}
	for _, lease := range leases {
		require.NoError(t, env.revoke(lease))
	}
	require.Equal(t, int32(1), hits.Load(), "after one timeout, remote revocation is skipped")

	env.clock.Advance(revocationPause + time.Second)
	require.NoError(t, env.revoke(leases[0]))
	require.Equal(t, int32(2), hits.Load(), "and tried again once the pause is over")
}
