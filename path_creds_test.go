package iris

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

func TestCredsReadReturnsLeasedToken(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.iris.ResetStats()

	resp := env.readCreds("demo")
	require.Equal(t, 1, env.iris.Stats().PasswordGrants)

	active, expiresAt := env.iris.Introspect(resp.Data["access_token"].(string))
	require.True(t, active)
	require.Equal(t, "Bearer", resp.Data["token_type"])
	require.Equal(t, "api", resp.Data["scope"], "a non-renewable lease keeps no refresh token, so it asks for none")
	require.Empty(t, env.iris.Issued()[len(env.iris.Issued())-1].RefreshToken)
	require.Equal(t, expiresAt.UTC().Format(time.RFC3339), resp.Data["expires_at"])
	require.Equal(t, int64(3600), resp.Data["expires_in"])
	require.ElementsMatch(t, []string{"access_token", "token_type", "scope", "expires_at", "expires_in"}, keys(resp.Data))

	// The lease ends before the token: 3600 s less min(10%, 60 s).
	require.Equal(t, 3540*time.Second, resp.Secret.TTL)
	require.False(t, resp.Secret.Renewable, "leases are not renewable by default")
	require.Empty(t, resp.Secret.InternalData["refresh_token"], "a lease that cannot renew keeps no refresh token")

	// The request was the documented password grant.
	reqs := env.iris.Requests()
	last := reqs[len(reqs)-1]
	require.Equal(t, "password", last.GrantType)
	require.Equal(t, demoUser.Username, last.Username)
	require.Equal(t, "api", last.Scope)

	whole, err := json.Marshal(resp.Data)
	require.NoError(t, err)
	require.NotContains(t, string(whole), "refresh")
	env.assertNoSecrets(demoUser)
}

func TestCredsBasicHeaderUsesRawSecret(t *testing.T) {
	t.Parallel()
	// The emulator accepts only base64 of the raw pair, as Trackunit
	// documents it; a form-escaped secret ("s3cret%2Bclient%252Fsecret")
	// would be refused with invalid_client.
	require.Contains(t, demoUser.ClientSecret, "+")
	require.Contains(t, demoUser.ClientSecret, "%")
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.readCreds("demo")
	require.Zero(t, env.iris.Stats().Rejected)

	var seen string
	srv := newHeaderRecorder(t, &seen)
	cfg := &credential{ClientID: demoUser.ClientID, ClientSecret: demoUser.ClientSecret, TokenURL: srv, Username: "u", Password: "p", RequestTimeout: time.Second}
	_, _ = env.b.logIn(context.Background(), credentialRef{name: "recorder"}, cfg, false)
	require.Equal(t, "Basic "+base64.StdEncoding.EncodeToString([]byte(demoUser.ClientID+":"+demoUser.ClientSecret)), seen)
}

func TestCredsLeaseNeverOutlivesToken(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		lifetime time.Duration
		config   map[string]interface{}
		wantTTL  time.Duration
	}{
		{"hour token", time.Hour, nil, 3540 * time.Second},
		{"short token keeps a 10% margin", 30 * time.Second, nil, 27 * time.Second},
		{"config ttl is lower", time.Hour, map[string]interface{}{"ttl": "10m"}, 10 * time.Minute},
		{"config ttl is higher", 5 * time.Minute, map[string]interface{}{"ttl": "1h"}, 270 * time.Second},
		{"max_ttl caps a non-renewable lease", time.Hour, map[string]interface{}{"max_ttl": "20m"}, 20 * time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t)
			env.iris.SetTokenLifetime(tc.lifetime)
			env.writeConfig("demo", demoUser, tc.config)
			resp := env.readCreds("demo")
			require.Equal(t, tc.wantTTL, resp.Secret.TTL)
			require.LessOrEqual(t, resp.Secret.MaxTTL, tc.lifetime)
		})
	}
}

