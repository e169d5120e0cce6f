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

func TestHoldDoublesUpToItsMaximumAndAdmitsOneAttempt(t *testing.T) {
	clock := newTestClock()
	gb := newGrantBook(clock.Now)
	require.NoError(t, gb.admit("demo", "g1"))
	gb.record("demo", "g1", irisauth.GrantPassword, refusedPassword)

	want := minCredentialHold
	for range 8 {
		var held *heldError
		require.True(t, errors.As(gb.admit("demo", "g1"), &held))
		require.Equal(t, clock.Now().Add(want), held.until)
		require.ErrorIs(t, held, refusedPassword, "a held read answers with the refusal")

		clock.Advance(want)
		require.NoError(t, gb.admit("demo", "g1"), "one attempt once the hold ran out")
		require.Error(t, gb.admit("demo", "g1"), "and only one")
		gb.record("demo", "g1", irisauth.GrantPassword, refusedPassword)
		want = min(2*want, maxCredentialHold)
	}
	require.Equal(t, maxCredentialHold, want)

	gb.endHold("demo")
	require.NoError(t, gb.admit("demo", "g1"), "a config write ends the hold")
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
	}
	for _, tc := range cases {
		gb := newGrantBook(newTestClock().Now)
		gb.record("demo", "g1", tc.grant, tc.err)
		require.Equal(t, tc.holds, gb.admit("demo", "g1") != nil, "%v", tc.err)
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
	require.True(t, env.b.grants.report("demo", env.storedSession("demo").Generation).HeldUntil.IsZero())
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
