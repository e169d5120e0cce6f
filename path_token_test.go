package iris

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

func TestTokenReadServesOneSharedToken(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.iris.ResetStats()

	// The verifying grant of the config write seeded the session.
	first := env.readToken("demo")
	require.Zero(t, env.iris.Stats().Requests)
	require.ElementsMatch(t, []string{"access_token", "token_type", "scope", "expires_at", "expires_in", "ttl", "rotation_period", "last_vault_rotation"}, keys(first.Data))
	// Vault Agent needs JSON integers: a string ttl crashes it.
	require.Equal(t, int64(2400), first.Data["ttl"])
	require.Equal(t, int64(2400), first.Data["rotation_period"])
	require.Equal(t, int64(3600), first.Data["expires_in"])

	env.clock.Advance(1000 * time.Second)
	second := env.readToken("demo")
	require.Equal(t, first.Data["access_token"], second.Data["access_token"])
	require.Equal(t, int64(1400), second.Data["ttl"])
	require.Equal(t, int64(2400), second.Data["rotation_period"])
	require.Equal(t, int64(2600), second.Data["expires_in"])
	require.Zero(t, env.iris.Stats().Requests)
	env.assertNoSecrets(demoUser)
}

func TestTokenRefreshPoint(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	first := env.readToken("demo")
	firstRefresh := env.storedSession("demo").RefreshToken
	require.NotEmpty(t, firstRefresh)
	env.iris.ResetStats()

	env.clock.Advance(2399 * time.Second)
	require.Equal(t, first.Data["access_token"], env.readToken("demo").Data["access_token"])
	require.Equal(t, int64(1), env.readToken("demo").Data["ttl"], "ttl is never below 1")
	require.Zero(t, env.iris.Stats().Requests)

	env.clock.Advance(time.Second)
	second := env.readToken("demo")
	require.NotEqual(t, first.Data["access_token"], second.Data["access_token"])
	require.Equal(t, 1, env.iris.Stats().RefreshGrants)
	require.Zero(t, env.iris.Stats().PasswordGrants)
	active, _ := env.iris.Introspect(second.Data["access_token"].(string))
	require.True(t, active)

	// The rotated refresh token was stored before the token was returned.
	stored := env.storedSession("demo")
	require.NotEqual(t, firstRefresh, stored.RefreshToken)
	require.Equal(t, second.Data["access_token"], stored.AccessToken)
	require.Equal(t, 1, env.iris.LiveRefreshTokens(demoUser.Username))
	env.assertNoSecrets(demoUser)
}

func TestTokenRefreshFloor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		floor        string
		wantRotation int64
	}{
		{"0", 2400},
		{"10m", 2400},  // less than a third: the third wins
		{"30m", 1800},  // more than a third
		{"50m", 1800},  // capped at half the lifetime
		{"2h", 1800},   // capped at half the lifetime
		{"1800", 1800}, // plain seconds
	}
	for _, tc := range cases {
		t.Run(tc.floor, func(t *testing.T) {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, map[string]interface{}{"refresh_floor": tc.floor})
			require.Equal(t, tc.wantRotation, env.readToken("demo").Data["rotation_period"])
		})
	}
}

func TestTokenFallsBackToPasswordGrant(t *testing.T) {
	t.Parallel()
	t.Run("refresh token refused", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, nil)
		env.readToken("demo")
		env.iris.RevokeAll(demoUser.Username)
		env.iris.ResetStats()
		env.clock.Advance(2400 * time.Second)
		resp := env.readToken("demo")
		active, _ := env.iris.Introspect(resp.Data["access_token"].(string))
		require.True(t, active)
		require.Equal(t, 1, env.iris.Stats().PasswordGrants)
		require.Equal(t, 1, env.iris.Stats().Rejected)
	})
	t.Run("API user without refresh tokens", func(t *testing.T) {
		legacy := demoUser
		legacy.NoRefreshTokens = true
		env := newTestEnv(t, legacy)
		env.writeConfig("demo", legacy, nil)
		env.readToken("demo")
		require.Empty(t, env.storedSession("demo").RefreshToken)
		env.iris.ResetStats()
		env.clock.Advance(2400 * time.Second)
		env.readToken("demo")
		require.Equal(t, 1, env.iris.Stats().PasswordGrants)
		require.Zero(t, env.iris.Stats().Rejected)
	})
}

