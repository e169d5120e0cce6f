package iris

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/irisauth"
	"vault-plugin-secrets-iris/iristest"
)

var refusedPassword = &irisauth.Error{Kind: irisauth.KindRejected, Grant: irisauth.GrantPassword, Code: "invalid_grant", Status: 400}

// holdConfig is a config as the book sees it: an API user at a token URL.
func holdConfig(name, username, generation string) *credential {
	return &credential{Kind: kindAPIUser, ClientID: "0oa-client", Username: username, TokenURL: "https://iris.example/token",
		Generation: generation, RequestTimeout: time.Second}
}

// gone is a context already done: admit answers it at once where it would
// wait.
func gone() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func TestHoldDoublesUpToItsMaximumAndAdmitsOneAttempt(t *testing.T) {
	t.Parallel()
	clock := newTestClock()
	gb := newGrantBook(clock.Now)
	cfg := holdConfig("demo", "user", "g1")
	tk, err := gb.admit(context.Background(), "demo", cfg, irisauth.GrantPassword)
	require.NoError(t, err)
	gb.record(tk, "demo", cfg, irisauth.GrantPassword, refusedPassword)

	want := minCredentialHold
	for range 8 {
		var held *heldError
		_, err := gb.admit(context.Background(), "demo", cfg, irisauth.GrantPassword)
		require.True(t, errors.As(err, &held))
		require.Equal(t, clock.Now().Add(want), held.until)
		require.ErrorIs(t, held, refusedPassword, "a held read answers with the refusal")

		clock.Advance(want)
		tk, err := gb.admit(context.Background(), "demo", cfg, irisauth.GrantPassword)
		require.NoError(t, err, "one attempt once the hold ran out")
		_, err = gb.admit(gone(), "demo", cfg, irisauth.GrantPassword)
		require.ErrorIs(t, err, context.Canceled, "and only one: the next waits for it")
		gb.record(tk, "demo", cfg, irisauth.GrantPassword, refusedPassword)
		want = min(2*want, maxCredentialHold)
	}
	require.Equal(t, maxCredentialHold, want)

	gb.configWritten("demo", cfg, false)
	tk, err = gb.admit(context.Background(), "demo", cfg, irisauth.GrantPassword)
	require.NoError(t, err, "a config write ends the hold")
	_, err = gb.admit(gone(), "demo", cfg, irisauth.GrantPassword)
	require.ErrorIs(t, err, context.Canceled, "but its first attempt is alone")
	gb.record(tk, "demo", cfg, irisauth.GrantPassword, nil)
	for range 3 {
		_, err = gb.admit(gone(), "demo", cfg, irisauth.GrantRefreshToken)
		require.NoError(t, err, "once one succeeded, refresh grants run concurrently")
	}
	tk, err = gb.admit(context.Background(), "demo", cfg, irisauth.GrantPassword)
	require.NoError(t, err)
	_, err = gb.admit(gone(), "demo", cfg, irisauth.GrantPassword)
	require.ErrorIs(t, err, context.Canceled, "password grants go one at a time even once proven")
	gb.record(tk, "demo", cfg, irisauth.GrantPassword, nil)
}

func TestOnlyCredentialRefusalsHold(t *testing.T) {
	t.Parallel()
	cases := []struct {
		grant irisauth.GrantType
		err   error
		holds bool
	}{
		{irisauth.GrantPassword, refusedPassword, true},
		{irisauth.GrantRefreshToken, &irisauth.Error{Kind: irisauth.KindRejected, Grant: irisauth.GrantRefreshToken, Code: "invalid_grant"}, false},
		{irisauth.GrantRefreshToken, &irisauth.Error{Kind: irisauth.KindRejected, Grant: irisauth.GrantRefreshToken, Code: "invalid_client"}, true},
		{irisauth.GrantPassword, &irisauth.Error{Kind: irisauth.KindUnavailable, Grant: irisauth.GrantPassword, Status: 503}, false},
		{irisauth.GrantPassword, &irisauth.Error{Kind: irisauth.KindRejected, Grant: irisauth.GrantPassword, Code: "invalid_scope"}, false},
		{irisauth.GrantPassword, &irisauth.Error{Kind: irisauth.KindRejected, Grant: irisauth.GrantPassword, Status: 401}, true},
		{irisauth.GrantRefreshToken, &irisauth.Error{Kind: irisauth.KindRejected, Grant: irisauth.GrantRefreshToken, Status: 403}, true},
		{irisauth.GrantClientCredentials, &irisauth.Error{Kind: irisauth.KindBadResponse, Grant: irisauth.GrantClientCredentials, Status: 404}, false},
	}
	for _, tc := range cases {
		gb := newGrantBook(newTestClock().Now)
		cfg := holdConfig("demo", "user", "g1")
		tk, err := gb.admit(context.Background(), "demo", cfg, tc.grant)
		require.NoError(t, err)
		gb.record(tk, "demo", cfg, tc.grant, tc.err)
		_, err = gb.admit(context.Background(), "demo", cfg, irisauth.GrantPassword)
		var held *heldError
		require.Equal(t, tc.holds, errors.As(err, &held), "%v", tc.err)
	}
}

