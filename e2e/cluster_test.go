//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cluster is a Vault cluster of real `vault server` processes with
// integrated storage (Raft) on loopback ports, sharing one plugin directory.
type cluster struct {
	rec       *recorder
	pluginDir string
	nodes     []*vaultServer
	// configs are the nodes' config files: a restarted node keeps its
	// ports, which are its address in the Raft configuration.
	configs   []string
	unsealKey string
	rootToken string
}

// startCluster starts n nodes, initialises the first with one unseal key,
// unseals every node (the others join the first through retry_join),
// registers the plugin once by SHA-256 through the active node and enables
// it at iris/.
func startCluster(t testing.TB, rec *recorder, n int) *cluster {
	t.Helper()
	c := &cluster{rec: rec, pluginDir: filepath.Join(t.TempDir(), "plugins")}
	require.NoError(t, os.MkdirAll(c.pluginDir, 0o755))
	copyFile(t, pluginBin, filepath.Join(c.pluginDir, pluginName), 0o755)

	type ports struct{ api, cluster int }
	var ps []ports
	for range n {
		ps = append(ps, ports{freePort(t, false), freePort(t, false)})
	}
	for i := range n {
		dir := t.TempDir()
		v := &vaultServer{
			dir:       dir,
			pluginDir: c.pluginDir,
			logPath:   filepath.Join(dir, "vault.log"),
			raceDir:   filepath.Join(dir, "race"),
			rec:       rec,
		}
		for _, d := range []string{v.raceDir, filepath.Join(dir, "home"), filepath.Join(dir, "raft")} {
			require.NoError(t, os.MkdirAll(d, 0o700))
		}
		rec.addLogFile(fmt.Sprintf("vault node %d log", i), v.logPath)
		join := ""
		if i > 0 {
			join = fmt.Sprintf("  retry_join {\n    leader_api_addr = \"http://127.0.0.1:%d\"\n  }\n", ps[0].api)
		}
		// performance_multiplier = 1 is HashiCorp's production setting for
		// Raft's timing (the default, 5, suits slow development machines):
		// a lost leader is noticed and replaced within seconds.
		cfg := fmt.Sprintf(`
storage "raft" {
  path                   = %q
  node_id                = "node%d"
  performance_multiplier = 1
%s}
listener "tcp" {
  address         = "127.0.0.1:%d"
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
plugin_directory = %q
api_addr         = "http://127.0.0.1:%d"
cluster_addr     = "https://127.0.0.1:%d"
disable_mlock    = true
log_level        = "trace"
`, filepath.Join(dir, "raft"), i, join, ps[i].api, ps[i].cluster, c.pluginDir, ps[i].api, ps[i].cluster) + server.serverConfig()
		cfgPath := filepath.Join(dir, "server.hcl")
		require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))
		c.configs = append(c.configs, cfgPath)
		v.setAddr(fmt.Sprintf("http://127.0.0.1:%d", ps[i].api), "")
		c.nodes = append(c.nodes, v)
	}
	for i := range c.nodes {
		c.startNode(t, i)
	}

	first := c.nodes[0]
	var initOut struct {
		UnsealKeys []string `json:"unseal_keys_b64"`
		RootToken  string   `json:"root_token"`
	}
	first.cliJSON(t, &initOut, "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
	require.Len(t, initOut.UnsealKeys, 1)
	c.unsealKey, c.rootToken = initOut.UnsealKeys[0], initOut.RootToken
	for _, v := range c.nodes {
		v.setAddr(v.address(), c.rootToken)
		v.unsealKey = c.unsealKey
	}
	first.unseal(t)
	for i := 1; i < n; i++ {
		c.unsealStandby(t, i)
	}
	c.waitVoters(t, first)
	first.registerAndEnable(t)
	return c
}