func TestTokenOutage(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	first := env.readToken("demo")
	refreshBefore := env.storedSession("demo").RefreshToken

	env.iris.SetFault(&iristest.Fault{Status: http.StatusServiceUnavailable})
	env.clock.Advance(2500 * time.Second)
	resp := env.readToken("demo")
	require.Equal(t, first.Data["access_token"], resp.Data["access_token"], "the current token is served while it lasts")
	require.Equal(t, int64(15), resp.Data["ttl"], "a short ttl brings Agent back soon")
	require.Len(t, resp.Warnings, 1)
	require.Contains(t, resp.Warnings[0], "HTTP 503")
	require.Empty(t, env.storedSession("demo").RefreshToken, "a 503 may come after IRIS acted: the refresh token is not sent again")
	require.NotEmpty(t, refreshBefore)

	// Close to the floor (the larger of 60 s and 5% of the lifetime) the ttl
	// shrinks so that the next read is still in time, and below it the
	// error is returned.
	env.clock.Advance(3600*time.Second - 2500*time.Second - 190*time.Second)
	resp = env.readToken("demo")
	require.Equal(t, int64(10), resp.Data["ttl"])
	env.clock.Advance(11 * time.Second)
	_, err := env.request(logical.ReadOperation, "token/demo", nil)
	var coded logical.HTTPCodedError
	require.ErrorAs(t, err, &coded)
	require.Equal(t, http.StatusServiceUnavailable, coded.Code())

	// IRIS is back: one password grant, and the old refresh token is never
	// sent again.
	env.iris.SetFault(nil)
	env.iris.ResetStats()
	resp = env.readToken("demo")
	require.NotEqual(t, first.Data["access_token"], resp.Data["access_token"])
	require.Equal(t, 1, env.iris.Stats().PasswordGrants)
	require.Zero(t, env.iris.Stats().RefreshGrants+env.iris.Stats().RefreshReuse)
}

func TestTokenDropsRefusedRefreshToken(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.readToken("demo")
	rotatePassword(env)
	env.clock.Advance(2400 * time.Second)
	resp := env.readToken("demo")
	require.Len(t, resp.Warnings, 1, "still served: IRIS refused, but the token lives")
	require.Contains(t, resp.Warnings[0], "invalid_grant")
	require.Empty(t, env.storedSession("demo").RefreshToken, "a refused refresh token is never sent again")
}

func TestTokenSessionFollowsConfig(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	first := env.readToken("demo")

	// Settings that do not change the token keep the session.
	env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "5m", "verify": false})
	require.NotNil(t, env.storedSession("demo"))
	require.Equal(t, first.Data["access_token"], env.readToken("demo").Data["access_token"])

	// New credentials or scopes drop it.
	env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"scopes": "api", "verify": false})
	require.Nil(t, env.storedSession("demo"))
	second := env.readToken("demo")
	require.NotEqual(t, first.Data["access_token"], second.Data["access_token"])
	require.Equal(t, "api", second.Data["scope"])

	env.mustRequest(logical.DeleteOperation, "config/demo", nil)
	require.Nil(t, env.storedSession("demo"))
	_, err := env.request(logical.ReadOperation, "token/demo", nil)
	var coded logical.HTTPCodedError
	require.ErrorAs(t, err, &coded)
	require.Equal(t, http.StatusBadRequest, coded.Code())
}

func TestTokenGrantRacingConfigChange(t *testing.T) {
	t.Parallel()
	t.Run("update", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"verify": false})
		var once sync.Once
		env.b.afterGrant = func(string) {
			// The config changes after IRIS answered and before the
			// session is written back.
			once.Do(func() {
				env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"scopes": "api", "verify": false})
			})
		}
		resp := env.readToken("demo")
		require.Equal(t, "api", resp.Data["scope"], "the stale grant was dropped and the read retried with the new config")
		require.Equal(t, "api", env.storedSession("demo").Scope)
		require.Equal(t, 2, env.iris.Stats().PasswordGrants)
	})
	t.Run("delete", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"verify": false})
		env.b.afterGrant = func(string) {
			env.mustRequest(logical.DeleteOperation, "config/demo", nil)
		}
		_, err := env.request(logical.ReadOperation, "token/demo", nil)
		require.ErrorContains(t, err, "changed or deleted while its token was being replaced")
		var coded logical.HTTPCodedError
		require.ErrorAs(t, err, &coded)
		require.Equal(t, http.StatusConflict, coded.Code())
		require.Nil(t, env.storedSession("demo"), "delete always wins")
	})
}

