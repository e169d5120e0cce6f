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

// TestFaults takes IRIS through an outage under a running Vault: 500s, then
// 429s with Retry-After, then a hang, then recovery. While IRIS is down,
// creds/ and token/ reads get a status that says "upstream" (503, 504) and a
// text that says what happened and after how many attempts, each within the
// client's 30-second budget; once IRIS answers again the very next reads
// succeed, with no restart, and token/ carries on with the session it had
// before the outage (a refresh grant with the kept refresh token, never a
// password grant, never a reused refresh token). A last phase loses the
// answer to a refresh IRIS did carry out, the one case in which the plugin
// may legitimately send a spent refresh token, and checks that token/ falls
// back to the password grant instead of stranding the session.
//
// Two configs of the emulator's API user share its faults: "faults" has a
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
	v.writeConfig(t, "fresh", em, fmt.Sprintf("request_timeout=%d", int(requestTimeout/time.Second)), "verify=false")
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
	// request n: creds/ reads and token/fresh make them, the background
	// refresh only makes refresh grants, so this counts our reads' attempts.
	passwordRequests := func(n int) int {
		count := 0
		for _, r := range em.Requests()[n:] {
			if r.GrantType == "password" {
				count++
			}
		}
		return count
	}
	want := func(n int) string { return fmt.Sprintf("after %d attempts", n) }

	// 500: password grants are retried; a refresh grant is not, since IRIS
	// may have rotated the refresh token before failing. token/faults is
	// served from its session until it falls due, then fails.
	phaseStart = time.Now()
	n := len(em.Requests())
	em.SetFault(&iristest.Fault{Status: http.StatusInternalServerError, ContentType: "text/plain", Body: "upstream exploded"})
	results := v.timedReads(mountPath+"/creds/faults", mountPath+"/token/fresh")
	served := 0
	var tokenResult timedRead
	eventually(t, lifetime+10*time.Second, "token/faults to fall due", func() (bool, string) {
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
	check(<-results, "faults", http.StatusServiceUnavailable, "IRIS is unavailable: HTTP 500 "+want(attempts), "try again later")
	check(<-results, "fresh", http.StatusServiceUnavailable, "IRIS is unavailable: HTTP 500 "+want(attempts))
	check(tokenResult, "faults", http.StatusServiceUnavailable, "IRIS is unavailable: HTTP 500 "+refreshNotRetried, "try again later")
	assert.Equal(t, 2*attempts, passwordRequests(n), "creds/faults and token/fresh made %d attempts each", attempts)
	t.Logf("500: %s (token/faults served %d reads before it fell due)", time.Since(phaseStart).Round(time.Millisecond), served)

	// 429 with Retry-After: every attempt waits the Retry-After, which is
	// longer than the backoff (at most 1.75 s over three waits), so a read
	// taking 3×Retry-After proves it was honoured. A 429 comes before any
	// processing, so the refresh grant is retried too.
	phaseStart = time.Now()
	n = len(em.Requests())
	em.SetFault(&iristest.Fault{Status: http.StatusTooManyRequests, RetryAfter: fmt.Sprint(int(retryAfter / time.Second))})
	for _, r := range collect(v.timedReads(mountPath+"/creds/faults", mountPath+"/token/fresh", mountPath+"/token/faults")) {
		name := path.Base(r.path)
		check(r, name, http.StatusServiceUnavailable, "IRIS is unavailable: HTTP 429 (rate limited) "+want(attempts))
		assert.GreaterOrEqual(t, r.elapsed, (attempts-1)*retryAfter, "%s did not wait the Retry-After between attempts", r.path)
	}
	assert.Equal(t, 2*attempts, passwordRequests(n))
	t.Logf("429: %s", time.Since(phaseStart).Round(time.Millisecond))

	// A hang: every attempt ends at request_timeout. A password grant is
	// retried; a refresh grant whose answer never came may have been acted
	// on, so it is not.
	phaseStart = time.Now()
	n = len(em.Requests())
	em.SetFault(&iristest.Fault{Delay: time.Hour})
	results = v.timedReads(mountPath+"/creds/faults", mountPath+"/token/fresh", mountPath+"/token/faults")
	hung := collect(results)
	for _, r := range hung {
		name := path.Base(r.path)
		if r.path == mountPath+"/token/faults" {
			check(r, name, http.StatusGatewayTimeout, "IRIS did not answer in time "+refreshNotRetried, "IRIS did not answer within request_timeout")
			assert.GreaterOrEqual(t, r.elapsed, requestTimeout)
			continue
		}
		check(r, name, http.StatusGatewayTimeout, "IRIS did not answer in time "+want(attempts), "request_timeout")
		assert.GreaterOrEqual(t, r.elapsed, attempts*requestTimeout)
	}
	assert.Equal(t, 2*attempts, passwordRequests(n))
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
	assert.Equal(t, "refresh_token", em.issuedFor(t, recovered).GrantType,
		"token/faults did not carry on with its session's refresh token")
	t.Logf("recovery: %s", time.Since(phaseStart).Round(time.Millisecond))

	// Nothing was lost: every password grant IRIS carried out is accounted
	// for (the config write, creds/ reads, token/fresh's first token), so
	// token/faults never fell back to one; and no refresh token was sent
	// twice or refused.
	st := em.Stats()
	assert.Equal(t, 1+credsOK+1, st.PasswordGrants, "a token/ session was lost in the outage")
	assert.Positive(t, st.RefreshGrants)
	assert.Zero(t, st.RefreshReuse, "a refresh token was sent twice")
	assert.Zero(t, st.Rejected)

	// A lost answer: IRIS rotates the refresh token, then hangs. The
	// plugin cannot know whether IRIS acted, keeps the refresh token, and
	// sends it again on the next refresh; IRIS refuses it as a reuse and
	// token/ falls back to the password grant. That reuse is the price of
	// not stranding the session, and the only one this test allows.
	// token/fresh goes first, so that only token/faults refreshes.
	phaseStart = time.Now()
	v.mustCLI(t, "delete", mountPath+"/config/fresh")
	refreshesBefore := len(em.refreshRequests())
	em.FailNext(1, iristest.Fault{Delay: time.Hour, AfterHandling: true})
	timeouts := 0
	var final timedRead
	eventually(t, lifetime+budget, "token/faults to recover from a lost refresh answer", func() (bool, string) {
		final = v.timedRead(mountPath + "/token/faults")
		switch {
		case final.err != nil:
			return false, final.err.Error()
		case final.res.Status == http.StatusGatewayTimeout:
			timeouts++
			return false, "504"
		case final.res.Status != http.StatusOK:
			t.Fatalf("token/faults answered %d: %s", final.res.Status, final.res.Raw)
		}
		return final.accessToken() != recovered, "still serving the recovered token"
	})
	assert.LessOrEqual(t, timeouts, 1, "more than one read failed on one lost answer")
	assert.Equal(t, "password", em.issuedFor(t, final.accessToken()).GrantType)
	refreshes := em.refreshRequests()[refreshesBefore:]
	require.Len(t, refreshes, 2, "one refresh lost its answer, the next reused its token")
	assert.Zero(t, refreshes[0].Status, "the lost refresh was answered")
	assert.Equal(t, http.StatusBadRequest, refreshes[1].Status)
	assert.Equal(t, refreshes[0].RefreshToken, refreshes[1].RefreshToken)
	st = em.Stats()
	assert.Equal(t, 1, st.RefreshReuse, "only the lost answer's refresh token may be reused")
	assert.Equal(t, 1, st.Rejected, "only the reuse may be refused")
	t.Logf("lost answer: %s (%d reads failed on it)", time.Since(phaseStart).Round(time.Millisecond), timeouts)
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
	//nolint:staticcheck // the raw request is the point: status codes as sent
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

// refreshNotRetried is how an error says a refresh grant that may have
// reached IRIS was not sent again.
const refreshNotRetried = "after 1 attempt (not retried: IRIS may already have used the refresh token)"