// waitVoters polls until every node is a Raft voter. Nodes join as
// non-voters and autopilot promotes them once they have been healthy for its
// server stabilization time (10 s); until then the cluster has no quorum
// without the first node.
func (c *cluster) waitVoters(t testing.TB, via *vaultServer) {
	t.Helper()
	eventually(t, startTimeout, "every node to be a Raft voter", func() (bool, string) {
		res := via.cli(t, "operator", "raft", "list-peers", "-format=json")
		if res.ExitCode != 0 {
			return false, res.String()
		}
		var out struct {
			Data struct {
				Config struct {
					Servers []struct {
						NodeID string `json:"node_id"`
						Voter  bool   `json:"voter"`
					} `json:"servers"`
				} `json:"config"`
			} `json:"data"`
		}
		if err := jsonUnmarshal(res.Stdout, &out); err != nil {
			return false, err.Error()
		}
		voters := 0
		for _, s := range out.Data.Config.Servers {
			if s.Voter {
				voters++
			}
		}
		return voters == len(c.nodes), fmt.Sprintf("%d of %d voters: %+v", voters, len(c.nodes), out.Data.Config.Servers)
	})
}

// startNode starts node i's server process with its config.
func (c *cluster) startNode(t testing.TB, i int) {
	t.Helper()
	v := c.nodes[i]
	proc := startProcess(t, fmt.Sprintf("vault node %d", i), v.logPath, v.serverEnv(), vaultBin,
		"server", "-config="+c.configs[i], "-log-level=trace")
	v.mu.Lock()
	v.proc = proc
	v.mu.Unlock()
	// 501: not initialised, 503: sealed; either means it is listening.
	v.waitHealth(t, 0)
}

// unsealStandby unseals node i until it is a standby of the active node.
// A node that has not yet joined through retry_join takes the key once its
// join challenge has arrived, so the key is given again until it sticks.
func (c *cluster) unsealStandby(t testing.TB, i int) {
	t.Helper()
	v := c.nodes[i]
	eventually(t, startTimeout, fmt.Sprintf("node %d to join and unseal as a standby", i), func() (bool, string) {
		if v.process().exited() {
			t.Fatalf("node %d exited (%v); log tail:\n%s", i, v.process().waitErr, logTail(v.logPath, 40))
		}
		status := healthStatus(v)
		if status == http.StatusTooManyRequests {
			// A standby forwards requests only once it has read the active
			// node's address; until then it answers 500 ("active cluster
			// node not found"), which OpenBao's standbys were seen to do
			// for seconds after sys/health called them standbys.
			if leader := leaderAddress(v); leader == "" {
				return false, "a standby that has not found the active node yet"
			}
			return true, ""
		}
		if status == http.StatusServiceUnavailable {
			// Sealed: give it the key (it fails while the join is pending).
			v.cli(t, "operator", "unseal", c.unsealKey)
		}
		return false, fmt.Sprintf("sys/health answered %d", status)
	})
}