func TestTokenBackgroundRefresh(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.writeConfig("idle", demoUser, nil)
	first := env.readToken("demo")
	env.iris.ResetStats()

	// Not yet half its life (1800 s), the earliest a spread-out background
	// refresh may come: nothing happens.
	env.clock.Advance(1700 * time.Second)
	env.readToken("demo")
	env.periodic()
	require.Zero(t, env.iris.Stats().Requests)

	// Within the lead of the refresh point (2400 s less 120 s): the session
	// in use is replaced ahead of time, the idle one is left to expire.
	env.clock.Advance(600 * time.Second)
	env.periodic()
	require.Equal(t, 1, env.iris.Stats().RefreshGrants)
	resp := env.readToken("demo")
	require.NotEqual(t, first.Data["access_token"], resp.Data["access_token"])
	require.Equal(t, 1, env.iris.Stats().RefreshGrants, "the read found a fresh token")

	// Nobody read the new token yet: the next tick leaves it alone.
	env.clock.Advance(time.Minute)
	env.periodic()
	require.Equal(t, 1, env.iris.Stats().RefreshGrants)
}

func TestTokenReplicationStates(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		state     consts.ReplicationState
		localMnt  bool
		canRotate bool
	}{
		{"primary", 0, false, true},
		{"performance standby", consts.ReplicationPerformanceStandby, false, false},
		{"performance secondary", consts.ReplicationPerformanceSecondary, false, false},
		{"performance secondary, local mount", consts.ReplicationPerformanceSecondary, true, true},
		{"DR secondary", consts.ReplicationDRSecondary, false, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, nil)
			first := env.readToken("demo")
			env.sysView.ReplicationStateVal = tc.state
			env.sysView.LocalMountVal = tc.localMnt
			env.iris.ResetStats()

			// A fresh session is served by any node.
			require.Equal(t, first.Data["access_token"], env.readToken("demo").Data["access_token"])

			env.clock.Advance(2350 * time.Second)
			env.periodic()
			env.clock.Advance(50 * time.Second)
			_, err := env.request(logical.ReadOperation, "token/demo", nil)
			if tc.canRotate {
				require.NoError(t, err)
				require.Equal(t, 1, env.iris.Stats().RefreshGrants)
				return
			}
			require.ErrorIs(t, err, logical.ErrReadOnly, "Vault forwards the read to the active node")
			require.Zero(t, env.iris.Stats().Requests, "no grant on a node that cannot store its result")
		})
	}
}

func TestTokenMountsAreIsolated(t *testing.T) {
	t.Parallel()
	other := iristest.User{ClientID: "0oa-other", ClientSecret: "other-secret", Username: "other-user", Password: "other-password"}
	env := newTestEnv(t, demoUser, other)
	b2, s2, _ := env.newBackend()
	env.writeConfig("demo", demoUser, nil)
	data := map[string]interface{}{"client_id": other.ClientID, "client_secret": other.ClientSecret,
		"username": other.Username, "password": other.Password, "token_url": env.iris.TokenURL}
	_, err := env.requestOn(b2, s2, logical.CreateOperation, "config/demo", data)
	require.NoError(t, err)

	a := env.readToken("demo")
	resp, err := env.requestOn(b2, s2, logical.ReadOperation, "token/demo", nil)
	require.NoError(t, err)
	require.NotEqual(t, a.Data["access_token"], resp.Data["access_token"])
	again, err := env.requestOn(b2, s2, logical.ReadOperation, "token/demo", nil)
	require.NoError(t, err)
	require.Equal(t, resp.Data["access_token"], again.Data["access_token"])
	require.Equal(t, a.Data["access_token"], env.readToken("demo").Data["access_token"])
}

