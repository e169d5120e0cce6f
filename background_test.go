package iris

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// manySessions stores n configs of the demo user, each holding a shared
// token that has been read, all obtained at the same moment.
func manySessions(env *testEnv, n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("user-%04d", i)
		env.writeConfig(names[i], demoUser, nil)
		env.readToken(names[i])
	}
	env.iris.ResetStats()
	return names
}

func TestBackgroundRefreshBoundsGrantsInFlight(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{0, 3} {
		t.Run(fmt.Sprintf("limit %d", limit), func(t *testing.T) {
			env := newTestEnv(t)
			want := defaultMaxBackgroundGrants
			if limit > 0 {
				env.mustRequest(logical.UpdateOperation, "settings", map[string]interface{}{"max_background_grants": limit})
				want = limit
			}
			names := manySessions(env, 40)
			before := map[string]time.Time{}
			for _, name := range names {
				before[name] = env.storedSession(name).ObtainedAt
			}
			// Each answer takes a while, so that grants overlap.
			env.iris.SetFault(&iristest.Fault{Delay: 20 * time.Millisecond})
			env.clock.Advance(2300 * time.Second) // every session is due

			env.periodic()
			st := env.iris.Stats()
			require.Equal(t, 40, st.RefreshGrants, "every due session was replaced")
			require.LessOrEqual(t, st.MaxInFlight, want)
			require.Greater(t, st.MaxInFlight, 1, "grants ran side by side")
			for _, name := range names {
				require.True(t, env.storedSession(name).ObtainedAt.After(before[name]), name)
			}
		})
	}
}

// Sessions obtained at the same moment are replaced over several minutes,
// not all in one, and every one before it reaches its outage floor.
func TestBackgroundRefreshSpreadsAndFinishesInTime(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	const n = 300
	names := manySessions(env, n)
	obtained := env.storedSession(names[0]).ObtainedAt
	sess := env.storedSession(names[0])
	deadline := sess.ExpiresAt.Add(-sess.outageFloor())

	replaced := map[string]time.Time{}
	mostInOnePass := 0
	for env.clock.Now().Before(sess.ExpiresAt) && len(replaced) < n {
		env.clock.Advance(time.Minute)
		for _, name := range names {
			env.b.refresher.markRead(name) // readers keep using their tokens
		}
		env.periodic()
		inThisPass := 0
		for _, name := range names {
			if _, done := replaced[name]; !done && env.storedSession(name).ObtainedAt.After(obtained) {
				replaced[name] = env.clock.Now()
				inThisPass++
			}
		}
		mostInOnePass = max(mostInOnePass, inThisPass)
	}
	require.Len(t, replaced, n)
	for name, at := range replaced {
		require.True(t, at.Before(deadline), "%s replaced at %s, after its outage floor", name, at.Sub(obtained))
	}
	require.LessOrEqual(t, mostInOnePass, n/4, "spread over several passes")
	require.Zero(t, env.iris.Stats().PasswordGrants, "all through refresh tokens")
}

func TestBackgroundRefreshBacksOffOn429(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	manySessions(env, 30)
	env.mustRequest(logical.UpdateOperation, "settings", map[string]interface{}{"max_background_grants": 2})
	env.iris.SetFault(&iristest.Fault{Status: 429, RetryAfter: "45"})
	env.clock.Advance(2300 * time.Second)

	env.periodic()
	first := env.iris.Stats().Requests
	require.Greater(t, first, 0)
	require.Less(t, first, 30, "the pool stopped at the first 429s")

	env.clock.Advance(40 * time.Second)
	env.periodic()
	require.Equal(t, first, env.iris.Stats().Requests, "paused for the Retry-After")

	env.iris.SetFault(nil)
	env.clock.Advance(10 * time.Second)
	env.periodic()
	require.Equal(t, 30, env.iris.Stats().RefreshGrants, "resumed")
}

func TestSettingsValidation(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	require.Equal(t, defaultMaxBackgroundGrants, env.mustRequest(logical.ReadOperation, "settings", nil).Data["max_background_grants"])
	for _, bad := range []int{0, -1, maxMaxBackgroundGrants + 1} {
		resp, err := env.request(logical.UpdateOperation, "settings", map[string]interface{}{"max_background_grants": bad})
		require.NoError(t, err)
		require.True(t, resp.IsError(), "%d", bad)
	}
	env.mustRequest(logical.UpdateOperation, "settings", map[string]interface{}{"max_background_grants": 16})
	require.Equal(t, 16, env.mustRequest(logical.ReadOperation, "settings", nil).Data["max_background_grants"])
}