// After a password change in Trackunit Manager, a minute of reads once a
// second makes at most three refused attempts at IRIS, so that a lockout
// policy never locks the API user; token/ keeps serving its still-valid
// token meanwhile, and a config write with the new password ends the wait.
func TestRefusedCredentialsAreNotRetriedAtReadPace(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"creds/demo", "token/demo"} {
		t.Run(path, func(t *testing.T) {
			env := newTestEnv(t)
			env.iris.SetLockoutThreshold(5)
			env.writeConfig("demo", demoUser, nil)
			first := env.readToken("demo")
			// The admin changes the password, which ends every session.
			env.iris.SetPassword(demoUser.Username, "changed-in-manager")
			env.iris.RevokeAll(demoUser.Username)
			env.clock.Advance(2400 * time.Second) // token/ is due, with 1200 s left

			for range 60 {
				resp, err := env.request(logical.ReadOperation, path, nil)
				if path == "token/demo" {
					require.NoError(t, err)
					require.Equal(t, first.Data["access_token"], resp.Data["access_token"])
					require.Len(t, resp.Warnings, 1)
					require.Contains(t, resp.Warnings[0], "wrong username or password")
				} else {
					require.ErrorContains(t, err, "wrong username or password")
				}
				env.clock.Advance(time.Second)
			}
			require.LessOrEqual(t, env.iris.RefusedAttempts(demoUser.Username), 3)
			require.False(t, env.iris.Locked(demoUser.Username))
			_, err := env.request(logical.ReadOperation, "creds/demo", nil)
			require.ErrorContains(t, err, "no new attempt until")

			env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": "changed-in-manager"})
			env.mustRequest(logical.ReadOperation, path, nil)
		})
	}
}

// A refused refresh token is not a refusal of the credentials: the password
// grant follows at once, and nothing is held.
func TestRefusedRefreshTokenFallsBackWithoutHold(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.readToken("demo")
	env.iris.RevokeAll(demoUser.Username)
	env.clock.Advance(2400 * time.Second)
	env.iris.ResetStats()
	resp := env.readToken("demo")
	require.Empty(t, resp.Warnings)
	require.Equal(t, 1, env.iris.Stats().PasswordGrants)
	cfg, err := env.b.config(context.Background(), env.storage, "demo")
	require.NoError(t, err)
	require.True(t, env.b.grants.report("demo", cfg).HeldUntil.IsZero())
}

func TestReplicatedConfigWriteEndsTheHold(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.iris.SetPassword(demoUser.Username, "changed")
	_, err := env.request(logical.ReadOperation, "creds/demo", nil)
	require.Error(t, err)
	_, err = env.request(logical.ReadOperation, "creds/demo", nil)
	require.ErrorContains(t, err, "no new attempt until")

	env.iris.SetPassword(demoUser.Username, demoUser.Password)
	env.b.invalidate(context.Background(), configStoragePrefix+"demo")
	env.readCreds("demo")
}

// changePasswordInManager does what an admin does in Trackunit Manager: a
// new password, and every session of the old one ended.
func changePasswordInManager(env *testEnv) {
	env.iris.SetPassword(demoUser.Username, "changed-in-manager")
	env.iris.RevokeAll(demoUser.Username)
}

// concurrently runs fn n times at once and waits for all of them.
func concurrently(n int, fn func(i int)) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(i)
		}()
	}
	wg.Wait()
}