func TestTokenConcurrentReadsCauseOneGrant(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	first := env.readToken("demo")
	env.iris.ResetStats()
	env.clock.Advance(2400 * time.Second)

	const readers = 1000
	var wg sync.WaitGroup
	tokens := make([]string, readers)
	errs := make([]error, readers)
	start := make(chan struct{})
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := env.request(logical.ReadOperation, "token/demo", nil)
			errs[i] = err
			if err == nil {
				tokens[i] = resp.Data["access_token"].(string)
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := range readers {
		require.NoError(t, errs[i])
		require.NotEqual(t, first.Data["access_token"], tokens[i])
		require.Equal(t, tokens[0], tokens[i])
	}
	stats := env.iris.Stats()
	require.Equal(t, 1, stats.RefreshGrants+stats.PasswordGrants, "exactly one grant")
	require.Zero(t, stats.RefreshReuse)
}

// Through the backend: a token/ read whose refresh answer was lost never
// sends that refresh token again. The same read logs in with the password
// grant instead; when IRIS cannot answer that either, the current token is
// served and the session keeps no refresh token.
func TestLostRefreshIsNeverSentAgain(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		fault   iristest.Fault
		warning string
	}{
		{"answer lost after a timeout", iristest.Fault{AfterHandling: true, Delay: time.Hour}, "did not answer in time"},
		{"500 after the refresh", iristest.Fault{AfterHandling: true, Status: 500}, "HTTP 500"},
		{"connection dropped after the refresh", iristest.Fault{AfterHandling: true, DropConnection: true}, "could not be reached"},
	}
	for _, tc := range cases {
		t.Run(tc.name+": the same read logs in", func(t *testing.T) {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, map[string]interface{}{"request_timeout": 1})
			first := env.readToken("demo")
			spent := env.storedSession("demo").RefreshToken
			require.NotEmpty(t, spent)

			env.clock.Advance(2400 * time.Second)
			env.iris.ResetStats()
			env.iris.FailNext(1, tc.fault)
			resp := env.readToken("demo")
			require.NotEqual(t, first.Data["access_token"], resp.Data["access_token"])
			require.Empty(t, resp.Warnings)
			active, _ := env.iris.Introspect(resp.Data["access_token"].(string))
			require.True(t, active)
			st := env.iris.Stats()
			require.Equal(t, 1, st.PasswordGrants, "the possibly spent refresh token is replaced by one password grant")
			require.Zero(t, st.RefreshReuse)
			fresh := env.storedSession("demo").RefreshToken
			require.NotEmpty(t, fresh)
			require.NotEqual(t, spent, fresh)

			// Not stranded: the next rotation uses the new refresh token.
			env.iris.ResetStats()
			env.clock.Advance(2400 * time.Second)
			resp = env.readToken("demo")
			require.Empty(t, resp.Warnings)
			st = env.iris.Stats()
			require.Equal(t, 1, st.RefreshGrants)
			require.Zero(t, st.PasswordGrants)
			require.Zero(t, st.RefreshReuse)
			require.Equal(t, fresh, env.iris.Requests()[0].RefreshToken)
			env.assertNoSecrets(demoUser)
		})
	}
	t.Run("IRIS down for the login too: the current token is served, the refresh token dropped", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"request_timeout": 1})
		first := env.readToken("demo")
		spent := env.storedSession("demo").RefreshToken

		env.clock.Advance(2400 * time.Second)
		env.iris.ResetStats()
		env.iris.FailNext(1, iristest.Fault{AfterHandling: true, Status: 500})
		env.iris.SetFault(&iristest.Fault{Status: 503})
		resp := env.readToken("demo")
		require.Equal(t, first.Data["access_token"], resp.Data["access_token"], "the current token is served meanwhile")
		require.Len(t, resp.Warnings, 1)
		require.Empty(t, env.storedSession("demo").RefreshToken, "a possibly spent refresh token is not kept")

		env.iris.SetFault(nil)
		env.iris.ResetStats()
		resp = env.readToken("demo")
		require.NotEqual(t, first.Data["access_token"], resp.Data["access_token"])
		st := env.iris.Stats()
		require.Equal(t, 1, st.PasswordGrants)
		require.Zero(t, st.RefreshGrants+st.RefreshReuse)
		for _, r := range env.iris.Requests() {
			require.NotEqual(t, spent, r.RefreshToken)
		}
	})
	t.Run("a refresh IRIS provably never saw keeps its token", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, map[string]interface{}{"request_timeout": 1})
		env.readToken("demo")
		kept := env.storedSession("demo").RefreshToken

		env.clock.Advance(2400 * time.Second)
		env.iris.SetFault(&iristest.Fault{Status: 429})
		resp := env.readToken("demo")
		require.Len(t, resp.Warnings, 1)
		require.Equal(t, kept, env.storedSession("demo").RefreshToken, "429 comes before any processing")
	})
}

// The Vault Secrets Operator treats a response without a lease as a rotating
// static secret only when its data has last_vault_rotation (RFC 3339) and a
// rotation_period of at least 1; it then re-syncs once the period has passed
// since the last rotation, which must therefore be when the current token
// was obtained.
func TestTokenResponseMeetsTheSecretsOperatorRule(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	first := env.readToken("demo")
	obtained := env.storedSession("demo").ObtainedAt

	rotated, err := time.Parse(time.RFC3339, first.Data["last_vault_rotation"].(string))
	require.NoError(t, err)
	require.Equal(t, obtained.Truncate(time.Second).UTC(), rotated)
	period, ok := first.Data["rotation_period"].(int64)
	require.True(t, ok, "an integer")
	require.GreaterOrEqual(t, period, int64(1))
	require.Nil(t, first.Secret)
	// The next rotation is due one period after the last.
	require.WithinDuration(t, obtained.Add(2400*time.Second), rotated.Add(time.Duration(period)*time.Second), time.Second)

	env.clock.Advance(time.Duration(period+1) * time.Second)
	second := env.readToken("demo")
	require.NotEqual(t, first.Data["access_token"], second.Data["access_token"])
	require.NotEqual(t, first.Data["last_vault_rotation"], second.Data["last_vault_rotation"], "each rotation moves it")
}