// leaderAddress is the active node's address as node v knows it from
// sys/leader; empty while it knows none, or when v is the active node.
func leaderAddress(v *vaultServer) string {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(v.address() + "/v1/sys/leader")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var leader struct {
		IsSelf               bool   `json:"is_self"`
		LeaderAddress        string `json:"leader_address"`
		LeaderClusterAddress string `json:"leader_cluster_address"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&leader) != nil || leader.IsSelf || leader.LeaderClusterAddress == "" {
		return ""
	}
	return leader.LeaderAddress
}

// healthStatus is what sys/health answers a node: 200 active, 429 standby,
// 503 sealed, 501 not initialised; 0 if the node does not answer.
func healthStatus(v *vaultServer) int {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(v.address() + "/v1/sys/health")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// activeNode returns the node that reports itself active, if exactly one
// does.
func (c *cluster) activeNode(exclude *vaultServer) (*vaultServer, string) {
	var active []*vaultServer
	var states []string
	for i, v := range c.nodes {
		if v == exclude {
			continue
		}
		status := healthStatus(v)
		states = append(states, fmt.Sprintf("node %d: %d", i, status))
		if status == http.StatusOK {
			active = append(active, v)
		}
	}
	if len(active) == 1 {
		return active[0], ""
	}
	return nil, strings.Join(states, ", ")
}

func (c *cluster) index(v *vaultServer) int {
	for i, n := range c.nodes {
		if n == v {
			return i
		}
	}
	return -1
}

// finish stops every node and runs the checks that need the whole logs.
func (c *cluster) finish(t testing.TB) {
	t.Helper()
	for _, v := range c.nodes {
		if p := v.process(); p != nil {
			p.stop()
		}
	}
	for i, v := range c.nodes {
		v.checkNoRaces(t)
		if t.Failed() {
			t.Logf("node %d log tail (%s):\n%s", i, v.logPath, logTail(v.logPath, 40))
		}
	}
	c.rec.checkNoLeaks(t)
}

// grantsBetween counts an emulator's successful grants in [from, to).
func grantsBetween(em *emulator, from, to time.Time) int {
	n := 0
	for _, g := range tokenGrants(em) {
		if !g.Before(from) && g.Before(to) {
			n++
		}
	}
	return n
}

// TestCluster runs the plugin in a three-node Raft cluster and kills the
// active node with SIGKILL while a Vault Agent, pointed at a standby,
// renders token/ and creds/ templates on one-minute tokens.
func TestCluster(t *testing.T) {
	t.Parallel()
	const lifetime = 60 * time.Second
	rec := newRecorder()
	c := startCluster(t, rec, 3)
	t.Cleanup(func() { c.finish(t) })
	n0, n1, n2 := c.nodes[0], c.nodes[1], c.nodes[2]
	active, states := c.activeNode(nil)
	require.Equal(t, n0, active, "the initialised node should be active (%s)", states)

	// Configs written through a standby are read through the other nodes.
	tokenEm := newEmulator(t, rec, lifetime)
	credsEm := newEmulator(t, rec, lifetime)
	leaseEm := newEmulator(t, rec, 10*time.Minute)
	bgEm := newEmulator(t, rec, lifetime)
	n1.writeConfig(t, "shared", tokenEm)
	n2.writeConfig(t, "agent-creds", credsEm)
	n2.writeConfig(t, "leased", leaseEm, "renewable_leases=true")
	for i, v := range c.nodes {
		cfg := v.readConfig(t, "shared")
		assert.Equal(t, tokenEm.User.ClientID, cfg.ClientID, "node %d", i)
		assert.Equal(t, tokenEm.User.Username, cfg.Username, "node %d", i)
		assert.Equal(t, tokenEm.TokenURL, cfg.TokenURL, "node %d", i)
		assert.True(t, v.readConfig(t, "leased").RenewableLeases, "node %d", i)
		assert.ElementsMatch(t, []string{"shared", "agent-creds", "leased"}, v.listConfigs(t), "node %d", i)
	}

	// token/ through every node is the token of the config write's
	// verifying grant: one grant in all.
	verifying := tokenEm.Issued()[0].AccessToken
	for i, v := range c.nodes {
		res, tr := v.readToken(t, "shared")
		require.Equal(t, http.StatusOK, res.Status, "node %d: %s", i, res.Raw)
		require.NoError(t, tr.check(), "node %d", i)
		assert.Equal(t, verifying, tr.accessToken(), "node %d served another token", i)
	}
	assert.Len(t, tokenGrants(tokenEm), 1, "token/ reads through the nodes made grants")

	// A renewable creds/ lease from before the failover.
	lease := n2.readCreds(t, "leased")
	require.True(t, lease.Renewable)

	// Vault Agent on a standby renders token/ and creds/.
	tokenFile := &renderedFile{label: "token/", em: tokenEm}
	credsFile := &renderedFile{label: "creds/", em: credsEm}
	a := startAgentWith(t, n1, func(dir string) string {
		tokenFile.path = filepath.Join(dir, "iris-token")
		credsFile.path = filepath.Join(dir, "iris-creds")
		return fmt.Sprintf(`
template {
  contents    = "{{ with secret \"%s/token/shared\" }}{{ .Data.access_token }}{{ end }}"
  destination = %q
}
template {
  contents    = "{{ with secret \"%s/creds/agent-creds\" }}{{ .Data.access_token }}{{ end }}"
  destination = %q
}
`, mountPath, tokenFile.path, mountPath, credsFile.path)
	})
	files := []*renderedFile{tokenFile, credsFile}
	for _, f := range files {
		a.waitFile(t, f.path, startTimeout, "Agent to render the "+f.label+" template", func(s string) bool {
			return strings.TrimSpace(s) != ""
		})
	}
	// Every second until stopSampling, both files must hold a live token.
	var (
		samplingMu   sync.Mutex
		samples      int
		agentExited  bool
		stopSampling = make(chan struct{})
		samplingDone = make(chan struct{})
	)
	go func() {
		defer close(samplingDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
			samplingMu.Lock()
			if a.proc.exited() {
				agentExited = true
				samplingMu.Unlock()
				return
			}
			samples++
			for _, f := range files {
				f.sample(t, rec, samples)
			}
			samplingMu.Unlock()
		}
	}()
	stopAgentSamples := func() {
		select {
		case <-stopSampling:
		default:
			close(stopSampling)
		}
		<-samplingDone
	}
	t.Cleanup(stopAgentSamples)

	// bg is read once after the failover and never again: a grant after
	// that read can only be the new active node's background refresh.
	n2.writeConfig(t, "bg", bgEm)
	bgToken := bgEm.Issued()[0].AccessToken
	_, before := n1.readToken(t, "shared")
	require.NoError(t, before.check())
	beforeRead := time.Now()

	// Kill the active node.
	killed := time.Now()
	n0.process().kill()
	var newActive *vaultServer
	eventually(t, 60*time.Second, "a standby to take over", func() (bool, string) {
		v, states := c.activeNode(n0)
		newActive = v
		return v != nil, states
	})
	noActive := time.Since(killed)
	// The first token/ read through the Agent's standby that succeeds.
	var after tokenResponse
	eventually(t, 60*time.Second, "token/ to answer through a standby", func() (bool, string) {
		res, tr := n1.readToken(t, "shared")
		after = tr
		return res.Status == http.StatusOK, fmt.Sprintf("%d: %s", res.Status, res.Raw)
	})
	readsBack := time.Since(killed)
	firstRead := time.Now()
	t.Logf("killed the active node 0; node %d active after %s, token/ answered through node 1 after %s",
		c.index(newActive), noActive.Round(10*time.Millisecond), readsBack.Round(10*time.Millisecond))
	require.NoError(t, after.check())

	// The stored tokens are served without a grant, if they were still
	// before their refresh point.
	if firstRead.Before(beforeRead.Add(time.Duration(before.int("ttl")) * time.Second)) {
		assert.Equal(t, before.accessToken(), after.accessToken(), "token/ served another token after the failover")
		assert.Zero(t, grantsBetween(tokenEm, killed, time.Now()), "token/ made a grant across the failover")
	} else {
		t.Errorf("the failover took longer than the token's %ds to its refresh point; cannot check that it made no grant", before.int("ttl"))
	}
	bgRes, bgAfter := newActive.readToken(t, "bg")
	require.Equal(t, http.StatusOK, bgRes.Status, bgRes.Raw)
	assert.Equal(t, bgToken, bgAfter.accessToken(), "the new active node did not serve the stored token")
	bgRead := time.Now()
	assert.Len(t, tokenGrants(bgEm), 1, "the new active node made a grant for a stored, fresh token")

	// The lease from before the failover renews and revokes.
	renewed := n1.renewLease(t, lease.LeaseID)
	require.NotEmpty(t, renewed.Data.AccessToken)
	assert.NotEqual(t, lease.Data.AccessToken, renewed.Data.AccessToken)
	live, _ := leaseEm.Introspect(renewed.Data.AccessToken)
	assert.True(t, live, "the renewal returned a token IRIS does not accept")
	assert.Zero(t, leaseEm.Stats().RefreshReuse)

	// The killed node restarts, rejoins as a standby and serves.
	c.startNode(t, 0)
	c.unsealStandby(t, 0)
	c.waitVoters(t, newActive)
	// A standby answers 500 until it has found the active node.
	var viaActive, viaRestarted tokenResponse
	eventually(t, startTimeout, "the restarted node to serve token/", func() (bool, string) {
		_, viaActive = newActive.readToken(t, "shared")
		var res apiResult
		res, viaRestarted = n0.readToken(t, "shared")
		return res.Status == http.StatusOK, fmt.Sprintf("%d: %s", res.Status, res.Raw)
	})
	t.Logf("node 0 restarted and served token/ %s after the kill", time.Since(killed).Round(time.Second))
	_, viaActiveAgain := newActive.readToken(t, "shared")
	assert.Contains(t, []string{viaActive.accessToken(), viaActiveAgain.accessToken()}, viaRestarted.accessToken(),
		"the restarted node served another token than the active node")
	assert.ElementsMatch(t, []string{"shared", "agent-creds", "leased", "bg"}, n0.listConfigs(t))

	n0.mustCLI(t, "lease", "revoke", lease.LeaseID)
	n0.waitLeaseGone(t, lease.LeaseID)

	// Background refresh resumes on the new active node: nobody reads bg
	// after bgRead, yet it is replaced once past half its lifetime, by the
	// periodic function, which Vault runs about once a minute.
	eventually(t, lifetime+90*time.Second, "the background refresh of bg on the new active node", func() (bool, string) {
		n := grantsBetween(bgEm, bgRead, time.Now())
		return n > 0, fmt.Sprintf("%d grants since the read", n)
	})
	bgGrant := tokenGrants(bgEm)[1]
	t.Logf("background refresh of bg %s after the failover", bgGrant.Sub(killed).Round(time.Second))

	// The Agent keeps following both files for a token lifetime after the
	// failover, so that each is re-read through the new topology.
	distinctAtKill := map[*renderedFile]int{}
	samplingMu.Lock()
	for _, f := range files {
		distinctAtKill[f] = f.distinct
	}
	samplingMu.Unlock()
	eventually(t, lifetime+30*time.Second, "the Agent to render new tokens after the failover", func() (bool, string) {
		samplingMu.Lock()
		defer samplingMu.Unlock()
		require.False(t, agentExited, "Vault Agent exited; log tail:\n%s", logTail(a.logPath, 40))
		var waiting []string
		for _, f := range files {
			if f.distinct <= distinctAtKill[f] || time.Since(killed) < lifetime {
				waiting = append(waiting, f.label)
			}
		}
		return len(waiting) == 0, "waiting for " + strings.Join(waiting, ", ")
	})
	stopAgentSamples()
	a.checkRunning(t)

	windowStart := killed.Add(-lifetime)
	t.Logf("token/ grants: %d in the minute before the kill, %d in the minute after; %d Agent samples, token/ file %d distinct tokens (least life left %s), creds/ file %d (least %s)",
		grantsBetween(tokenEm, windowStart, killed), grantsBetween(tokenEm, killed, killed.Add(lifetime)),
		samples, tokenFile.distinct, tokenFile.minLeft.Round(time.Millisecond), credsFile.distinct, credsFile.minLeft.Round(time.Millisecond))
	for _, em := range []*emulator{tokenEm, credsEm, leaseEm, bgEm} {
		assert.Zero(t, em.Stats().Rejected)
		assert.Zero(t, em.Stats().RefreshReuse)
	}
	assert.Equal(t, 1, tokenEm.Stats().PasswordGrants, "token/ fell back to the password grant")
	assert.Equal(t, 1, bgEm.Stats().PasswordGrants, "bg fell back to the password grant")
}
