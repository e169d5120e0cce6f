//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"vault-plugin-secrets-iris/iristest"
)

// agentDestination is the destination in the Agent template of
// docs/consumers.md; the test renders to a file of its own instead and
// changes nothing else.
const agentDestination = "/run/secrets/iris-token"

// tokenKeys are the keys of a token/ response's data, as the curl example
// of docs/paths.md shows them.
var tokenKeys = []string{"access_token", "expires_at", "expires_in", "last_vault_rotation", "rotation_period", "scope", "token_type", "ttl"}

// docAgentTemplate is the template stanza of docs/consumers.md, read from
// the page itself so that the example users copy is the one that runs here.
func docAgentTemplate(t testing.TB) string {
	t.Helper()
	block := docBlock(t, consumersPage, "agent-template.hcl")
	require.Contains(t, block, `secret \"`+mountPath+`/token/demo\"`,
		"the page's template no longer reads %s/token/demo, which this test configures", mountPath)
	require.Equal(t, 1, strings.Count(block, strconv.Quote(agentDestination)),
		"the page's template no longer renders to %s, which this test replaces", agentDestination)
	return block
}

// tokenResponse is a token/ read as Vault sends it, numbers left as the JSON
// text they arrived in: Vault Agent panics on a string ttl and ignores a
// fractional one, so the wire form is what matters.
type tokenResponse struct {
	LeaseID       string         `json:"lease_id"`
	LeaseDuration json.Number    `json:"lease_duration"`
	Renewable     bool           `json:"renewable"`
	Data          map[string]any `json:"data"`
	Warnings      []string       `json:"warnings"`
	Errors        []string       `json:"errors"`
}

func decodeTokenResponse(raw []byte) (tokenResponse, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var r tokenResponse
	err := dec.Decode(&r)
	return r, err
}

// jsonInteger returns data[key] if it is a JSON integer.
func jsonInteger(data map[string]any, key string) (int64, error) {
	n, ok := data[key].(json.Number)
	if !ok {
		return 0, fmt.Errorf("%s is %T, not a JSON number", key, data[key])
	}
	if strings.ContainsAny(n.String(), ".eE") {
		return 0, fmt.Errorf("%s is %s, not a JSON integer", key, n)
	}
	return n.Int64()
}

// check returns what is wrong with a successful token/ read: a lease, a key
// missing or extra, ttl and rotation_period not integers or out of order.
func (r tokenResponse) check() error {
	var problems []string
	if r.LeaseID != "" || r.LeaseDuration.String() != "0" || r.Renewable {
		problems = append(problems, fmt.Sprintf("has a lease (id %q, duration %s, renewable %t)", r.LeaseID, r.LeaseDuration, r.Renewable))
	}
	var keys []string
	for k := range r.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, tokenKeys) {
		problems = append(problems, fmt.Sprintf("data keys %v, want %v", keys, tokenKeys))
	}
	ttl, err := jsonInteger(r.Data, "ttl")
	if err != nil {
		problems = append(problems, err.Error())
	}
	period, err := jsonInteger(r.Data, "rotation_period")
	if err != nil {
		problems = append(problems, err.Error())
	}
	if _, err := jsonInteger(r.Data, "expires_in"); err != nil {
		problems = append(problems, err.Error())
	}
	if ttl < 1 || ttl > period {
		problems = append(problems, fmt.Sprintf("ttl %d is not within [1, rotation_period %d]", ttl, period))
	}
	if r.accessToken() == "" {
		problems = append(problems, "no access_token")
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("token/ response: %s", strings.Join(problems, "; "))
}

func (r tokenResponse) accessToken() string {
	s, _ := r.Data["access_token"].(string)
	return s
}

func (r tokenResponse) int(key string) int64 {
	n, _ := jsonInteger(r.Data, key)
	return n
}

// readToken reads iris/token/<name> over the HTTP API.
func (v *vaultServer) readToken(t testing.TB, name string) (apiResult, tokenResponse) {
	t.Helper()
	res := v.raw(t, "GET", mountPath+"/token/"+name, nil)
	tr, err := decodeTokenResponse([]byte(res.Raw))
	require.NoError(t, err, "token/ answered %d with a body that is not JSON", res.Status)
	return res, tr
}

// tokenGrants are the successful grants an emulator made, oldest first.
func tokenGrants(em *emulator) []time.Time {
	var out []time.Time
	for _, r := range em.Requests() {
		if r.Status == http.StatusOK {
			out = append(out, r.Time)
		}
	}
	return out
}