// With IRIS answering in 200 ms and locking the user after 5 refusals, 8
// concurrent creds/ reads, 8 token/ reads and 8 lease renewals after a
// password change send one password grant that IRIS refuses; the others
// wait for it and answer with the hold. The credentials are unproven: the
// plugin restarted, or a config write that did not fix them came first.
func TestConcurrentGrantsAfterPasswordChangeDoNotLockTheUser(t *testing.T) {
	t.Parallel()
	for _, unproven := range []string{"restart", "config write"} {
		t.Run(unproven, func(t *testing.T) {
			env := newTestEnv(t)
			env.iris.SetLockoutThreshold(5)
			env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
			first := env.readToken("demo")
			leases := make([]*logical.Secret, 8)
			for i := range leases {
				leases[i] = issued(env.readCreds("demo"), time.Now())
			}
			changePasswordInManager(env)
			switch unproven {
			case "restart":
				env.b, _, _ = env.newBackend()
			case "config write":
				env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": 1800, "verify": false})
			}
			env.clock.Advance(2400 * time.Second) // token/ is due, with 1200 s left
			env.iris.SetLatency(200 * time.Millisecond)

			var credsErrs, renewErrs [8]error
			var tokens [8]*logical.Response
			concurrently(24, func(i int) {
				switch i % 3 {
				case 0:
					_, credsErrs[i/3] = env.request(logical.ReadOperation, "creds/demo", nil)
				case 1:
					resp, err := env.request(logical.ReadOperation, "token/demo", nil)
					assert.NoError(t, err, "token/ serves its still-valid token")
					tokens[i/3] = resp
				case 2:
					_, renewErrs[i/3] = env.renew(leases[i/3], 0)
				}
			})
			require.Equal(t, 1, env.iris.RefusedAttempts(demoUser.Username), "one attempt, the others waited for it")
			require.False(t, env.iris.Locked(demoUser.Username))
			for i := range 8 {
				require.ErrorContains(t, credsErrs[i], "wrong username or password")
				require.Error(t, renewErrs[i])
				require.Equal(t, first.Data["access_token"], tokens[i].Data["access_token"])
				require.Len(t, tokens[i].Warnings, 1)
			}
			status := env.mustRequest(logical.ReadOperation, "status/demo", nil).Data
			require.NotEmpty(t, status["grants_held_until"])
			require.Contains(t, status["grants_held_because"], "invalid_grant")

			env.iris.SetLatency(0)
			env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": "changed-in-manager"})
			env.readCreds("demo")
			env.assertNoSecrets(demoUser)
		})
	}
}

// Three configs of one API user share its hold: read in turn once a second
// for a minute after a password change, they make at most 3 refused
// attempts; status/ shows the hold on each, and a write to any of them ends
// it for all.
func TestNamesOfOneAPIUserShareTheHold(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.iris.SetLockoutThreshold(5)
	names := []string{"fleet-a", "fleet-b", "fleet-c"}
	for _, name := range names {
		env.writeConfig(name, demoUser, nil)
	}
	changePasswordInManager(env)
	for i := range 60 {
		_, err := env.request(logical.ReadOperation, "creds/"+names[i%3], nil)
		require.ErrorContains(t, err, "wrong username or password")
		env.clock.Advance(time.Second)
	}
	refused := env.iris.RefusedAttempts(demoUser.Username)
	require.Positive(t, refused)
	require.LessOrEqual(t, refused, 3)
	require.False(t, env.iris.Locked(demoUser.Username))

	failures := 0
	for _, name := range names {
		status := env.mustRequest(logical.ReadOperation, "status/"+name, nil).Data
		require.NotEmpty(t, status["grants_held_until"], name)
		require.Contains(t, status["grants_held_because"], "invalid_grant", name)
		// Counted where they were sent: each name's own grants, its
		// verifying grant and its refused attempts.
		failures += status["consecutive_failures"].(int)
		require.Equal(t, status["consecutive_failures"].(int)+1, status["grants_last_hour"], name)
	}
	require.Equal(t, refused, failures)

	env.mustRequest(logical.UpdateOperation, "config/fleet-b", map[string]interface{}{"password": "changed-in-manager"})
	for _, name := range names {
		status := env.mustRequest(logical.ReadOperation, "status/"+name, nil).Data
		require.Empty(t, status["grants_held_until"], name)
		require.Empty(t, status["grants_held_because"], name)
	}
	env.readCreds("fleet-b")
	require.Equal(t, 2, env.mustRequest(logical.ReadOperation, "status/fleet-b", nil).Data["grants_last_hour"],
		"the verifying grant and the read: the password changed, so the name's counters started afresh")
	env.assertNoSecrets(demoUser)
}

