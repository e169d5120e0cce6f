//go:build e2e

// Package e2e tests the plugin the way users run it: a real Vault server
// started from VAULT_BIN, the plugin binary from IRIS_PLUGIN_BIN registered by
// SHA-256 and version, driven through the real `vault` CLI and the HTTP API,
// against the in-process IRIS emulator. Run it with `make test-e2e`.
//
// Every process a test starts listens on a loopback port the test picked and
// is stopped in t.Cleanup, also when the test fails; a supervisor process
// takes it down even when go test panics on its timeout. Waits poll with
// deadlines.
package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/stretchr/testify/require"
)

const (
	pluginName = "vault-plugin-secrets-iris"
	mountPath  = "iris"

	// startTimeout bounds how long a Vault server or Agent may take to come
	// up; a race-enabled plugin makes mounting slower than usual.
	startTimeout = 60 * time.Second
	// cliTimeout bounds one `vault` command. Vault's own request timeout is
	// 90 s; nothing here should come close.
	cliTimeout = 60 * time.Second
)

var (
	vaultBin      string
	pluginBin     string
	pluginVersion string
)

func TestMain(m *testing.M) {
	if os.Getenv(superviseEnv) == "1" {
		os.Exit(supervise(os.Args[1:]))
	}
	var missing []string
	for _, v := range []struct {
		name string
		dst  *string
		path bool
	}{
		{"VAULT_BIN", &vaultBin, true},
		{"IRIS_PLUGIN_BIN", &pluginBin, true},
		{"IRIS_PLUGIN_VERSION", &pluginVersion, false},
	} {
		val := os.Getenv(v.name)
		if val == "" {
			missing = append(missing, v.name)
			continue
		}
		if v.path && !filepath.IsAbs(val) {
			// go test runs in the package directory; a relative path is
			// meant relative to the module root, where make runs.
			val = filepath.Join("..", val)
		}
		*v.dst = val
	}
	if len(missing) > 0 {
		fmt.Fprintf(os.Stderr, "e2e: %s not set; run `make test-e2e`, which builds Vault and a race-enabled plugin and sets them\n",
			strings.Join(missing, ", "))
		os.Exit(2)
	}
	for _, p := range []string{vaultBin, pluginBin} {
		if _, err := os.Stat(p); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
			os.Exit(2)
		}
	}
	os.Exit(m.Run())
}

// ---------------------------------------------------------------------------
// Processes

// process is a child started under a supervisor in a process group of its
// own, so that stopping it also stops the plugin processes Vault starts.
type process struct {
	name    string
	cmd     *exec.Cmd // the supervisor
	logPath string
	done    chan struct{}
	waitErr error
	once    sync.Once
}

// superviseEnv makes the test binary act as a supervisor (see supervise)
// instead of running tests.
const superviseEnv = "IRIS_E2E_SUPERVISE"

func startProcess(t testing.TB, name, logPath string, env []string, bin string, args ...string) *process {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	require.NoError(t, err)
	self, err := os.Executable()
	require.NoError(t, err)
	cmd := exec.Command(self, append([]string{bin}, args...)...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(env, superviseEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true,
		// Cleanups do not run when go test panics on its timeout; the
		// supervisor then gets this signal and takes the group down.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// supervise runs args[0] and returns its exit code. Vault starts its plugins
// in its own process group and never stops them if it is killed; a dead test
// binary would leave them running. The supervisor leads the group: on
// SIGTERM (from stop, or as the test binary's death signal) it lets Vault
// shut down gracefully for a while and then kills the whole group.
func supervise(args []string) int {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, superviseEnv+"=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr, cmd.Env = os.Stdout, os.Stderr, env
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "supervisor: %v\n", err)
		return 127
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-signals:
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
		}
	}
	// Whatever the child left behind in the group goes too; the supervisor
	// has SIGTERM handled, so only the others die of it.
	_ = syscall.Kill(-syscall.Getpgrp(), syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-syscall.Getpgrp(), syscall.SIGKILL)
	}
	return cmd.ProcessState.ExitCode()
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the supervisor to shut the process down and kills the whole
// group if that takes too long. It is safe to call more than once.
func (p *process) stop() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(30 * time.Second):
		}
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	})
}

// logTail is the end of a process's log, for failure messages.
func logTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// freePort returns a loopback port nobody listened on a moment ago. With
// pair it also checks port+1, which a dev server takes for its cluster
// listener.
func freePort(t testing.TB, pair bool) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		port := l.Addr().(*net.TCPAddr).Port
		if !pair {
			l.Close()
			return port
		}
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1))
		l.Close()
		if err == nil {
			l2.Close()
			return port
		}
	}
	t.Fatal("no free loopback port found")
	return 0
}

// childEnv is the environment for Vault processes: ours without any VAULT_*
// setting that could point a command at another server, plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// eventually polls cond until it reports true or timeout passes; then the
// test fails with what cond last said.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := 50 * time.Millisecond
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, detail)
		}
		time.Sleep(interval)
		interval = min(interval*2, 250*time.Millisecond)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func fileSHA256(t testing.TB, path string) string {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	h := sha256.New()
	_, err = io.Copy(h, f)
	require.NoError(t, err)
	return hex.EncodeToString(h.Sum(nil))
}