func TestCredsRenewRotatesRefreshToken(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.iris.SetTokenLifetime(10 * time.Minute)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
	env.iris.ResetStats()

	resp := env.readCreds("demo")
	require.True(t, resp.Secret.Renewable)
	lease := issued(resp, time.Now())
	firstToken := resp.Data["access_token"].(string)
	refreshToken := lease.InternalData["refresh_token"].(string)
	require.NotEmpty(t, refreshToken)

	var seenAccess = map[string]bool{firstToken: true}
	for i := 0; i < 3; i++ {
		env.clock.Advance(5 * time.Minute)
		renewed, err := env.renew(lease, 0)
		require.NoError(t, err)
		newToken := renewed.Data["access_token"].(string)
		require.False(t, seenAccess[newToken], "each renewal returns a new access token")
		seenAccess[newToken] = true
		active, _ := env.iris.Introspect(newToken)
		require.True(t, active)
		require.ElementsMatch(t, []string{"access_token", "token_type", "scope", "expires_at", "expires_in"}, keys(renewed.Data))

		// Vault stores what the handler returns: the rotated refresh token
		// replaces the old one, and the secret type survives.
		require.Equal(t, secretTypeAccessToken, renewed.Secret.InternalData["secret_type"])
		rotated := renewed.Secret.InternalData["refresh_token"].(string)
		require.NotEqual(t, refreshToken, rotated)
		refreshToken = rotated
		require.Equal(t, 540*time.Second, renewed.Secret.TTL)
		lease = renewed.Secret
	}

	stats := env.iris.Stats()
	require.Equal(t, 3, stats.RefreshGrants)
	require.Equal(t, 1, stats.PasswordGrants)
	require.Zero(t, stats.RefreshReuse, "no refresh token is sent twice")
	sent := map[string]bool{}
	for _, r := range env.iris.Requests() {
		if r.RefreshToken != "" {
			require.False(t, sent[r.RefreshToken])
			sent[r.RefreshToken] = true
		}
	}
	env.assertNoSecrets(demoUser)
}

func TestCredsRenewIncrementCannotOutliveToken(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.iris.SetTokenLifetime(10 * time.Minute)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
	issuedAt := env.clock.Now()
	lease := issued(env.readCreds("demo"), issuedAt)
	env.clock.Advance(5 * time.Minute)

	renewed, err := env.renew(lease, 24*time.Hour)
	require.NoError(t, err)
	// Vault applies the increment, then caps it with MaxTTL counted from
	// the issue time: the lease must end no later than the new token.
	leaseEnd := issuedAt.Truncate(time.Second).Add(renewed.Secret.MaxTTL)
	expiresAt, err := time.Parse(time.RFC3339, renewed.Data["expires_at"].(string))
	require.NoError(t, err)
	require.False(t, leaseEnd.After(expiresAt), "lease ends %s, token %s", leaseEnd, expiresAt)
	require.True(t, leaseEnd.After(expiresAt.Add(-2*time.Minute)), "the cap is the token's end, not much earlier")
}

func TestCredsRenewRespectsMaxTTLBeforeCallingIRIS(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true, "max_ttl": "1h"})
	lease := issued(env.readCreds("demo"), time.Now().Add(-2*time.Hour))
	before := env.iris.Stats().Requests

	_, err := env.renew(lease, 0)
	require.ErrorContains(t, err, "max TTL")
	require.ErrorContains(t, err, `API user "demo"`)
	require.Equal(t, before, env.iris.Stats().Requests, "a renewal Vault would refuse spends no refresh token")
}

func TestCredsRenewFallsBackToPasswordGrant(t *testing.T) {
	t.Parallel()
	t.Run("refresh token refused", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
		lease := issued(env.readCreds("demo"), time.Now())
		env.iris.RevokeAll(demoUser.Username)
		env.iris.ResetStats()

		renewed, err := env.renew(lease, 0)
		require.NoError(t, err)
		require.NotEmpty(t, renewed.Data["access_token"])
		stats := env.iris.Stats()
		require.Equal(t, 1, stats.PasswordGrants)
		require.Equal(t, 1, stats.Rejected)
		require.NotEmpty(t, renewed.Secret.InternalData["refresh_token"])
	})
	t.Run("API user without refresh tokens", func(t *testing.T) {
		legacy := demoUser
		legacy.NoRefreshTokens = true
		env := newTestEnv(t, legacy)
		env.writeConfig("demo", legacy, map[string]interface{}{"renewable_leases": true})
		lease := issued(env.readCreds("demo"), time.Now())
		require.Empty(t, lease.InternalData["refresh_token"])
		env.iris.ResetStats()

		renewed, err := env.renew(lease, 0)
		require.NoError(t, err)
		require.NotEmpty(t, renewed.Data["access_token"])
		stats := env.iris.Stats()
		require.Equal(t, 1, stats.PasswordGrants)
		require.Zero(t, stats.RefreshGrants)
		require.Zero(t, stats.Rejected)
	})
}

func TestCredsRenewFailsClearly(t *testing.T) {
	t.Parallel()
	t.Run("config deleted", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
		lease := issued(env.readCreds("demo"), time.Now())
		env.mustRequest(logical.DeleteOperation, "config/demo", nil)
		_, err := env.renew(lease, 0)
		require.ErrorContains(t, err, "the credential that issued this lease no longer exists at iris/config/demo")
		require.ErrorContains(t, err, "read iris/creds/demo again")
	})
	t.Run("renewal switched off", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
		lease := issued(env.readCreds("demo"), time.Now())
		env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"renewable_leases": false})
		_, err := env.renew(lease, 0)
		require.ErrorContains(t, err, "renewal is disabled")
	})
	t.Run("password changed at IRIS", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
		lease := issued(env.readCreds("demo"), time.Now())
		rotatePassword(env)
		_, err := env.renew(lease, 0)
		require.ErrorContains(t, err, "invalid_grant")
		require.ErrorContains(t, err, "wrong username or password")
		env.assertNoSecrets(demoUser)
	})
}

