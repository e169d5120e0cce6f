//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// TestFaults takes IRIS through an outage under a running Vault: 429s with
// Retry-After, then 500s, then a hang, then recovery. While IRIS is down,
// creds/ and token/ reads get a status that says "upstream" (503, 504) and a
// text that says what happened and after how many attempts, each within the
// client's 30-second budget; once IRIS answers again the very next reads
// succeed, with no restart. token/ keeps its session's refresh token through
// answers that prove IRIS did not act (429), and lets go of it after one that
// may come after IRIS acted (500): it is never sent twice, and the read logs
// in with the password grant instead, within the same request. A last phase
// loses the answer to a refresh IRIS did carry out and checks that the read
// that lost it answers with a token from the password grant, never sending
// the spent refresh token again.
//
// Two configs, of two API users of one emulator, share its faults (two users,
// because one user's grants go one at a time after a config write, until
// one succeeds, so that a changed password cannot lock it out): "faults" has a
// session (seeded by its verified config write) that falls due early in the
// outage, so its token/ reads need a refresh grant, and serves the creds/
// reads; "fresh" is stored with verify=false and has no session, so its
// token/ reads need a password grant.
func TestFaults(t *testing.T) {
	t.Parallel()
	const (
		// Tokens live 6 s, so token/ wants a new one 4 s after each grant
		// and, below the outage floor of 60 s, never serves the old one
		// through an outage: the reads have to fail, and then recover.
		lifetime       = 6 * time.Second
		requestTimeout = 2 * time.Second
		retryAfter     = 2 * time.Second
		// attempts and budget are DefaultRetryPolicy's; budget has slack
		// for Vault and the race detector on top of the client's 30 s.
		attempts = 4
		budget   = 35 * time.Second
	)
	testStart := time.Now()
	rec := newRecorder()
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })
	em := newEmulator(t, rec, lifetime)
	inflight := trackInFlight(em)

	// Healthy: the config write's grant seeds token/faults.
	phaseStart := time.Now()
	v.writeConfig(t, "faults", em, fmt.Sprintf("request_timeout=%d", int(requestTimeout/time.Second)))
	seed := em.Issued()[0]
	require.NotEmpty(t, seed.RefreshToken, "the emulator issued no refresh token")
	r := v.timedRead(mountPath + "/token/faults")
	require.Equal(t, http.StatusOK, r.res.Status, r.res.Raw)
	// The seed, unless this machine is so slow that it already fell due.
	current := r.accessToken()
	if current != seed.AccessToken {
		require.Equal(t, "refresh_token", em.issuedFor(t, current).GrantType)
	}
	r = v.timedRead(mountPath + "/creds/faults")
	require.Equal(t, http.StatusOK, r.res.Status, r.res.Raw)
	credsOK := 1
	freshUser := newE2EUser("e2e-fresh-")
	rec.addUserSecrets(freshUser)
	em.AddUser(freshUser)
	v.writeConfig(t, "fresh", &emulator{Server: em.Server, User: freshUser}, fmt.Sprintf("request_timeout=%d", int(requestTimeout/time.Second)), "verify=false")
	t.Logf("healthy: %s", time.Since(phaseStart).Round(time.Millisecond))

	// check asserts one failed read: status, the API user, what happened,
	// and that it came back within the budget.
	check := func(r timedRead, name string, status int, wants ...string) {
		t.Helper()
		require.NoError(t, r.err, r.path)
		text := r.res.errorsText()
		assert.Equal(t, status, r.res.Status, "%s: %s", r.path, r.res.Raw)
		assert.Contains(t, text, fmt.Sprintf("API user %q", name), r.path)
		for _, w := range wants {
			assert.Contains(t, text, w, r.path)
		}
		assert.NotContains(t, text, "upstream exploded", "%s quotes IRIS's response body", r.path)
		assert.Less(t, r.elapsed, budget, "%s took longer than the client's budget", r.path)
		t.Logf("%-18s %d in %5s: %s", r.path, r.res.Status, r.elapsed.Round(time.Millisecond), strings.Join(strings.Fields(text), " "))
	}
	// passwordRequests counts the password grants IRIS received since
	// request n.
	passwordRequests := func(n int) int {
		count := 0
		for _, r := range em.Requests()[n:] {
			if r.GrantType == "password" {
				count++
			}
		}
		return count
	}
	// refreshRequests are the refresh grants IRIS received since request n.
	refreshRequests := func(n int) []iristest.Request {
		var out []iristest.Request
		for _, r := range em.Requests()[n:] {
			if r.GrantType == "refresh_token" {
				out = append(out, r)
			}
		}
		return out
	}
	want := func(n int) string { return fmt.Sprintf("after %d attempts", n) }

	// 429 with Retry-After: every attempt waits the Retry-After, which is
	// longer than the backoff (at most 1.75 s over three waits), so a read
	// taking 3×Retry-After proves it was honoured. A 429 comes before any
	// processing, so the refresh grant is retried too, and its refresh
	// token is kept. token/faults is served from its session until it falls
	// due, then fails.
	phaseStart = time.Now()
	n := len(em.Requests())
	em.SetFault(&iristest.Fault{Status: http.StatusTooManyRequests, RetryAfter: fmt.Sprint(int(retryAfter / time.Second))})
	results := v.timedReads(mountPath+"/creds/faults", mountPath+"/token/fresh")
	served := 0
	var tokenResult timedRead
	eventually(t, lifetime+budget, "token/faults to fall due", func() (bool, string) {
		r := v.timedRead(mountPath + "/token/faults")
		require.NoError(t, r.err)
		if r.res.Status != http.StatusOK {
			tokenResult = r
			return true, ""
		}
		if tok := r.accessToken(); tok != current {
			// Only Vault's periodic refresh, running before the outage
			// began, can have replaced it.
			require.Equal(t, "refresh_token", em.issuedFor(t, tok).GrantType, "token/ served a token of another grant")
			current = tok
		}
		require.Empty(t, r.warnings(), "token/ warned before its token was due")
		served++
		return false, fmt.Sprintf("%d reads served the current token", served)
	})
	heldRefreshToken := em.issuedFor(t, current).RefreshToken
	require.NotEmpty(t, heldRefreshToken)
	for _, r := range append(collect(results), tokenResult) {
		name := path.Base(r.path)
		check(r, name, http.StatusServiceUnavailable, "IRIS is unavailable: HTTP 429 (rate limited) "+want(attempts), "try again later")
		assert.GreaterOrEqual(t, r.elapsed, (attempts-1)*retryAfter, "%s did not wait the Retry-After between attempts", r.path)
	}
	assert.Equal(t, 2*attempts, passwordRequests(n), "creds/faults and token/fresh made %d attempts each", attempts)
	refreshes := refreshRequests(n)
	assert.GreaterOrEqual(t, len(refreshes), attempts, "token/faults did not retry its refresh after a 429")
	for _, r := range refreshes {
		assert.Equal(t, heldRefreshToken, r.RefreshToken, "a refresh during the 429s sent another refresh token")
		assert.Equal(t, http.StatusTooManyRequests, r.Status)
	}
	t.Logf("429: %s (token/faults served %d reads before it fell due)", time.Since(phaseStart).Round(time.Millisecond), served)

	// 500: password grants are retried; a refresh grant is not, since IRIS
	// may have rotated the refresh token before failing. token/faults sends
	// the refresh token the 429s left it once, lets go of it, and logs in
	// within the same read, which then fails as the others do.
	phaseStart = time.Now()
	n = len(em.Requests())
	em.SetFault(&iristest.Fault{Status: http.StatusInternalServerError, ContentType: "text/plain", Body: "upstream exploded"})
	for _, r := range collect(v.timedReads(mountPath+"/creds/faults", mountPath+"/token/fresh", mountPath+"/token/faults")) {
		check(r, path.Base(r.path), http.StatusServiceUnavailable, "IRIS is unavailable: HTTP 500 "+want(attempts), "try again later")
	}
	assert.Equal(t, 3*attempts, passwordRequests(n), "creds/faults, token/fresh and token/faults made %d password attempts each", attempts)
	refreshes = refreshRequests(n)
	if assert.Len(t, refreshes, 1, "token/faults sent its refresh token more than once, or never") {
		assert.Equal(t, heldRefreshToken, refreshes[0].RefreshToken, "the refresh token the 429s left was not the one sent")
		assert.Equal(t, http.StatusInternalServerError, refreshes[0].Status)
	}
	t.Logf("500: %s", time.Since(phaseStart).Round(time.Millisecond))

	// A hang: every attempt ends at request_timeout, and password grants
	// are retried. token/faults holds no refresh token any more, so it
	// reads after creds/faults: one API user's password grants go one at a
	// time, and a second would only wait for the first.
	phaseStart = time.Now()
	n = len(em.Requests())
	em.SetFault(&iristest.Fault{Delay: time.Hour})
	hung := collect(v.timedReads(mountPath+"/creds/faults", mountPath+"/token/fresh"))
	hung = append(hung, v.timedRead(mountPath+"/token/faults"))
	for _, r := range hung {
		check(r, path.Base(r.path), http.StatusGatewayTimeout, "IRIS did not answer in time "+want(attempts), "request_timeout")
		assert.GreaterOrEqual(t, r.elapsed, attempts*requestTimeout)
	}
	assert.Equal(t, 3*attempts, passwordRequests(n))
	assert.Empty(t, refreshRequests(n), "a refresh token given up in the 500s was sent again")
	t.Logf("hang: %s", time.Since(phaseStart).Round(time.Millisecond))

	// Recovery. A request held by the hang (a background refresh, say)
	// still fails when its attempt times out; IRIS has recovered once none
	// is left, and from then on the very first reads must succeed.
	phaseStart = time.Now()
	em.SetFault(nil)
	eventually(t, requestTimeout+5*time.Second, "the requests held by the hang to end", func() (bool, string) {
		n := inflight.Load()
		return n == 0, fmt.Sprintf("%d requests in flight", n)
	})
	n = len(em.Requests())
	r = v.timedRead(mountPath + "/creds/faults")
	require.Equal(t, http.StatusOK, r.res.Status, "creds/ after recovery: %s", r.res.Raw)
	credsOK++
	r = v.timedRead(mountPath + "/token/fresh")
	require.Equal(t, http.StatusOK, r.res.Status, "token/fresh after recovery: %s", r.res.Raw)
	r = v.timedRead(mountPath + "/token/faults")
	require.Equal(t, http.StatusOK, r.res.Status, "token/faults after recovery: %s", r.res.Raw)
	assert.Empty(t, r.warnings())
	recovered := r.accessToken()
	require.NotEqual(t, current, recovered)
	active, _ := em.Introspect(recovered)
	assert.True(t, active)
	assert.Equal(t, "password", em.issuedFor(t, recovered).GrantType,
		"token/faults recovered without its password grant, though its refresh token was given up")
	assert.Empty(t, refreshRequests(n), "a refresh token given up in the 500s was sent again")
	t.Logf("recovery: %s", time.Since(phaseStart).Round(time.Millisecond))

	// Every password grant IRIS carried out is accounted for: the config
	// write, creds/ reads, token/fresh's first token and token/faults'
	// recovery. No refresh token was sent twice or refused.
	st := em.Stats()
	assert.Equal(t, 1+credsOK+1+1, st.PasswordGrants)
	assert.Zero(t, st.RefreshReuse, "a refresh token was sent twice")
	assert.Zero(t, st.Rejected)

	// A lost answer: IRIS rotates the refresh token, then hangs. The
	// plugin cannot know whether IRIS acted, so it never sends that
	// refresh token again: the read that lost the answer logs in with the
	// password grant instead and answers with its token. token/fresh goes
	// first, so that only token/faults refreshes.
	phaseStart = time.Now()
	v.mustCLI(t, "delete", mountPath+"/config/fresh")
	n = len(em.Requests())
	em.FailNext(1, iristest.Fault{Delay: time.Hour, AfterHandling: true})
	var final timedRead
	eventually(t, lifetime+budget, "token/faults to replace its token past a lost refresh answer", func() (bool, string) {
		final = v.timedRead(mountPath + "/token/faults")
		switch {
		case final.err != nil:
			return false, final.err.Error()
		case final.res.Status != http.StatusOK:
			t.Fatalf("token/faults answered %d on a lost refresh answer: %s", final.res.Status, final.res.Raw)
		}
		return final.accessToken() != recovered, "still serving the recovered token"
	})
	assert.Empty(t, final.warnings())
	assert.Equal(t, "password", em.issuedFor(t, final.accessToken()).GrantType)
	refreshes = refreshRequests(n)
	require.Len(t, refreshes, 1, "a refresh token whose answer was lost was sent again")
	assert.Zero(t, refreshes[0].Status, "the lost refresh was answered")
	lost := em.issuedFor(t, refreshes[0].RefreshToken)
	assert.Equal(t, recovered, lost.AccessToken, "the lost refresh did not send the recovered session's refresh token")
	st = em.Stats()
	assert.Zero(t, st.RefreshReuse, "a refresh token was sent twice")
	assert.Zero(t, st.Rejected)
	t.Logf("lost answer: %s (the read took %s)", time.Since(phaseStart).Round(time.Millisecond), final.elapsed.Round(time.Millisecond))
	t.Logf("TestFaults: %s in all", time.Since(testStart).Round(time.Millisecond))
}

