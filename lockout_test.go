package iris

import (
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// After a password change at IRIS, concurrent reads of every kind and a
// background pass make at most one refused password attempt.
func TestPasswordChangeUnderConcurrentLoadCostsOneRefusal(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"renewable_leases": true})
	lease := issued(env.readCreds("demo"), env.clock.Now())
	env.readToken("demo")
	env.iris.SetPassword(demoUser.Username, "changed")
	env.iris.RevokeAll(demoUser.Username)
	env.iris.SetLatency(50 * time.Millisecond)
	env.clock.Advance(50 * time.Minute)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(4)
		go func() { defer wg.Done(); _, _ = env.request(logical.ReadOperation, "creds/demo", nil) }()
		go func() { defer wg.Done(); _, _ = env.request(logical.ReadOperation, "token/demo", nil) }()
		go func() { defer wg.Done(); _, _ = env.renew(lease, time.Hour) }()
		go func() {
			defer wg.Done()
			_ = env.b.periodic(t.Context(), &logical.Request{Storage: env.storage, MountPoint: testMount})
		}()
	}
	wg.Wait()
	env.b.refresher.wait()
	for _, r := range env.iris.Requests() {
		t.Log(r.GrantType, r.Status, r.Time)
	}
	require.LessOrEqual(t, env.iris.RefusedAttempts(demoUser.Username), 1)
}

// Three names of one API user read in turn once a second for 60 s make at
// most three refused password attempts.
func TestThreeNamesOfOneUserReadInTurn(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	for _, n := range []string{"a", "b", "c"} {
		env.writeConfig(n, demoUser, nil)
	}
	env.iris.SetPassword(demoUser.Username, "changed")
	env.iris.RevokeAll(demoUser.Username)
	for i := 0; i < 60; i++ {
		_, _ = env.request(logical.ReadOperation, "creds/"+[]string{"a", "b", "c"}[i%3], nil)
		_, _ = env.request(logical.ReadOperation, "token/"+[]string{"a", "b", "c"}[i%3], nil)
		env.clock.Advance(time.Second)
	}
	require.LessOrEqual(t, env.iris.RefusedAttempts(demoUser.Username), 3)
}

// madeUpPassword is what a principal with only update on config/<name>
// (the rotator policy) writes when it guesses.
var madeUpPassword = map[string]interface{}{"password": "made-up-guess", "verify": true}

// A rotator that writes made-up passwords one after another gets at most
// maxRefusedWrites guesses at IRIS; then its writes are held like reads.
func TestRotatorGuessesAreBounded(t *testing.T) {
	t.Parallel()
	t.Run("verifying writes in turn", func(t *testing.T) {
		t.Parallel()
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, nil)
		env.iris.SetLockoutThreshold(5)
		var last string
		for range 6 {
			last = refusal(env.request(logical.UpdateOperation, "config/demo", madeUpPassword))
		}
		require.Equal(t, maxRefusedWrites, env.iris.RefusedAttempts(demoUser.Username))
		require.False(t, env.iris.Locked(demoUser.Username))
		require.Contains(t, last, "writes no longer end the wait")
	})
	// Password grants go one at a time, verifying ones included.
	t.Run("verifying writes at once", func(t *testing.T) {
		t.Parallel()
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, nil)
		env.readToken("demo")
		env.iris.SetLockoutThreshold(5)
		env.iris.SetLatency(100 * time.Millisecond)
		concurrently(8, func(int) {
			assert.NotEmpty(t, refusal(env.request(logical.UpdateOperation, "config/demo", madeUpPassword)), "a made-up password was stored")
		})
		require.LessOrEqual(t, env.iris.RefusedAttempts(demoUser.Username), maxRefusedWrites)
		require.False(t, env.iris.Locked(demoUser.Username))
	})
	// verify=false stores the guess; each write used to end the hold, so
	// that the next read made one more refused attempt.
	t.Run("unverified writes and reads", func(t *testing.T) {
		t.Parallel()
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, nil)
		env.iris.SetLockoutThreshold(5)
		for range 6 {
			env.mustRequest(logical.UpdateOperation, "config/demo", map[string]interface{}{"password": "made-up-guess", "verify": false})
			_, err := env.request(logical.ReadOperation, "token/demo", nil)
			require.Error(t, err)
			env.clock.Advance(time.Second)
		}
		require.Equal(t, maxRefusedWrites, env.iris.RefusedAttempts(demoUser.Username))
		require.False(t, env.iris.Locked(demoUser.Username))
	})
	// The operator who has the password still gets through: once the hold
	// runs out, and at once after a success.
	t.Run("the right password after the guesses", func(t *testing.T) {
		t.Parallel()
		env := newTestEnv(t)
		env.writeConfig("demo", demoUser, nil)
		for range maxRefusedWrites + 1 {
			_, _ = env.request(logical.UpdateOperation, "config/demo", madeUpPassword)
		}
		right := map[string]interface{}{"password": demoUser.Password, "verify": true}
		require.Contains(t, refusal(env.request(logical.UpdateOperation, "config/demo", right)), "writes no longer end the wait")
		env.clock.Advance(maxCredentialHold)
		env.mustRequest(logical.UpdateOperation, "config/demo", right)
		env.readToken("demo")
		_, _ = env.request(logical.UpdateOperation, "config/demo", madeUpPassword)
		env.mustRequest(logical.UpdateOperation, "config/demo", right)
	})
}

// refusal is the text of a request's failure, whether Vault's framework
// carries it as an error or as an error response; empty if it succeeded.
func refusal(resp *logical.Response, err error) string {
	if err != nil {
		return err.Error()
	}
	if resp != nil && resp.IsError() {
		return resp.Error().Error()
	}
	return ""
}