// TestTokenAgent runs token/ against the clock in one Vault dev server: a
// real Vault Agent rendering the template of docs/consumers.md over three
// token lifetimes, and, alongside it, an IRIS outage ridden out down to the floor.
// Both wait on token lifetimes, so they overlap rather than queue.
func TestTokenAgent(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })

	t.Run("Templates", func(t *testing.T) {
		t.Parallel()
		testTokenAgentTemplates(t, v)
	})
	t.Run("Outage", func(t *testing.T) {
		t.Parallel()
		testTokenOutage(t, v)
	})
}

// renderedFile is one file the Agent renders, and what the samples of it
// showed.
type renderedFile struct {
	label string
	path  string
	em    *emulator

	distinct int
	last     string
	minLeft  time.Duration
}

// sample checks that the file holds a token IRIS accepts right now.
func (f *renderedFile) sample(t *testing.T, rec *recorder, n int) {
	t.Helper()
	b, err := os.ReadFile(f.path)
	if err != nil {
		t.Errorf("sample %d: %s: %v", n, f.label, err)
		return
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		t.Errorf("sample %d: the %s file is empty", n, f.label)
		return
	}
	active, expiresAt := f.em.Introspect(tok)
	left := time.Until(expiresAt)
	if tok != f.last {
		f.distinct++
		f.last = tok
		rec.addOutput("rendered "+f.label, string(b))
	}
	// The token itself is not printed: test output is a log.
	if !active || left <= 0 {
		t.Errorf("sample %d: the %s file holds its token #%d, which IRIS does not accept (active %t, %s left)",
			n, f.label, f.distinct, active, left.Round(time.Millisecond))
	}
	if f.minLeft == 0 || left < f.minLeft {
		f.minLeft = left
	}
}

