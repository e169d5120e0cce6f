package iris

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/irisauth"
)

var refusedPassword = &irisauth.Error{Kind: irisauth.KindRejected, Grant: irisauth.GrantPassword, Code: "invalid_grant", Status: 400}

// holdConfig is a config as the book sees it: an API user at a token URL.
func holdConfig(name, username, generation string) *apiUserConfig {
	return &apiUserConfig{Kind: kindAPIUser, ClientID: "0oa-client", Username: username, TokenURL: "https://iris.example/token",
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
		_, err = gb.admit(gone(), "demo", cfg, irisauth.GrantPassword)
		require.NoError(t, err, "once one succeeded, grants run concurrently")
	}
}

func TestOnlyCredentialRefusalsHold(t *testing.T) {
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
