package iris

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// stressMount is one mount of the plugin with the API user it serves.
type stressMount struct {
	name    string
	b       *backend
	storage logical.Storage
	user    iristest.User
	config  map[string]interface{} // a complete create
}

// renewErrorTexts are the renewal failures secret_access_token.go defines.
var renewErrorTexts = regexp.MustCompile(`^(the credential that issued this lease no longer exists at iris/config/demo|` +
	`API user "demo": IRIS issued a token that expires within the lease margin|` +
	`renewal is disabled for API user "demo"|` +
	`lease of API user "demo" cannot be renewed: |` +
	`lease of API user "demo" has reached its max TTL|` +
	`renewing lease of API user "demo": )`)

// unexpected collects what broke an invariant, from any goroutine.
type unexpected struct {
	mu   sync.Mutex
	list []string
}

func (u *unexpected) add(format string, args ...interface{}) {
	u.mu.Lock()
	u.list = append(u.list, fmt.Sprintf(format, args...))
	u.mu.Unlock()
}

// counts tallies outcomes, for the log and to show the run did what it
// meant to.
type counts struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counts) inc(key string) {
	c.mu.Lock()
	c.m[key]++
	c.mu.Unlock()
}

// TestStress runs creds/ reads, renewals and revocations and token/ reads on
// two mounts of one plugin process, for two API users that share the config
// name "demo", while each mount's config is updated, deleted and recreated,
// the clock jumps ahead and the periodic refresh runs.
//
// No fault is injected, so IRIS never loses an answer: every refresh token
// sent is one the plugin has not sent before, and RefreshReuse must stay 0.
// Renewals of one lease are serial, as Vault's expiration manager makes them.
func TestStress(t *testing.T) {
	const (
		workers      = 300
		opsPerWorker = 16
		// Worker operations per clock jump (and periodic run), and per
		// config change on each mount. Two jumps make a shared token due
		// for refresh, and a config change comes every eight jumps (about
		// half of them drop the session), so that sessions live through
		// several refreshes.
		clockEvery    = 12
		configEvery   = 96
		clockJump     = 20 * time.Minute
		maxLeasesHeld = 3
	)
	userA := iristest.User{ClientID: "0oa-stress-a", ClientSecret: "stress-secret-A-Jd83k", Username: "stress-a", Password: "stress-password-A-Pq29x"}
	userB := iristest.User{ClientID: "0oa-stress-b", ClientSecret: "stress-secret-B-Wm51z", Username: "stress-b", Password: "stress-password-B-Nc47v"}
	env := newTestEnv(t, userA, userB)

	mountData := func(u iristest.User) map[string]interface{} {
		return map[string]interface{}{
			"client_id": u.ClientID, "client_secret": u.ClientSecret, "username": u.Username, "password": u.Password,
			"token_url": env.iris.TokenURL, "revocation_url": env.iris.RevocationURL,
			"renewable_leases": true, "verify": false,
		}
	}
	bB, sB, _ := env.newBackend()
	mounts := []*stressMount{
		{name: "A", b: env.b, storage: env.storage, user: userA, config: mountData(userA)},
		{name: "B", b: bB, storage: sB, user: userB, config: mountData(userB)},
	}
	for _, m := range mounts {
		_, err := env.requestOn(m.b, m.storage, logical.CreateOperation, "config/demo", m.config)
		require.NoError(t, err)
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	var (
		bad   unexpected
		tally = &counts{m: map[string]int{}}
		ops   atomic.Int64
		done  = make(chan struct{})
		// One tick channel per controller; workers drop ticks a busy
		// controller cannot take, so the workers set the pace.
		ticks = []chan struct{}{make(chan struct{}, 1), make(chan struct{}, 1), make(chan struct{}, 1)}
	)

	// checkToken is the isolation invariant: a token a mount hands out was
	// issued to that mount's API user.
	checkToken := func(m *stressMount, what string, resp *logical.Response) {
		token, _ := resp.Data["access_token"].(string)
		// A refresh token handed out as an access token counts as never
		// issued.
		client, known := env.iris.OwnerOf(token)
		known = known && env.iris.IsAccessToken(token)
		switch {
		case !known:
			bad.add("mount %s %s returned a token IRIS never issued", m.name, what)
		case client != m.user.ClientID:
			bad.add("mount %s %s returned a token of %s", m.name, what, client)
		}
	}
	// checkCoded accepts the statuses a read may answer with.
	checkCoded := func(m *stressMount, what string, err error) {
		var coded logical.HTTPCodedError
		if !errors.As(err, &coded) {
			bad.add("mount %s %s: uncoded error %T: %v", m.name, what, err, err)
			return
		}
		switch coded.Code() {
		case http.StatusBadRequest, http.StatusConflict, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			tally.inc(fmt.Sprintf("%s %d", what, coded.Code()))
		default:
			bad.add("mount %s %s: status %d: %v", m.name, what, coded.Code(), err)
		}
	}
	tick := func() {
		n := ops.Add(1)
		for i, ch := range ticks {
			every := int64(configEvery)
			if i == len(ticks)-1 {
				every = clockEvery
			}
			if n%every == 0 {
				select {
				case ch <- struct{}{}:
				default:
				}
			}
		}
	}

	var controllers sync.WaitGroup
	for i, m := range mounts {
		controllers.Add(1)
		go func() {
			defer controllers.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(100+i)))
			for step := 0; ; step++ {
				select {
				case <-done:
					return
				case <-ticks[i]:
				}
				op, data := logical.Operation(logical.UpdateOperation), map[string]interface{}{"verify": false}
				switch step % 12 {
				case 0, 2, 5, 9, 10:
					data["ttl"] = rng.IntN(3600)
				case 1:
					// A new generation: the shared session is dropped.
					data["scopes"] = "offline_access,api"
				case 3:
					data["renewable_leases"] = false
				case 4:
					// IRIS issues no refresh tokens for this scope.
					data["scopes"] = "api"
				case 6:
					data["renewable_leases"] = true
					data["scopes"] = "api,offline_access"
				case 7:
					op, data = logical.DeleteOperation, nil
				case 8:
					op, data = logical.CreateOperation, m.config
				case 11:
					data["refresh_floor"] = rng.IntN(1800)
				}
				resp, err := env.requestOn(m.b, m.storage, op, "config/demo", data)
				if err != nil || (resp != nil && resp.IsError()) {
					bad.add("mount %s config %s: %v %v", m.name, op, err, resp)
				}
				tally.inc("config " + string(op))
			}
		}()
	}
	controllers.Add(1)
	go func() {
		defer controllers.Done()
		for {
			select {
			case <-done:
				return
			case <-ticks[2]:
			}
			env.clock.Advance(clockJump)
			for _, m := range mounts {
				if err := m.b.periodicRefresh(context.Background(), &logical.Request{Storage: m.storage, MountPoint: testMount}); err != nil {
					bad.add("mount %s periodic: %v", m.name, err)
				}
			}
			tally.inc("clock jump")
		}
	}()

	var wg sync.WaitGroup
	start := make(chan struct{})
	for w := range workers {
		m := mounts[w%len(mounts)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			var leases []*logical.Secret
			renewOrRevoke := func(op logical.Operation) {
				i := rng.IntN(len(leases))
				req := &logical.Request{Operation: op, Path: "creds/demo", Secret: leases[i], Storage: m.storage, MountPoint: testMount}
				resp, err := m.b.HandleRequest(context.Background(), req)
				env.recordForLeakCheck(resp, err)
				if op == logical.RevokeOperation {
					if err != nil || (resp != nil && resp.IsError()) {
						bad.add("mount %s revoke: %v %v", m.name, err, resp)
					}
					leases = append(leases[:i], leases[i+1:]...)
					tally.inc("revoke")
					return
				}
				switch {
				case err == nil && resp != nil && resp.Secret != nil:
					checkToken(m, "renew", resp)
					leases[i] = resp.Secret
					tally.inc("renew ok")
				case err != nil && renewErrorTexts.MatchString(err.Error()):
					tally.inc("renew failed: " + renewErrorTexts.FindStringSubmatch(err.Error())[1])
				default:
					bad.add("mount %s renew: %v %+v", m.name, err, resp)
				}
			}
			<-start
			for range opsPerWorker {
				switch n := rng.IntN(10); {
				case n < 3:
					resp, err := env.requestOn(m.b, m.storage, logical.ReadOperation, "creds/demo", nil)
					switch {
					case err != nil:
						checkCoded(m, "creds", err)
					case resp == nil || resp.IsError() || resp.Secret == nil:
						bad.add("mount %s creds: %+v", m.name, resp)
					default:
						checkToken(m, "creds", resp)
						leases = append(leases, issued(resp, time.Now()))
						tally.inc("creds ok")
						if len(leases) > maxLeasesHeld {
							renewOrRevoke(logical.RevokeOperation)
						}
					}
				case n < 5 && len(leases) > 0:
					renewOrRevoke(logical.RenewOperation)
				case n < 6 && len(leases) > 0:
					renewOrRevoke(logical.RevokeOperation)
				default:
					resp, err := env.requestOn(m.b, m.storage, logical.ReadOperation, "token/demo", nil)
					switch {
					case err != nil:
						checkCoded(m, "token", err)
					case resp == nil || resp.IsError():
						bad.add("mount %s token: %+v", m.name, resp)
					default:
						checkToken(m, "token", resp)
						tally.inc("token ok")
					}
				}
				tick()
			}
			for len(leases) > 0 {
				renewOrRevoke(logical.RevokeOperation)
			}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	close(done)
	controllers.Wait()
	for _, m := range mounts {
		m.b.refresher.wait()
	}
	t.Logf("%d operations in %s", ops.Load(), time.Since(began).Round(time.Millisecond))
	logTally(t, tally)

	requireNoViolations(t, &bad)
	stats := env.iris.Stats()
	t.Logf("emulator: %+v", stats)
	require.Zero(t, stats.RefreshReuse, "a refresh token was sent twice")
	// Valid credentials throughout, and no refresh token is sent after the
	// plugin lost track of it: IRIS never had reason to refuse anything.
	require.Zero(t, stats.Rejected)
	require.Positive(t, stats.RefreshGrants, "the run never refreshed: it proves nothing about reuse")
	require.Positive(t, tally.m["renew ok"])
	require.Positive(t, tally.m["config "+string(logical.DeleteOperation)])

	// Whatever state the storm left, both mounts serve again once their
	// configs are in place, and each still gets its own user's tokens.
	for _, m := range mounts {
		_, err := env.requestOn(m.b, m.storage, logical.DeleteOperation, "config/demo", nil)
		require.NoError(t, err)
		_, err = env.requestOn(m.b, m.storage, logical.CreateOperation, "config/demo", m.config)
		require.NoError(t, err)
		for _, path := range []string{"token/demo", "creds/demo", "token/demo"} {
			resp, err := env.requestOn(m.b, m.storage, logical.ReadOperation, path, nil)
			require.NoError(t, err, "mount %s %s", m.name, path)
			checkToken(m, path, resp)
		}
	}
	requireNoViolations(t, &bad)
	require.Zero(t, env.iris.Stats().RefreshReuse)
	assertNoSecretsScan(t, env, userA, userB)
}

func requireNoViolations(t *testing.T, bad *unexpected) {
	t.Helper()
	bad.mu.Lock()
	list := append([]string(nil), bad.list...)
	bad.mu.Unlock()
	if len(list) > 0 {
		sort.Strings(list)
		t.Fatalf("%d invariant violations, first ones:\n%s", len(list), strings.Join(list[:min(len(list), 15)], "\n"))
	}
}

func logTally(t *testing.T, c *counts) {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.m))
	for k := range c.m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, c.m[k])
	}
	t.Log(b.String())
}

var emulatorToken = regexp.MustCompile(`(?:rt|at)_[A-Za-z0-9_-]{43}`)

// assertNoSecretsScan is assertNoSecrets for thousands of tokens: one pass
// over the text for anything shaped like an emulator token, then a lookup,
// instead of one search per token.
func assertNoSecretsScan(t *testing.T, env *testEnv, users ...iristest.User) {
	t.Helper()
	logs, shown := env.logs.String(), env.shown.String()
	for _, u := range users {
		for _, secret := range []string{u.Password, u.ClientSecret} {
			require.NotContains(t, logs, secret)
			require.NotContains(t, shown, secret)
		}
	}
	for _, secret := range env.writtenSecrets() {
		require.NotContains(t, logs, secret)
		require.NotContains(t, shown, secret)
	}
	for _, match := range emulatorToken.FindAllString(logs, -1) {
		require.False(t, env.iris.IsRefreshToken(match) || env.iris.IsAccessToken(match), "a token in the logs: %s", match)
	}
	for _, match := range emulatorToken.FindAllString(shown, -1) {
		require.False(t, env.iris.IsRefreshToken(match), "a refresh token was shown: %s", match)
	}
}