// testTokenAgentTemplates runs one Vault Agent with two templates: the
// one of docs/consumers.md on token/demo and one on a creds/ lease, with
// 30-second tokens.
// At every sample over more than three lifetimes both files must hold a
// live token, and the token/ grants must follow the token lifetime however
// many extra reads arrive.
func testTokenAgentTemplates(t *testing.T, v *vaultServer) {
	const (
		lifetime = 30 * time.Second
		// refreshAfter is when token/ replaces a token: a third of its
		// lifetime before it expires.
		refreshAfter = lifetime * 2 / 3
		window       = 100 * time.Second
		extraReads   = 50
		// Every cliEvery-th extra read goes through the CLI, the rest
		// through the HTTP API.
		cliEvery = 10
	)
	tokenEm := newEmulator(t, v.rec, lifetime)
	credsEm := newEmulator(t, v.rec, lifetime)
	// Separate API users, so that each emulator's grants belong to one path.
	v.writeConfig(t, "demo", tokenEm)
	v.writeConfig(t, "demo-creds", credsEm)

	stanza := docAgentTemplate(t)
	tokenFile := &renderedFile{label: "token/", em: tokenEm}
	credsFile := &renderedFile{label: "creds/", em: credsEm}
	a := startAgentWith(t, v, func(dir string) string {
		tokenFile.path = filepath.Join(dir, "iris-token")
		credsFile.path = filepath.Join(dir, "iris-creds")
		return strings.Replace(stanza, strconv.Quote(agentDestination), strconv.Quote(tokenFile.path), 1) +
			fmt.Sprintf(`
template {
  contents    = "{{ with secret \"%s/creds/demo-creds\" }}{{ .Data.access_token }}{{ end }}"
  destination = %q
}
`, mountPath, credsFile.path)
	})
	files := []*renderedFile{tokenFile, credsFile}
	for _, f := range files {
		a.waitFile(t, f.path, startTimeout, "Agent to render the "+f.label+" template", func(s string) bool {
			return strings.TrimSpace(s) != ""
		})
	}

	windowStart := time.Now()
	deadline := windowStart.Add(window)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	samples, reads, cliReads := 0, 0, 0
	var maxGap time.Duration
	last := windowStart
	// Past the window until the extra reads are done: on a loaded machine
	// ticks are dropped, and fewer samples would mean fewer reads.
	for now := windowStart; now.Before(deadline) || reads < extraReads; now = <-tick.C {
		a.checkRunning(t)
		samples++
		maxGap = max(maxGap, now.Sub(last))
		last = now
		for _, f := range files {
			f.sample(t, v.rec, samples)
		}
		if samples%2 == 0 && reads < extraReads {
			reads++
			var tr tokenResponse
			if reads%cliEvery == 0 {
				cliReads++
				res := v.cli(t, "read", "-format=json", mountPath+"/token/demo")
				require.Zero(t, res.ExitCode, "%s", res)
				var err error
				tr, err = decodeTokenResponse([]byte(res.Stdout))
				require.NoError(t, err)
			} else {
				res, r := v.readToken(t, "demo")
				require.Equal(t, http.StatusOK, res.Status, res.Raw)
				tr = r
			}
			assert.NoError(t, tr.check(), "extra read %d", reads)
			active, _ := tokenEm.Introspect(tr.accessToken())
			assert.True(t, active, "extra read %d returned a token IRIS does not accept", reads)
		}
	}
	windowEnd := time.Now()
	elapsed := windowEnd.Sub(windowStart)

	grants := tokenGrants(tokenEm)
	inWindow := 0
	for _, g := range grants {
		if !g.Before(windowStart) && !g.After(windowEnd) {
			inWindow++
		}
	}
	minGrantGap := time.Duration(0)
	for i := 1; i < len(grants); i++ {
		if gap := grants[i].Sub(grants[i-1]); minGrantGap == 0 || gap < minGrantGap {
			minGrantGap = gap
		}
	}
	tokenStats, credsStats := tokenEm.Stats(), credsEm.Stats()
	t.Logf("window %s, %d samples (largest gap %s), %d extra token/ reads (%d by CLI)",
		elapsed.Round(time.Millisecond), samples, maxGap.Round(time.Millisecond), reads, cliReads)
	t.Logf("token/ file: %d distinct tokens, least life left at a sample %s; grants in window %d, in all %d (password %d, refresh %d), closest two %s apart",
		tokenFile.distinct, tokenFile.minLeft.Round(time.Millisecond), inWindow, len(grants),
		tokenStats.PasswordGrants, tokenStats.RefreshGrants, minGrantGap.Round(time.Millisecond))
	t.Logf("creds/ file: %d distinct tokens, least life left at a sample %s; grants in all %d",
		credsFile.distinct, credsFile.minLeft.Round(time.Millisecond), credsStats.PasswordGrants)

	assert.Equal(t, extraReads, reads)
	assert.LessOrEqual(t, maxGap, 5*time.Second, "the files were not sampled about every second")
	// A file that kept its first token would have failed the samples; these
	// say that the Agent followed the rotation rather than got lucky.
	minDistinct := int(window / lifetime)
	assert.GreaterOrEqual(t, tokenFile.distinct, minDistinct, "the token/ file did not follow the rotation")
	assert.GreaterOrEqual(t, credsFile.distinct, minDistinct, "the creds/ file did not follow the leases")
	// docs/paths.md promises that templates pick up each new token while the
	// old one still has a third of its life left; the Agent re-reads up to
	// a second after the refresh point, and may be slow to write the file.
	assert.Greater(t, tokenFile.minLeft, lifetime/3-4*time.Second,
		"the token/ file kept a token well past its refresh point")

	// One grant per rotation period, whatever the Agent and the extra reads
	// did: fifty reads that each cost a grant would blow this bound.
	assert.LessOrEqual(t, inWindow, int(elapsed/refreshAfter)+2,
		"token/ grants in the window do not follow the token lifetime")
	// A read replaces the token only past its refresh point, and the
	// background refresh only past half its life: no two grants come
	// closer, whatever the reads.
	assert.GreaterOrEqual(t, minGrantGap, lifetime/2-time.Second, "two token/ grants came too close together")
	assert.Equal(t, 1, tokenStats.PasswordGrants, "token/ fell back to the password grant (the config write made the only one)")
	assert.Zero(t, tokenStats.RefreshReuse)
	assert.Zero(t, tokenStats.Rejected)
	assert.Zero(t, credsStats.Rejected)

	// The leak check at the end covers the rendered files and the Agent log.
	assert.Positive(t, v.rec.outputsContaining(tokenFile.last), "the recorder missed the rendered token/ file")
}