// A 401 or 403 without an OAuth error body is a refusal of the client: the
// next read is held, and the hint does not claim more than IRIS said.
func TestClientRefusedWithoutBodyIsHeld(t *testing.T) {
	t.Parallel()
	for _, status := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, nil)
			env.iris.FailNext(1, iristest.Fault{Status: status})
			_, err := env.request(logical.ReadOperation, "creds/demo", nil)
			require.ErrorContains(t, err, fmt.Sprintf("HTTP %d without an OAuth error", status))
			require.ErrorContains(t, err, "the client ID or client secret may be wrong, or token_url may not be IRIS's token endpoint")
			requests := env.iris.Stats().Requests
			_, err = env.request(logical.ReadOperation, "creds/demo", nil)
			require.ErrorContains(t, err, "no new attempt until")
			require.Equal(t, requests, env.iris.Stats().Requests)
		})
	}
}

// blockFirstGrant holds the next token request until release is closed,
// after arrived is; the request is then answered as usual.
func blockFirstGrant(env *testEnv) (arrived, release chan struct{}) {
	arrived, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	env.iris.SetResponseOverride(func(http.ResponseWriter, *http.Request) bool {
		first := false
		once.Do(func() { first = true })
		if first {
			close(arrived)
			<-release
		}
		return false
	})
	return arrived, release
}

// A grant admitted before a config write and answered after it neither
// ends nor starts the written config's hold, and the write's first attempt
// is alone.
func TestHoldAcrossAConfigWrite(t *testing.T) {
	t.Parallel()
	// A refusal of the old password, answered after the new one was
	// written, holds nothing.
	t.Run("refused before", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, nil)
		changePasswordInManager(env)
		arrived, release := blockFirstGrant(env)
		done := make(chan error)
		go func() {
			_, err := env.request(logical.ReadOperation, "creds/demo", nil)
			done <- err
		}()
		<-arrived
		env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": "changed-in-manager", "verify": false})
		close(release)
		require.ErrorContains(t, <-done, "wrong username or password")
		require.Empty(t, env.mustRequest(logical.ReadOperation, "status/demo", nil).Data["grants_held_until"])
		env.readCreds("demo")
	})
	// A success of the old password, answered after a wrong one was
	// written, does not prove the new one: its first attempt is alone.
	t.Run("succeeded before", func(t *testing.T) {
		env := newTestEnv(t)
		env.iris.SetLockoutThreshold(5)
		env.writeConfig("demo", demoUser, nil)
		arrived, release := blockFirstGrant(env)
		done := make(chan error)
		go func() {
			_, err := env.request(logical.ReadOperation, "creds/demo", nil)
			done <- err
		}()
		<-arrived
		env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": "mistyped", "verify": false})
		close(release)
		require.NoError(t, <-done)

		refusedBurst(t, env, "demo")
		require.Equal(t, 1, env.iris.RefusedAttempts(demoUser.Username))
		require.False(t, env.iris.Locked(demoUser.Username))
	})
	// A write that does not fix the credentials ends the hold, and opens
	// the gate to one attempt, not to a burst.
	t.Run("write while held", func(t *testing.T) {
		env := newTestEnv(t)
		env.iris.SetLockoutThreshold(5)
		env.writeConfig("demo", demoUser, nil)
		changePasswordInManager(env)
		_, err := env.request(logical.ReadOperation, "creds/demo", nil)
		require.ErrorContains(t, err, "wrong username or password")
		env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": 1800, "verify": false})
		refusedBurst(t, env, "demo")
		require.Equal(t, 2, env.iris.RefusedAttempts(demoUser.Username))
		require.False(t, env.iris.Locked(demoUser.Username))
	})
	// The verifying grant of a write is never held; a refusal of it holds
	// nothing, since what IRIS refused was not stored; a success ends the
	// hold for every name.
	t.Run("verifying grant", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("a", demoUser, nil)
		env.writeConfig("b", demoUser, nil)
		changePasswordInManager(env)
		_, err := env.request(logical.ReadOperation, "creds/a", nil)
		require.ErrorContains(t, err, "wrong username or password")
		heldUntil := env.mustRequest(logical.ReadOperation, "status/b", nil).Data["grants_held_until"]
		require.NotEmpty(t, heldUntil)

		env.clock.Advance(10 * time.Second)
		resp, err := env.request(logical.UpdateOperation, "config/b", map[string]interface{}{"password": "mistyped"})
		require.NoError(t, err)
		require.ErrorContains(t, resp.Error(), "credentials not stored")
		require.Equal(t, 2, env.iris.RefusedAttempts(demoUser.Username), "the write's grant was sent despite the hold")
		require.Equal(t, heldUntil, env.mustRequest(logical.ReadOperation, "status/a", nil).Data["grants_held_until"],
			"and left the hold as it was")

		env.mustRequest(logical.UpdateOperation, "config/b", map[string]interface{}{"password": "changed-in-manager"})
		require.Empty(t, env.mustRequest(logical.ReadOperation, "status/a", nil).Data["grants_held_until"])
		env.readCreds("b")
	})

	// A refused verifying grant does not hold the stored config, whose
	// credentials may well be right.
	t.Run("refused write", func(t *testing.T) {
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, nil)
		resp, err := env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": "mistyped"})
		require.NoError(t, err)
		require.ErrorContains(t, resp.Error(), "credentials not stored")
		require.Empty(t, env.mustRequest(logical.ReadOperation, "status/demo", nil).Data["grants_held_until"])
		env.readCreds("demo")
	})
}