func TestCredsRevoke(t *testing.T) {
	t.Parallel()
	t.Run("with revocation_url", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true, "revocation_url": env.iris.RevocationURL})
		resp := env.readCreds("demo")
		lease := issued(resp, time.Now())
		env.iris.ResetStats()
		require.NoError(t, env.revoke(lease))
		require.Equal(t, 1, env.iris.Stats().Revocations)
		// The refresh token is dead at IRIS: a renewal would have to log in.
		_, err := env.renew(lease, 0)
		require.NoError(t, err)
		require.Equal(t, 1, env.iris.Stats().PasswordGrants)
	})
	t.Run("non-renewable lease revokes its access token", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": env.iris.RevocationURL})
		resp := env.readCreds("demo")
		require.NoError(t, env.revoke(issued(resp, time.Now())))
		active, _ := env.iris.Introspect(resp.Data["access_token"].(string))
		require.False(t, active)
	})
	t.Run("config deleted", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": env.iris.RevocationURL})
		lease := issued(env.readCreds("demo"), time.Now())
		env.mustRequest(logical.DeleteOperation, "config/demo", nil)
		env.iris.ResetStats()
		require.NoError(t, env.revoke(lease))
		require.Zero(t, env.iris.Stats().Requests+env.iris.Stats().Revocations)
	})
	t.Run("IRIS unreachable", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": env.iris.RevocationURL})
		lease := issued(env.readCreds("demo"), time.Now())
		env.iris.Close()
		require.NoError(t, env.revoke(lease))
	})
	t.Run("without revocation_url", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, nil)
		lease := issued(env.readCreds("demo"), time.Now())
		env.iris.ResetStats()
		require.NoError(t, env.revoke(lease))
		require.Zero(t, env.iris.Stats().Revocations)
	})
}

func TestCredsErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		setup      func(env *testEnv)
		wantStatus int
		wantText   []string
	}{
		{"unknown credential", func(env *testEnv) { env.mustRequest(logical.DeleteOperation, "config/demo", nil) },
			http.StatusBadRequest, []string{`no credential "demo"`, "write it to iris/config/demo"}},
		{"password changed", rotatePassword,
			http.StatusBadGateway, []string{"invalid_grant", "The credentials provided were invalid.", "wrong username or password", `API user "demo"`}},
		{"IRIS down", func(env *testEnv) { env.iris.SetFault(&iristest.Fault{Status: 503}) },
			http.StatusServiceUnavailable, []string{"HTTP 503", "after 3 attempts"}},
		{"rate limited", func(env *testEnv) { env.iris.SetFault(&iristest.Fault{Status: 429, RetryAfter: "2"}) },
			http.StatusServiceUnavailable, []string{"rate limited"}},
		{"IRIS answers garbage", func(env *testEnv) {
			env.iris.SetFault(&iristest.Fault{Status: 200, ContentType: "text/html", Body: "<html>" + demoUser.Password + "</html>"})
		}, http.StatusBadGateway, []string{"unusable response", "not JSON"}},
		{"IRIS answers HTML error", func(env *testEnv) {
			env.iris.SetFault(&iristest.Fault{Status: 404, ContentType: "text/html", Body: "<html>not found " + demoUser.Password + "</html>"})
		}, http.StatusBadGateway, []string{"HTTP 404", "check token_url"}},
		{"IRIS unreachable", func(env *testEnv) { env.iris.Close() },
			http.StatusServiceUnavailable, []string{"could not be reached", "check token_url"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, nil)
			tc.setup(env)
			_, err := env.request(logical.ReadOperation, "creds/demo", nil)
			require.Error(t, err)
			var coded logical.HTTPCodedError
			require.ErrorAs(t, err, &coded)
			require.Equal(t, tc.wantStatus, coded.Code(), err.Error())
			for _, want := range tc.wantText {
				require.Contains(t, err.Error(), want)
			}
			env.assertNoSecrets(demoUser)
		})
	}
}

func TestCredsTimeout(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"request_timeout": 1})
	env.iris.SetFault(&iristest.Fault{Delay: time.Hour})
	_, err := env.request(logical.ReadOperation, "creds/demo", nil)
	var coded logical.HTTPCodedError
	require.ErrorAs(t, err, &coded)
	require.Equal(t, http.StatusGatewayTimeout, coded.Code())
	require.ErrorContains(t, err, "did not answer in time")
}