// testTokenOutage rides out an IRIS outage on token/. With 140-second
// tokens and refresh_floor=70 the token is due at 70 s and the outage floor
// (the larger of 60 s and 5% of the lifetime) is reached at 80 s: in between
// reads serve the current token with a warning and a short ttl, after it
// they fail, and once IRIS is back the kept refresh token carries on.
func testTokenOutage(t *testing.T, v *vaultServer) {
	const (
		lifetime = 140 * time.Second
		floor    = 70 * time.Second
		// outageFloor is max(60 s, lifetime/20).
		outageFloor = 60 * time.Second
		// slack absorbs request latency and the client's retries.
		slack = 2 * time.Second
	)
	em := newEmulator(t, v.rec, lifetime)
	const name = "outage"
	v.writeConfig(t, name, em, "refresh_floor="+strconv.Itoa(int(floor/time.Second)))
	first := em.Issued()[0]

	res, tr := v.readToken(t, name)
	require.Equal(t, http.StatusOK, res.Status, res.Raw)
	require.NoError(t, tr.check())
	require.Equal(t, first.AccessToken, tr.accessToken(), "the config write's grant did not seed the session")
	assert.Equal(t, int64(lifetime/time.Second-floor/time.Second), tr.int("rotation_period"))
	_, expiresAt := em.Introspect(first.AccessToken)

	em.SetFault(&iristest.Fault{Status: http.StatusServiceUnavailable})

	const (
		fresh = iota
		degraded
		failed
	)
	phase := fresh
	freshReads, degradedReads := 0, 0
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for phase != failed {
		if time.Now().After(expiresAt) {
			t.Fatalf("the token expired and reads still did not fail (%d fresh, %d degraded reads)", freshReads, degradedReads)
		}
		<-tick.C
		leftBefore := time.Until(expiresAt)
		res, tr := v.readToken(t, name)
		leftAfter := time.Until(expiresAt)
		switch {
		case res.Status == http.StatusOK && len(tr.Warnings) == 0:
			require.Equal(t, fresh, phase, "a read after the outage began served the token without a warning")
			require.Equal(t, first.AccessToken, tr.accessToken())
			assert.NoError(t, tr.check())
			freshReads++
		case res.Status == http.StatusOK:
			phase = degraded
			degradedReads++
			require.Equal(t, first.AccessToken, tr.accessToken())
			assert.NoError(t, tr.check())
			assert.Contains(t, strings.Join(tr.Warnings, "\n"), "could not replace the token")
			assert.LessOrEqual(t, tr.int("ttl"), int64(15), "a token served during an outage needs a short ttl")
			assert.Greater(t, leftBefore, outageFloor-slack, "served a token below the outage floor")
		default:
			phase = failed
			assert.Equal(t, http.StatusServiceUnavailable, res.Status, res.Raw)
			assert.Contains(t, strings.Join(tr.Errors, "\n"), strconv.Quote(name))
			assert.LessOrEqual(t, leftAfter, outageFloor+slack, "gave up on a token above the outage floor")
		}
	}
	t.Logf("outage: %d fresh reads, %d served with a warning, then a 503", freshReads, degradedReads)
	assert.Positive(t, degradedReads, "no read served the current token during the outage")
	requests := em.Requests()
	for _, r := range requests[1:] {
		assert.GreaterOrEqual(t, r.Time.Sub(requests[0].Time), floor-time.Second,
			"token/ called IRIS before the token was due")
	}

	em.SetFault(nil)
	res, tr = v.readToken(t, name)
	require.Equal(t, http.StatusOK, res.Status, res.Raw)
	require.NoError(t, tr.check())
	assert.Empty(t, tr.Warnings)
	assert.NotEqual(t, first.AccessToken, tr.accessToken())
	active, _ := em.Introspect(tr.accessToken())
	assert.True(t, active)
	// A 503 may come from a server that acted before it fell over: the
	// refresh token was sent once, then given up for the password grant.
	refreshes := em.refreshRequests()
	require.Len(t, refreshes, 1, "a refresh token answered by a 503 is never sent again")
	assert.Equal(t, first.RefreshToken, refreshes[0].RefreshToken)
	st := em.Stats()
	assert.Equal(t, 2, st.PasswordGrants, "the config write's, and recovery's after the refresh token was given up")
	assert.Zero(t, st.RefreshGrants)
	assert.Zero(t, st.RefreshReuse)
	assert.Zero(t, st.Rejected)
}