// Deleting a config prunes its read tracking, so that the map does not grow
// with every name a mount ever had.
func TestDeletePrunesReadTracking(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	manySessions(env, 5)
	env.mustRequest(logical.DeleteOperation, "config/user-0001", nil)
	env.b.refresher.readMu.Lock()
	defer env.b.refresher.readMu.Unlock()
	require.Len(t, env.b.refresher.lastRead, 4)
	require.NotContains(t, env.b.refresher.lastRead, "user-0001")
}

// countingStorage counts the entries read, by key prefix.
type countingStorage struct {
	logical.Storage
	mu   sync.Mutex
	gets map[string]int
}

func (s *countingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.mu.Lock()
	prefix, _, _ := strings.Cut(key, "/")
	s.gets[prefix]++
	s.mu.Unlock()
	return s.Storage.Get(ctx, key)
}

// After a restart nothing has been read: the first pass must not load every
// config and session from storage (two reads each, and all of them kept in
// memory) to find that none is queued; a session read again is queued as
// before.
func TestBackgroundRefreshPassSkipsUnreadSessionsWithoutLoading(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	names := manySessions(env, 20)
	// The same storage in a new backend: what a restart of Vault leaves.
	restarted, _, _ := env.newBackend()
	storage := &countingStorage{Storage: env.storage, gets: map[string]int{}}
	req := &logical.Request{Storage: storage, MountPoint: testMount}
	env.clock.Advance(2300 * time.Second) // every session is due

	require.NoError(t, restarted.periodic(context.Background(), req))
	restarted.refresher.wait()
	require.Zero(t, storage.gets["config"], "configs loaded")
	require.Zero(t, storage.gets["session"], "sessions loaded")
	require.Zero(t, env.iris.Stats().Requests, "nothing was read, so nothing is replaced")
	restarted.stored.configs.mu.RLock()
	restarted.stored.sessions.mu.RLock()
	require.Empty(t, restarted.stored.configs.items)
	require.Empty(t, restarted.stored.sessions.items)
	restarted.stored.sessions.mu.RUnlock()
	restarted.stored.configs.mu.RUnlock()

	// One of them is read: the next pass replaces it, and the unread ones
	// still cost no storage read.
	resp, err := env.requestOn(restarted, env.storage, logical.ReadOperation, "token/"+names[3], nil)
	require.NoError(t, err)
	require.False(t, resp.IsError())
	require.Zero(t, env.iris.Stats().Requests, "served the stored token")
	clear(storage.gets)
	require.NoError(t, restarted.periodic(context.Background(), req))
	restarted.refresher.wait()
	require.Equal(t, 1, env.iris.Stats().RefreshGrants, "the session read since the restart is replaced in the background")
	require.LessOrEqual(t, storage.gets["session"], 2, "only the replaced session was loaded")
}

// A reader that comes back only at ttl+1, as a Vault Agent template does,
// finds its token already replaced in the background: the read that
// obtained the token counts as a read of it.
func TestAgentPaceReaderGetsBackgroundRefresh(t *testing.T) {
	t.Parallel()
	env := newTestEnv(t)
	env.writeConfig("demo", demoUser, map[string]interface{}{"verify": false})
	// As in real time, a grant's token is obtained a little after the read
	// that asked for it began.
	env.b.client.Now = func() time.Time {
		env.clock.Advance(time.Millisecond)
		return env.clock.Now()
	}
	first := env.readToken("demo") // obtains the token
	env.iris.ResetStats()

	// Vault runs the periodic function about once a minute until the
	// reader comes back, ttl+1 seconds later.
	back := env.clock.Now().Add(time.Duration(first.Data["ttl"].(int64)+1) * time.Second)
	for env.clock.Now().Before(back) {
		env.clock.Advance(time.Minute)
		env.periodic()
	}
	require.Equal(t, 1, env.iris.Stats().RefreshGrants, "replaced in the background")
	env.iris.ResetStats()
	second := env.readToken("demo")
	require.NotEqual(t, first.Data["access_token"], second.Data["access_token"])
	require.Zero(t, env.iris.Stats().Requests, "the reader did not wait on a grant")
}
