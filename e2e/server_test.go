//go:build e2e

package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/stretchr/testify/require"
)

// vaultServer is one running Vault with the plugin's binary in its plugin
// directory.
type vaultServer struct {
	dir       string
	pluginDir string
	logPath   string
	raceDir   string
	rec       *recorder

	mu     sync.Mutex // guards addr, token, proc, client across restarts
	addr   string
	token  string
	proc   *process
	client *api.Client

	// restart brings a stopped server back; nil for dev servers.
	restart   func(t testing.TB)
	unsealKey string
}

func newVaultServer(t testing.TB, rec *recorder) *vaultServer {
	t.Helper()
	dir := t.TempDir()
	v := &vaultServer{
		dir:       dir,
		pluginDir: filepath.Join(dir, "plugins"),
		logPath:   filepath.Join(dir, "vault.log"),
		raceDir:   filepath.Join(dir, "race"),
		rec:       rec,
	}
	require.NoError(t, os.MkdirAll(v.pluginDir, 0o755))
	require.NoError(t, os.MkdirAll(v.raceDir, 0o755))
	require.NoError(t, os.MkdirAll(filepath.Join(dir, "home"), 0o700))
	copyFile(t, pluginBin, filepath.Join(v.pluginDir, pluginName), 0o755)
	rec.addLogFile("vault server log", v.logPath)
	return v
}

// serverEnv makes any data race in the race-enabled plugin land in a file of
// its own, so that the tests can fail on it whatever Vault does with the
// plugin's stderr.
func (v *vaultServer) serverEnv() []string {
	return childEnv("GORACE=log_path="+filepath.Join(v.raceDir, "race"), "HOME="+filepath.Join(v.dir, "home"))
}

// startDevVault starts `vault server -dev` with the plugin registered by
// SHA-256 and version and enabled at iris/. The plugin directory comes from
// a config file rather than -dev-plugin-dir, which would register every
// binary in it unversioned and so hide a broken explicit registration.
func startDevVault(t testing.TB, rec *recorder) *vaultServer {
	t.Helper()
	return startDevVaultAt(t, rec, "trace", nil)
}

// startDevVaultAt is startDevVault at a given log level; beforeStart may put
// more binaries into v.pluginDir.
func startDevVaultAt(t testing.TB, rec *recorder, logLevel string, beforeStart func(v *vaultServer)) *vaultServer {
	t.Helper()
	v := newVaultServer(t, rec)
	if beforeStart != nil {
		beforeStart(v)
	}
	cfgPath := filepath.Join(v.dir, "dev.hcl")
	require.NoError(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf("plugin_directory = %q\nlog_level = %q\n", v.pluginDir, logLevel)), 0o600))

	port := freePort(t, true)
	v.setAddr(fmt.Sprintf("http://127.0.0.1:%d", port), "root-"+randomHex(8))
	proc := startProcess(t, "vault dev server", v.logPath, v.serverEnv(), vaultBin,
		"server", "-dev",
		"-dev-root-token-id="+v.rootToken(),
		fmt.Sprintf("-dev-listen-address=127.0.0.1:%d", port),
		"-config="+cfgPath,
		"-log-level="+logLevel,
	)
	v.mu.Lock()
	v.proc = proc
	v.mu.Unlock()
	v.waitHealth(t, http.StatusOK)
	v.registerAndEnable(t)
	return v
}

// startFileVault starts a server with file storage that survives restarts.
func startFileVault(t testing.TB, rec *recorder) *vaultServer {
	t.Helper()
	return startFileVaultAt(t, rec, "trace")
}