// TestTokenFanOut sends 200 parallel token/ reads through Vault's HTTP API:
// they share the session the config write seeded, so IRIS sees no grant and
// Vault keeps no lease.
func TestTokenFanOut(t *testing.T) {
	t.Parallel()
	rec := newRecorder()
	v := startDevVault(t, rec)
	t.Cleanup(func() { v.finish(t) })

	em := newEmulator(t, rec, time.Hour)
	const name = "fanout"
	v.writeConfig(t, name, em)
	// A creds/ lease, so that the lease listings below demonstrably see
	// this mount's leases.
	v.readCreds(t, name)
	before := em.Stats()

	const readers = 200
	transport := &http.Transport{MaxIdleConnsPerHost: readers}
	defer transport.CloseIdleConnections()
	client := &http.Client{Timeout: cliTimeout, Transport: &recordingTransport{base: transport, rec: rec}}
	url := v.address() + "/v1/" + mountPath + "/token/" + name

	type result struct {
		status int
		resp   tokenResponse
		err    error
	}
	results := make([]result, readers)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range readers {
		wg.Go(func() {
			<-start
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				results[i].err = err
				return
			}
			req.Header.Set("X-Vault-Token", v.rootToken())
			resp, err := client.Do(req)
			if err != nil {
				results[i].err = err
				return
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				results[i].err = err
				return
			}
			results[i].status = resp.StatusCode
			results[i].resp, results[i].err = decodeTokenResponse(body)
		})
	}
	began := time.Now()
	close(start)
	wg.Wait()
	took := time.Since(began)

	after := em.Stats()
	grants := after.PasswordGrants + after.RefreshGrants - before.PasswordGrants - before.RefreshGrants
	t.Logf("%d parallel token/ reads took %s and cost %d grants (%d requests) at IRIS",
		readers, took.Round(time.Millisecond), grants, after.Requests-before.Requests)
	assert.LessOrEqual(t, grants, 1, "parallel token/ reads cost more than one grant")
	assert.Equal(t, grants, after.Requests-before.Requests, "IRIS saw failed requests")

	tokens := map[string]bool{}
	for i, r := range results {
		if !assert.NoError(t, r.err, "reader %d", i) || !assert.Equal(t, http.StatusOK, r.status, "reader %d: %v", i, r.resp.Errors) {
			continue
		}
		assert.NoError(t, r.resp.check(), "reader %d", i)
		// 3600 s tokens are replaced after 2400 s, the "40m" of docs/paths.md.
		assert.Equal(t, int64(2400), r.resp.int("rotation_period"), "reader %d", i)
		tokens[r.resp.accessToken()] = true
	}
	assert.Len(t, tokens, 1, "parallel readers got different tokens")
	for tok := range tokens {
		active, _ := em.Introspect(tok)
		assert.True(t, active, "token/ served a token IRIS does not accept")
		assert.Positive(t, rec.outputsContaining(tok), "the recorder missed the fan-out responses")
	}

	stdout := v.mustCLI(t, "read", "-format=json", mountPath+"/token/"+name)
	cliRead, err := decodeTokenResponse([]byte(stdout))
	require.NoError(t, err)
	assert.NoError(t, cliRead.check(), "vault read -format=json")
	assert.Equal(t, int64(2400), cliRead.int("rotation_period"))
	assert.True(t, tokens[cliRead.accessToken()], "the CLI got another token than the HTTP readers")

	// docs/paths.md says the CLI's table shows both as durations.
	table := v.mustCLI(t, "read", mountPath+"/token/"+name)
	assert.Regexp(t, regexp.MustCompile(`(?m)^rotation_period\s+40m$`), table)
	assert.Regexp(t, regexp.MustCompile(`(?m)^ttl\s+(39m\d+s|40m)$`), table)

	var prefixes []string
	v.cliJSON(t, &prefixes, "list", "-format=json", "sys/leases/lookup/"+mountPath+"/")
	assert.Contains(t, prefixes, "creds/", "the lease listing does not show the creds/ lease")
	assert.NotContains(t, prefixes, "token/", "token/ reads created leases")
	res := v.cli(t, "list", "-format=json", "sys/leases/lookup/"+mountPath+"/token/")
	assert.Equal(t, 2, res.ExitCode, "token/ reads created leases: %s", res)

	final := em.Stats()
	assert.Equal(t, after.Requests, final.Requests, "the CLI reads called IRIS")
	assert.Zero(t, final.Rejected)
}