func copyFile(t testing.TB, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, err)
	require.NoError(t, out.Close())
}

// ---------------------------------------------------------------------------
// Vault servers

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
log_level        = "trace"
`, dataDir, addr, clusterPort, v.pluginDir, addr, clusterPort)
		cfgPath := filepath.Join(v.dir, "server.hcl")
		require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))
		v.setAddr("http://"+addr, v.rootToken())
		proc := startProcess(t, "vault server", v.logPath, v.serverEnv(), vaultBin, "server", "-config="+cfgPath, "-log-level=trace")
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

// registerAndEnable registers the plugin by SHA-256 and version, as an
// operator would, and mounts that version at iris/.
func (v *vaultServer) registerAndEnable(t testing.TB) {
	t.Helper()
	sha := fileSHA256(t, filepath.Join(v.pluginDir, pluginName))
	v.mustCLI(t, "plugin", "register", "-sha256="+sha, "-version="+pluginVersion, "secret", pluginName)
	v.mustCLI(t, "secrets", "enable", "-path="+mountPath, "-plugin-version="+pluginVersion, pluginName)
}

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

// ---------------------------------------------------------------------------
// The vault CLI

type cliResult struct {
	args           []string
	Stdout, Stderr string
	ExitCode       int
}

func (r cliResult) String() string {
	return fmt.Sprintf("vault %s: exit %d\nstdout:\n%s\nstderr:\n%s", commandName(r.args), r.ExitCode, r.Stdout, r.Stderr)
}

// commandName is the subcommand without arguments, which may hold secrets.
func commandName(args []string) string {
	var words []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") || strings.Contains(a, "=") || strings.Contains(a, "/") || len(words) == 3 {
			break
		}
		words = append(words, a)
	}
	return strings.Join(words, " ")
}

// cli runs the real vault CLI against this server with the root token. Its
// output is recorded for the secret-leak check.
func (v *vaultServer) cli(t testing.TB, args ...string) cliResult {
	t.Helper()
	return v.cliWithToken(t, v.rootToken(), args...)
}

func (v *vaultServer) cliWithToken(t testing.TB, token string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, vaultBin, args...)
	cmd.Env = childEnv(
		"VAULT_ADDR="+v.address(),
		"VAULT_TOKEN="+token,
		// The CLI's token helper and config live under HOME.
		"HOME="+filepath.Join(v.dir, "home"),
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{args: args, Stdout: stdout.String(), Stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
	default:
		t.Fatalf("running vault %s: %v", commandName(args), err)
	}
	v.rec.addOutput("cli: vault "+commandName(args), res.Stdout+"\n"+res.Stderr)
	return res
}

func (v *vaultServer) mustCLI(t testing.TB, args ...string) string {
	t.Helper()
	res := v.cli(t, args...)
	if res.ExitCode != 0 {
		t.Fatalf("%s", res)
	}
	return res.Stdout
}

// cliJSON runs a command that must succeed and decodes its stdout; args must
// include -format=json where the command needs it.
func (v *vaultServer) cliJSON(t testing.TB, out any, args ...string) {
	t.Helper()
	stdout := v.mustCLI(t, args...)
	require.NoError(t, json.Unmarshal([]byte(stdout), out), "vault %s printed:\n%s", commandName(args), stdout)
}

// cliFails runs a command that must fail and returns its result.
func (v *vaultServer) cliFails(t testing.TB, args ...string) cliResult {
	t.Helper()
	res := v.cli(t, args...)
	if res.ExitCode == 0 {
		t.Fatalf("expected failure, got %s", res)
	}
	return res
}

// ---------------------------------------------------------------------------
// The HTTP API

// recordingTransport copies every response body into the recorder.
type recordingTransport struct {
	base http.RoundTripper
	rec  *recorder
}

func (rt *recordingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	rt.rec.addOutput("api: "+req.Method+" "+req.URL.Path, string(body))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// apiResult is one raw API exchange: the status and the decoded JSON body.
type apiResult struct {
	Status int
	Body   map[string]any
	Raw    string
}

// errorsText joins Vault's "errors" array, for assertions on messages.
func (r apiResult) errorsText() string {
	errs, _ := r.Body["errors"].([]any)
	var parts []string
	for _, e := range errs {
		parts = append(parts, fmt.Sprint(e))
	}
	return strings.Join(parts, "\n")
}

// raw sends one request to /v1/<path> and returns whatever came back,
// without the API client's interpretation of 404s and errors.
func (v *vaultServer) raw(t testing.TB, method, path string, body any) apiResult {
	t.Helper()
	client := v.api()
	req := client.NewRequest(method, "/v1/"+path)
	if body != nil {
		require.NoError(t, req.SetJSONBody(body))
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	//nolint:staticcheck // the raw request is the point: status codes as sent
	resp, err := client.RawRequestWithContext(ctx, req)
	if resp == nil {
		require.NoError(t, err)
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	require.NoError(t, rerr)
	res := apiResult{Status: resp.StatusCode, Raw: string(b)}
	if len(bytes.TrimSpace(b)) > 0 {
		_ = json.Unmarshal(b, &res.Body)
	}
	return res
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