// startFileVaultAt is startFileVault at a given log level.
func startFileVaultAt(t testing.TB, rec *recorder, logLevel string) *vaultServer {
	t.Helper()
	v := newVaultServer(t, rec)
	dataDir := filepath.Join(v.dir, "data")
	require.NoError(t, os.MkdirAll(dataDir, 0o700))

	start := func(t testing.TB) {
		t.Helper()
		// Fresh ports on every start: the old ones may have been taken
		// while the server was down.
		port, clusterPort := freePort(t, false), freePort(t, false)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		cfg := fmt.Sprintf(`
storage "file" {
  path = %q
}
listener "tcp" {
  address         = %q
  cluster_address = "127.0.0.1:%d"
  tls_disable     = true
}
plugin_directory = %q
api_addr         = "http://%s"
cluster_addr     = "https://127.0.0.1:%d"
disable_mlock    = true
log_level        = %q
`, dataDir, addr, clusterPort, v.pluginDir, addr, clusterPort, logLevel)
		cfgPath := filepath.Join(v.dir, "server.hcl")
		require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))
		v.setAddr("http://"+addr, v.rootToken())
		proc := startProcess(t, "vault server", v.logPath, v.serverEnv(), vaultBin, "server", "-config="+cfgPath, "-log-level="+logLevel)
		v.mu.Lock()
		v.proc = proc
		v.mu.Unlock()
		// 501: not initialised, 503: sealed; either means it is listening.
		v.waitHealth(t, 0)
	}

	start(t)
	var initOut struct {
		UnsealKeys []string `json:"unseal_keys_b64"`
		RootToken  string   `json:"root_token"`
	}
	v.cliJSON(t, &initOut, "operator", "init", "-key-shares=1", "-key-threshold=1", "-format=json")
	require.Len(t, initOut.UnsealKeys, 1)
	v.unsealKey = initOut.UnsealKeys[0]
	v.setAddr(v.address(), initOut.RootToken)
	v.unseal(t)
	v.registerAndEnable(t)

	v.restart = func(t testing.TB) {
		t.Helper()
		start(t)
		v.unseal(t)
	}
	return v
}

func (v *vaultServer) unseal(t testing.TB) {
	t.Helper()
	v.mustCLI(t, "operator", "unseal", v.unsealKey)
	v.waitHealth(t, http.StatusOK)
}

func (v *vaultServer) setAddr(addr, token string) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	// VAULT_AGENT_ADDR in our environment would otherwise win over Address.
	cfg.AgentAddress = ""
	// A retry would hide what one request did and could call IRIS twice.
	cfg.MaxRetries = 0
	cfg.HttpClient.Transport = &recordingTransport{base: cfg.HttpClient.Transport, rec: v.rec}
	client, err := api.NewClient(cfg)
	if err != nil {
		panic(err) // only on a malformed address, which we built ourselves
	}
	client.SetToken(token)
	client.ClearNamespace()
	v.mu.Lock()
	v.addr, v.token, v.client = addr, token, client
	v.mu.Unlock()
}

func (v *vaultServer) address() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.addr
}

func (v *vaultServer) rootToken() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.token
}

// api returns the HTTP API client, whose responses are all recorded for the
// secret-leak check.
func (v *vaultServer) api() *api.Client {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.client
}

func (v *vaultServer) process() *process {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.proc
}

// waitHealth polls sys/health until it answers want (any answer when want is
// 0), failing early when the server has exited.
func (v *vaultServer) waitHealth(t testing.TB, want int) {
	t.Helper()
	httpClient := &http.Client{Timeout: 2 * time.Second}
	proc := v.process()
	eventually(t, startTimeout, "Vault at "+v.address()+" to be ready", func() (bool, string) {
		if proc.exited() {
			t.Fatalf("Vault exited while starting (%v); log tail:\n%s", proc.waitErr, logTail(v.logPath, 40))
		}
		resp, err := httpClient.Get(v.address() + "/v1/sys/health")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return want == 0 || resp.StatusCode == want, fmt.Sprintf("sys/health answered %d", resp.StatusCode)
	})
}

// stop shuts the server down; restart (file storage only) brings it back.
func (v *vaultServer) stop() { v.process().stop() }

// checkNoRaces fails the test if the race-enabled plugin reported a data
// race, either to its race log or on its stderr, which Vault logs.
func (v *vaultServer) checkNoRaces(t testing.TB) {
	t.Helper()
	entries, err := os.ReadDir(v.raceDir)
	if err != nil {
		t.Errorf("reading race log directory: %v", err)
	}
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(v.raceDir, e.Name()))
		t.Errorf("the plugin reported a data race (%s):\n%s", e.Name(), b)
	}
	if b, err := os.ReadFile(v.logPath); err == nil && bytes.Contains(b, []byte("WARNING: DATA RACE")) {
		t.Errorf("the Vault log %s reports a data race in the plugin", v.logPath)
	}
}

// finish stops the server and runs the checks that need its whole log. Tests
// register it with t.Cleanup right after starting the server.
func (v *vaultServer) finish(t testing.TB) {
	t.Helper()
	v.stop()
	v.checkNoRaces(t)
	v.rec.checkNoLeaks(t)
	if t.Failed() {
		t.Logf("Vault log tail (%s):\n%s", v.logPath, logTail(v.logPath, 60))
	}
}