// The identity is what IRIS counts refusals against: the same host, client
// and user share it however the URL is spelled; a client-credentials kind
// has no user.
func TestUpstreamIdentity(t *testing.T) {
	t.Parallel()
	base := holdConfig("x", "user", "g1")
	with := func(edit func(*credential)) *credential {
		c := *base
		edit(&c)
		return &c
	}
	same := []*credential{
		with(func(c *credential) { c.TokenURL = "https://IRIS.example:443/token" }),
		with(func(c *credential) { c.TokenURL = "https://iris.example/other/path" }),
		with(func(c *credential) { c.Password, c.Generation, c.Scopes = "other", "g2", []string{"api"} }),
	}
	for _, c := range same {
		require.Equal(t, upstreamIdentity(base), upstreamIdentity(c), c.TokenURL)
	}
	other := []*credential{
		with(func(c *credential) { c.TokenURL = "https://iris.example:8443/token" }),
		with(func(c *credential) { c.TokenURL = "https://stage.iris.example/token" }),
		with(func(c *credential) { c.ClientID = "0oa-other" }),
		with(func(c *credential) { c.Username = "other-user" }),
	}
	for _, c := range other {
		require.NotEqual(t, upstreamIdentity(base), upstreamIdentity(c), "%+v", c)
	}
	key := with(func(c *credential) { c.Kind, c.Username = kindAPIKey, "" })
	require.Equal(t, upstreamIdentity(key), upstreamIdentity(with(func(c *credential) { c.Kind = kindAPIKey })),
		"a key's identity has no user")
}

// A config written elsewhere ends the hold as a local write does, and its
// first attempt is alone too, whichever config the caller holds.
func TestConfigWrittenElsewhereIsUnproven(t *testing.T) {
	t.Parallel()
	gb := newGrantBook(newTestClock().Now)
	cfg := holdConfig("demo", "user", "g1")
	gb.configWritten("demo", cfg, true)
	first, err := gb.admit(gone(), "demo", cfg, irisauth.GrantPassword)
	require.NoError(t, err, "verified: proven, and no attempt in flight")
	gb.record(first, "demo", cfg, irisauth.GrantPassword, nil)

	gb.configChanged("demo")
	replicated := holdConfig("demo", "user", "g2")
	tk, err := gb.admit(context.Background(), "demo", replicated, irisauth.GrantPassword)
	require.NoError(t, err)
	_, err = gb.admit(gone(), "demo", cfg, irisauth.GrantPassword)
	require.ErrorIs(t, err, context.Canceled, "one attempt at a time")
	gb.record(tk, "demo", replicated, irisauth.GrantPassword, refusedPassword)
	_, err = gb.admit(context.Background(), "demo", replicated, irisauth.GrantPassword)
	var held *heldError
	require.ErrorAs(t, err, &held, "its refusal holds")
}

// refusedBurst reads creds/<name> 8 times at once against an IRIS that
// answers in 200 ms, so that the reads overlap, and expects each to fail
// with the wrong password.
func refusedBurst(t *testing.T, env *testEnv, name string) {
	t.Helper()
	env.iris.SetLatency(200 * time.Millisecond)
	concurrently(8, func(int) {
		_, err := env.request(logical.ReadOperation, "creds/"+name, nil)
		assert.ErrorContains(t, err, "wrong username or password")
	})
}