// trackInFlight counts the emulator's /token requests that are still being
// handled, faults included.
func trackInFlight(em *emulator) *atomic.Int64 {
	var n atomic.Int64
	em.SetResponseOverride(func(_ http.ResponseWriter, r *http.Request) bool {
		n.Add(1)
		// The request's context ends when its handler returns or its
		// client goes away.
		go func() {
			<-r.Context().Done()
			n.Add(-1)
		}()
		return false
	})
	return &n
}

// timedRead is one read over the HTTP API and how long it took.
type timedRead struct {
	path    string
	res     apiResult
	elapsed time.Duration
	err     error
}

func (r timedRead) data() map[string]any {
	d, _ := r.res.Body["data"].(map[string]any)
	return d
}

func (r timedRead) accessToken() string {
	s, _ := r.data()["access_token"].(string)
	return s
}

func (r timedRead) warnings() []any {
	w, _ := r.res.Body["warnings"].([]any)
	return w
}

// timedRead reads /v1/<path>. Unlike raw it reports failures instead of
// failing the test, so that it can run in any goroutine.
func (v *vaultServer) timedRead(p string) timedRead {
	out := timedRead{path: p}
	client := v.api()
	req := client.NewRequest(http.MethodGet, "/v1/"+p)
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	start := time.Now()
	//lint:ignore SA1019 the raw request is the point: status codes and bodies as Vault sent them
	resp, err := client.RawRequestWithContext(ctx, req)
	if resp == nil {
		out.elapsed, out.err = time.Since(start), err
		return out
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	out.elapsed = time.Since(start)
	if err != nil {
		out.err = err
		return out
	}
	out.res = apiResult{Status: resp.StatusCode, Raw: string(b)}
	if len(strings.TrimSpace(out.res.Raw)) > 0 {
		if err := jsonUnmarshal(out.res.Raw, &out.res.Body); err != nil {
			out.err = fmt.Errorf("%s answered %d with a body that is not JSON", p, resp.StatusCode)
		}
	}
	return out
}

// timedReads reads every path at once; the results arrive in the order
// given.
func (v *vaultServer) timedReads(paths ...string) <-chan timedRead {
	results := make([]timedRead, len(paths))
	var wg sync.WaitGroup
	for i, p := range paths {
		wg.Go(func() { results[i] = v.timedRead(p) })
	}
	ch := make(chan timedRead, len(paths))
	go func() {
		wg.Wait()
		for _, r := range results {
			ch <- r
		}
		close(ch)
	}()
	return ch
}

func collect(ch <-chan timedRead) []timedRead {
	var out []timedRead
	for r := range ch {
		out = append(out, r)
	}
	return out
}