// newHeaderRecorder serves one endpoint that records the Authorization
// header it receives.
func newHeaderRecorder(t *testing.T, seen *string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		*seen = r.Header.Get("Authorization")
		w.WriteHeader(http.StatusBadRequest)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestCredsRenewAfterCredentialChangeLogsInAgain(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
	lease := issued(env.readCreds("demo"), time.Now())
	env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"scopes": "api"})
	env.iris.ResetStats()

	renewed, err := env.renew(lease, 0)
	require.NoError(t, err)
	require.Equal(t, "api", renewed.Data["scope"])
	stats := env.iris.Stats()
	require.Equal(t, 1, stats.PasswordGrants, "the old refresh token belongs to the old config")
	require.Zero(t, stats.RefreshGrants)
}

// The same for a renewable creds/ lease: a renewal whose refresh answer was
// lost logs in within the same renewal. When that fails too, Vault keeps the
// lease's data as it was, refresh token included; the next renewal still
// does not send it.
func TestLostRefreshIsNeverSentAgainByRenewals(t *testing.T) {
	t.Parallel()
	t.Run("the same renewal logs in", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
		resp := env.readCreds("demo")
		lease := issued(resp, time.Now())

		env.iris.ResetStats()
		env.iris.FailNext(1, iristest.Fault{AfterHandling: true, Status: 500})
		renewed, err := env.renew(lease, 0)
		require.NoError(t, err)
		require.NotEqual(t, resp.Data["access_token"], renewed.Data["access_token"])
		st := env.iris.Stats()
		require.Equal(t, 1, st.PasswordGrants)
		require.Zero(t, st.RefreshReuse)

		env.iris.ResetStats()
		_, err = env.renew(renewed.Secret, 0)
		require.NoError(t, err)
		require.Equal(t, 1, env.iris.Stats().RefreshGrants)
		require.Zero(t, env.iris.Stats().PasswordGrants+env.iris.Stats().RefreshReuse)
		env.assertNoSecrets(demoUser)
	})
	t.Run("a failed renewal's refresh token is not sent by the next", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
		lease := issued(env.readCreds("demo"), time.Now())
		spent := lease.InternalData["refresh_token"].(string)

		env.iris.ResetStats()
		env.iris.FailNext(1, iristest.Fault{AfterHandling: true, Status: 500})
		env.iris.SetFault(&iristest.Fault{Status: 503})
		_, err := env.renew(lease, 0)
		require.Error(t, err)

		env.iris.SetFault(nil)
		env.iris.ResetStats()
		renewed, err := env.renew(lease, 0) // Vault kept the lease as it was
		require.NoError(t, err)
		require.NotEmpty(t, renewed.Data["access_token"])
		st := env.iris.Stats()
		require.Equal(t, 1, st.PasswordGrants)
		require.Zero(t, st.RefreshGrants+st.RefreshReuse)
		for _, r := range env.iris.Requests() {
			require.NotEqual(t, spent, r.RefreshToken)
		}
	})
}

// A renewal that IRIS turned away with a 429 keeps the lease's refresh
// token: IRIS provably never saw it, so the next renewal may send it.
func TestRateLimitedRenewalKeepsItsRefreshToken(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
	lease := issued(env.readCreds("demo"), time.Now())
	env.iris.SetFault(&iristest.Fault{Status: 429})
	_, err := env.renew(lease, 0)
	require.ErrorContains(t, err, "rate limited")

	env.iris.SetFault(nil)
	env.iris.ResetStats()
	_, err = env.renew(lease, 0)
	require.NoError(t, err)
	st := env.iris.Stats()
	require.Equal(t, 1, st.RefreshGrants)
	require.Zero(t, st.PasswordGrants+st.RefreshReuse)
}

// A bad or unknown name on any path that reads one credential is the
// caller's mistake: a 400 that says what is wrong, and no grant.
func TestCredentialPathsRefuseBadNames(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"creds", "token", "status"} {
		for name, want := range map[string]string{
			"bad name!":              "invalid name",
			"demo-":                  "invalid name",
			strings.Repeat("a", 129): "invalid name",
			"missing":                `no credential "missing" is configured`,
		} {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, nil)
			env.iris.ResetStats()
			_, err := env.request(logical.ReadOperation, prefix+"/"+name, nil)
			var coded logical.HTTPCodedError
			require.ErrorAs(t, err, &coded, "%s/%s", prefix, name)
			require.Equal(t, http.StatusBadRequest, coded.Code(), "%s/%s", prefix, name)
			require.ErrorContains(t, err, want)
			require.Zero(t, env.iris.Stats().Requests, "%s/%s", prefix, name)
		}
	}
}
