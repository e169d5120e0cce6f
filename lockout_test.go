package iris

import (
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
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
