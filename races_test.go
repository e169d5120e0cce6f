package iris

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// heldRefreshTokens counts the refresh tokens the engine holds for names in
// their stored sessions, plus those of leases the test still holds.
func (env *testEnv) heldRefreshTokens(names []string, leases ...*logical.Secret) int {
	env.t.Helper()
	n := 0
	for _, name := range names {
		if sess := env.storedSession(name); sess != nil && sess.RefreshToken != "" {
			n++
		}
	}
	for _, l := range leases {
		if internalString(l, internalRefreshToken) != "" {
			n++
		}
	}
	return n
}

// A config write that lands while a shared-token grant runs wins, whatever
// it changed, and the grant's refresh token, which nobody will hold, is
// revoked: IRIS ends with as many live refresh tokens as the engine holds.
func TestRacingConfigWriteWinsAndOrphansNothing(t *testing.T) {
	t.Parallel()
	due := 2400 * time.Second
	cases := []struct {
		name  string
		write func(env *testEnv)
		// verifiedConflict: the write races a verifying grant rather than
		// a token/ grant, and must end in a conflict.
		verifiedConflict bool
		wantGrants       int // token/ grants, the racing one included
	}{
		{name: "ttl only, verified", write: func(env *testEnv) {
			env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "30m"})
		}, wantGrants: 2},
		{name: "ttl only, not verified", write: func(env *testEnv) {
			env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "30m", "verify": false})
		}, wantGrants: 2},
		{name: "generation change, not verified", write: func(env *testEnv) {
			env.iris.SetPassword(demoUser.Username, "changed-in-manager")
			env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": "changed-in-manager", "verify": false})
		}, wantGrants: 2},
		{name: "verified write ending in a conflict", verifiedConflict: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := newTestEnv(t)
			env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": env.iris.RevocationURL})
			before := env.iris.Stats().PasswordGrants + env.iris.Stats().RefreshGrants

			if tc.verifiedConflict {
				// Another write lands while this one's verifying grant runs.
				var once sync.Once
				env.iris.SetResponseOverride(func(http.ResponseWriter, *http.Request) bool {
					once.Do(func() {
						env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "20m", "verify": false})
					})
					return false
				})
				resp, err := env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "30m"})
				require.Nil(t, resp)
				var coded logical.HTTPCodedError
				require.ErrorAs(t, err, &coded)
				require.Equal(t, http.StatusConflict, coded.Code())
				cfg, err := env.b.configFromStorage(context.Background(), env.storage, "demo")
				require.NoError(t, err)
				require.Equal(t, 20*time.Minute, cfg.TTL, "the write that landed first stays")
			} else {
				env.clock.Advance(due)
				var once sync.Once
				env.b.afterGrant = func(string) { once.Do(func() { tc.write(env) }) }
				env.readToken("demo")
				st := env.iris.Stats()
				require.Equal(t, before+tc.wantGrants, st.PasswordGrants+st.RefreshGrants)
				cfg, err := env.b.configFromStorage(context.Background(), env.storage, "demo")
				require.NoError(t, err)
				require.NotNil(t, env.storedSession("demo"))
				require.Equal(t, cfg.Generation, env.storedSession("demo").Generation)
			}
			require.Zero(t, env.iris.Stats().RefreshReuse)
			require.Equal(t, env.heldRefreshTokens([]string{"demo"}), env.iris.LiveRefreshTokens(demoUser.Username),
				"IRIS holds as many live refresh tokens as the engine")
			require.Equal(t, 1, env.iris.LiveRefreshTokens(demoUser.Username))
			env.assertNoSecrets(demoUser)
		})
	}
}

// Without a revocation endpoint, the refresh token of a grant a write
// overtook is left to expire, and a log line says so, naming the
// credential.
func TestRacingConfigWriteWithoutRevocationURLSaysWhatIsLeft(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, nil)
	env.clock.Advance(2400 * time.Second)
	var once sync.Once
	env.b.afterGrant = func(string) {
		once.Do(func() { env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "30m"}) })
	}
	env.readToken("demo")
	require.Contains(t, env.logs.String(), `a new shared token could not be stored; its refresh token is left to expire at IRIS (no revocation_url): name=demo`)
	require.Zero(t, env.iris.Stats().Revocations)
	require.Equal(t, 2, env.iris.LiveRefreshTokens(demoUser.Username), "the stored one and the one left to expire")
	env.assertNoSecrets(demoUser)
}

// Clean cancels a shared-token grant that waits on IRIS, even one whose
// reader gave up on it, waits for it, and no storage write happens after it
// returns.
func TestCleanEndsBackgroundGrants(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	storage := newFaultyStorage(env.storage)
	env.storage = storage
	env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": env.iris.RevocationURL})
	env.readToken("demo")
	env.clock.Advance(2450 * time.Second) // due for readers and the background alike
	env.iris.SetFault(&iristest.Fault{Delay: time.Hour})

	// One grant in the background, and a reader whose request gives up:
	// both share the flight that context.WithoutCancel kept alive before.
	require.NoError(t, env.b.periodic(context.Background(), &logical.Request{Storage: storage, MountPoint: testMount}))
	readerCtx, giveUp := context.WithCancel(context.Background())
	readerDone := make(chan error, 1)
	go func() {
		_, err := env.b.HandleRequest(readerCtx, &logical.Request{Operation: logical.ReadOperation, Path: "token/demo", Storage: storage, MountPoint: testMount})
		readerDone <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for env.iris.Stats().InFlight == 0 {
		require.True(t, time.Now().Before(deadline), "the grant never reached IRIS")
		time.Sleep(5 * time.Millisecond)
	}
	giveUp()
	<-readerDone // served the current token, with a warning

	began := time.Now()
	env.b.Cleanup(context.Background())
	require.Less(t, time.Since(began), cleanWait, "Clean waited for the grant to end, not for its timeout")
	writes := storage.writesSoFar()
	env.b.refresher.wait()
	env.b.closeMu.RLock()
	alive := env.b.flightsAlive
	env.b.closeMu.RUnlock()
	require.Zero(t, alive, "the flight ended before Clean returned")

	// Nothing the mount does afterwards reaches storage.
	env.iris.SetFault(nil)
	_, _ = env.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "token/demo", Storage: storage, MountPoint: testMount})
	_, err := env.request(logical.UpdateOperation, "config/demo", map[string]interface{}{"ttl": "30m", "verify": false})
	require.ErrorContains(t, err, "nothing was stored")
	require.Equal(t, writes, storage.writesSoFar(), "a storage write after Clean returned")
	require.Zero(t, env.iris.Stats().RefreshReuse)
}

// A renewable lease's token that is not handed out (it expires within the
// lease margin) has its refresh token revoked: no caller holds it.
func TestTokenNotHandedOutHasItsRefreshTokenRevoked(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"revocation_url": env.iris.RevocationURL, "renewable_leases": true})
	lease := issued(env.readCreds("demo"), time.Now())
	env.iris.SetTokenLifetime(time.Second)

	_, err := env.request(logical.ReadOperation, "creds/demo", nil)
	require.ErrorContains(t, err, "expires within the lease margin")
	_, err = env.renew(lease, 0)
	require.ErrorContains(t, err, "expires within the lease margin")

	// Only the session's is live: those the failed read and renewal
	// obtained were revoked, and the lease's was spent by its renewal.
	require.Equal(t, env.heldRefreshTokens([]string{"demo"}), env.iris.LiveRefreshTokens(demoUser.Username))
	require.Zero(t, env.iris.Stats().RefreshReuse)
	env.assertNoSecrets(demoUser)
}
