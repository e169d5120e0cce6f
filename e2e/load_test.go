//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
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

// TestLoad is the load run of `make bench`, skipped unless IRIS_LOAD=1. One
// Vault dev server runs the IRIS plugin (a plain build: make bench passes the
// non-race binary) next to a no-op plugin built only for this and a KV v1
// mount, against the in-process emulator. At 1, 8 and 32 concurrent clients,
// each for loadDuration, one keep-alive HTTP client measures requests per
// second and p50/p99 latency of token/ and creds/ reads and of three floors:
// a no-op plugin read (what any external plugin costs: Vault plus gRPC), KV
// v1 reads and writes (Vault's own cost, and that of writing a lease), and a
// direct POST to the emulator's token endpoint (the upstream's cost), with
// the CPU time per request of Vault, the plugin and this process (client and
// emulator). The IRIS plugin process's peak resident memory (VmHWM) is
// tracked throughout.
// It prints one Markdown table with the ratios and targets; a missed
// target is shown with its gap, not failed, because it depends on the
// machine. Errors and leftover leases do fail it.
//
// IRIS_LOAD_DURATION (a Go duration, default 3s) sets the time per cell.
func TestLoad(t *testing.T) {
	if os.Getenv("IRIS_LOAD") != "1" {
		t.Skip("the load run is part of `make bench` (IRIS_LOAD=1)")
	}
	if !procfs {
		t.Skip("the load run reads CPU time and memory from Linux's /proc")
	}
	noopBin := os.Getenv("NOOP_PLUGIN_BIN")
	require.NotEmpty(t, noopBin, "NOOP_PLUGIN_BIN is not set; run `make bench`")
	if !filepath.IsAbs(noopBin) {
		noopBin = filepath.Join("..", noopBin)
	}
	duration := 3 * time.Second
	if s := os.Getenv("IRIS_LOAD_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		require.NoError(t, err, "IRIS_LOAD_DURATION")
		duration = d
	}
	const warmUp = 300 * time.Millisecond

	rec := newRecorder()
	v := startLoadVault(t, rec, noopBin)
	t.Cleanup(func() { v.finish(t) })

	user := iristest.User{
		ClientID:     "0oaload" + randomHex(6),
		ClientSecret: "cs+/" + randomHex(20),
		Username:     "load-" + randomHex(4),
		Password:     "pw+&" + randomHex(20),
	}
	rec.addSecret("client secret", user.ClientSecret)
	rec.addSecret("password", user.Password)
	// A plain iristest server rather than newEmulator, whose leak check
	// would scan the log for every one of the run's many tokens. Tokens live an hour: the
	// run measures token/'s steady state, not its refreshes.
	em := iristest.NewServer(user)
	t.Cleanup(em.Close)
	const name = "bench"
	v.mustCLI(t, "write", mountPath+"/config/"+name, "client_id="+user.ClientID, "client_secret="+user.ClientSecret,
		"username="+user.Username, "password="+user.Password, "token_url="+em.TokenURL)
	v.mustCLI(t, "write", "kv1/bench", "value=bench")

	mem := watchPluginMemory(t, v)
	defer mem.stop()
	procs := findProcesses(t, v)

	client := &http.Client{
		Timeout: cliTimeout,
		Transport: &http.Transport{
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	defer client.CloseIdleConnections()
	addr, token := v.address(), v.rootToken()
	vaultReq := func(method, path string, body []byte) func() *http.Request {
		return func() *http.Request {
			var r io.Reader
			if body != nil {
				r = bytes.NewReader(body)
			}
			req, _ := http.NewRequest(method, addr+"/v1/"+path, r)
			req.Header.Set("X-Vault-Token", token)
			return req
		}
	}
	grant := []byte(url.Values{"grant_type": {"password"}, "username": {user.Username},
		"password": {user.Password}, "scope": {"api offline_access"}}.Encode())
	targets := []loadTarget{
		{label: "no-op plugin read `noop/noop`", key: "noop", newRequest: vaultReq(http.MethodGet, "noop/noop", nil), ok: http.StatusOK, plugin: procs.noop},
		{label: "KV v1 read", key: "kvread", newRequest: vaultReq(http.MethodGet, "kv1/bench", nil), ok: http.StatusOK},
		{label: "KV v1 write", key: "kvwrite", newRequest: vaultReq(http.MethodPut, "kv1/bench", []byte(`{"value":"bench"}`)), ok: http.StatusNoContent},
		{label: "direct POST to the emulator's `/token`", key: "post", newRequest: func() *http.Request {
			req, _ := http.NewRequest(http.MethodPost, em.TokenURL, bytes.NewReader(grant))
			req.SetBasicAuth(user.ClientID, user.ClientSecret)
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return req
		}, ok: http.StatusOK},
		{label: "`iris/token/" + name + "` read", key: "token", newRequest: vaultReq(http.MethodGet, mountPath+"/token/"+name, nil), ok: http.StatusOK, plugin: procs.iris},
		{label: "`iris/creds/" + name + "` read", key: "creds", newRequest: vaultReq(http.MethodGet, mountPath+"/creds/"+name, nil), ok: http.StatusOK, plugin: procs.iris},
	}

	runStart := time.Now()
	credsLeases := 0
	results := map[string]map[int]loadResult{}
	concurrencies := []int{1, 8, 32}
	for _, c := range concurrencies {
		for _, target := range targets {
			warm := runLoad(client, target, c, warmUp)
			before := procs.cpu(target.plugin)
			res := runLoad(client, target, c, duration)
			res.cpu = procs.cpu(target.plugin).sub(before)
			for _, r := range []loadResult{warm, res} {
				if r.errors > 0 {
					t.Errorf("%s at %d clients: %d of %d requests failed; first: %s", target.label, c, r.errors, r.requests, r.firstError)
				}
			}
			if target.key == "creds" {
				credsLeases += warm.requests - warm.errors + res.requests - res.errors
			}
			if results[target.key] == nil {
				results[target.key] = map[int]loadResult{}
			}
			results[target.key][c] = res
		}
	}
	runTime := time.Since(runStart)
	peak := mem.stop()

	// Every creds/ read left a lease; revoke them all and check none is
	// left.
	leases := v.listLeases(t, mountPath+"/creds/"+name+"/")
	assert.Equal(t, credsLeases, leases, "creds/ reads and leases do not match")
	revokeStart := time.Now()
	res := v.raw(t, http.MethodPut, "sys/leases/revoke-prefix/"+mountPath+"/creds", nil)
	require.Equal(t, http.StatusNoContent, res.Status, res.Raw)
	eventually(t, 2*time.Minute, "the creds/ leases to be revoked", func() (bool, string) {
		n := v.listLeases(t, mountPath+"/creds/"+name+"/")
		return n == 0, fmt.Sprintf("%d leases left", n)
	})
	revokeTime := time.Since(revokeStart)

	var out strings.Builder
	fmt.Fprintf(&out, "\nLoad run: %s per cell after a %s warm-up, %s in all; %d creds/ leases revoked in %s.\n",
		duration, warmUp, runTime.Round(time.Second), leases, revokeTime.Round(10*time.Millisecond))
	fmt.Fprintf(&out, "Machine: %d CPUs (%s), %s, %s, GOMAXPROCS %d in the load generator.\n\n",
		runtime.NumCPU(), cpuModel(), vaultVersion(t), runtime.Version(), runtime.GOMAXPROCS(0))
	out.WriteString(loadTable(targets, concurrencies, results, peak))
	fmt.Print(out.String())

	require.NotZero(t, peak.pid, "the IRIS plugin process was never found")
	assert.Equal(t, 1, peak.pids, "the IRIS plugin process changed during the run")
}

// loadTarget is one kind of request of the load run.
type loadTarget struct {
	label      string
	key        string
	newRequest func() *http.Request
	ok         int
	plugin     int // the PID of the plugin serving it, 0 for none
}

type loadResult struct {
	requests, errors int
	firstError       string
	elapsed          time.Duration
	p50, p99, max    time.Duration
	latencies        []time.Duration // sorted
	cpu              cpuTimes
}

// cpuPerRequest is what the processes spent on one request, on average.
func (r loadResult) cpuPerRequest() string {
	us := func(d time.Duration) string {
		return strconv.Itoa(int(d / time.Duration(max(r.requests, 1)) / time.Microsecond))
	}
	plugin := "–"
	if r.cpu.hasPlugin {
		plugin = us(r.cpu.plugin)
	}
	return us(r.cpu.vault) + " / " + plugin + " / " + us(r.cpu.self)
}

func (r loadResult) rps() float64 { return float64(r.requests) / r.elapsed.Seconds() }

// runLoad sends target's request from clients goroutines, each one after the
// other, until d has passed.
func runLoad(client *http.Client, target loadTarget, clients int, d time.Duration) loadResult {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		res       loadResult
		wg        sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(d)
	for range clients {
		wg.Go(func() {
			var mine []time.Duration
			var errs int
			var firstErr string
			for time.Now().Before(deadline) {
				req := target.newRequest()
				t0 := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != target.ok {
						err = fmt.Errorf("HTTP %d", resp.StatusCode)
					}
				}
				mine = append(mine, time.Since(t0))
				if err != nil {
					errs++
					if firstErr == "" {
						firstErr = err.Error()
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			latencies = append(latencies, mine...)
			res.errors += errs
			if res.firstError == "" {
				res.firstError = firstErr
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.requests = len(latencies)
	slices.Sort(latencies)
	res.p50, res.p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
	if len(latencies) > 0 {
		res.max = latencies[len(latencies)-1]
	}
	res.latencies = latencies
	return res
}

// percentile is the nearest-rank percentile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(i, 0)]
}

// loadTable is the Markdown table of the run, with the ratios next
// to the rows they are about.
func loadTable(targets []loadTarget, concurrencies []int, results map[string]map[int]loadResult, peak memoryPeak) string {
	const tokenTarget, credsTarget, memTarget = 1.3, 1.3, 64.0
	verdict := func(got, limit float64, strict bool) string {
		if got < limit || (!strict && got == limit) {
			return "met"
		}
		return fmt.Sprintf("**missed by %.1f%%**", (got/limit-1)*100)
	}
	var b strings.Builder
	b.WriteString("| Request | Clients | Requests | Req/s | p50 | p99 | CPU µs/request: Vault / plugin / test process | Ratio of p50s (target) |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, c := range concurrencies {
		p50 := func(key string) float64 { return float64(results[key][c].p50) }
		for _, target := range targets {
			r := results[target.key][c]
			ratio := ""
			switch target.key {
			case "token":
				x := p50("token") / p50("noop")
				ratio = fmt.Sprintf("token ÷ no-op = %.2f (≤ %.1f: %s)", x, tokenTarget, verdict(x, tokenTarget, false))
			case "creds":
				x := p50("creds") / (p50("noop") + p50("kvwrite") + p50("post"))
				ratio = fmt.Sprintf("creds ÷ (no-op + KV write + POST) = %.2f (≤ %.1f: %s)", x, credsTarget, verdict(x, credsTarget, false))
			}
			errs := ""
			if r.errors > 0 {
				errs = fmt.Sprintf(" (%d failed)", r.errors)
			}
			fmt.Fprintf(&b, "| %s | %d | %d%s | %.0f | %s | %s | %s | %s |\n",
				target.label, c, r.requests, errs, r.rps(), ms(r.p50), ms(r.p99), r.cpuPerRequest(), ratio)
		}
	}
	hwm := float64(peak.hwmKiB) / 1024
	fmt.Fprintf(&b, "| IRIS plugin process, peak RSS (VmHWM) over the run | | | | | | | %.1f MiB (< %.0f MiB: %s); the no-op plugin's: %.1f MiB |\n",
		hwm, memTarget, verdict(hwm, memTarget, true), float64(peak.noopHWMKiB)/1024)
	return b.String()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

// startLoadVault is startDevVault at Vault's default log level (trace
// logging would be a large part of what the run measures), with the no-op
// plugin registered and mounted at noop/ and a KV v1 mount at kv1/.
func startLoadVault(t testing.TB, rec *recorder, noopBin string) *vaultServer {
	t.Helper()
	v := startDevVaultAt(t, rec, "info", func(v *vaultServer) {
		copyFile(t, noopBin, filepath.Join(v.pluginDir, "noop-plugin"), 0o755)
	})
	v.mustCLI(t, "plugin", "register", "-sha256="+fileSHA256(t, noopBin), "secret", "noop-plugin")
	v.mustCLI(t, "secrets", "enable", "-path=noop", "noop-plugin")
	v.mustCLI(t, "secrets", "enable", "-path=kv1", "-version=1", "kv")
	return v
}

// listLeases counts the leases under prefix (which ends in /).
func (v *vaultServer) listLeases(t testing.TB, prefix string) int {
	t.Helper()
	res := v.raw(t, "LIST", "sys/leases/lookup/"+prefix, nil)
	if res.Status == http.StatusNotFound {
		return 0
	}
	require.Equal(t, http.StatusOK, res.Status, res.Raw)
	data, _ := res.Body["data"].(map[string]any)
	keys, _ := data["keys"].([]any)
	return len(keys)
}

// ---------------------------------------------------------------------------
// Processes: CPU time and plugin memory

// loadProcesses are the processes a request may cost CPU in: Vault, the
// plugins, and this test process, which runs the client and the emulator.
type loadProcesses struct {
	vault, iris, noop int
}

// findProcesses finds Vault as the child of its supervisor, and the plugins
// as Vault's children running the binaries in its plugin directory.
func findProcesses(t testing.TB, v *vaultServer) loadProcesses {
	t.Helper()
	children := childPIDs(v.process().cmd.Process.Pid)
	require.Len(t, children, 1, "the supervisor should run Vault and nothing else")
	p := loadProcesses{vault: children[0]}
	for _, pid := range childPIDs(p.vault) {
		exe := processExe(pid)
		switch exe {
		case filepath.Join(v.pluginDir, pluginName):
			p.iris = pid
		case filepath.Join(v.pluginDir, "noop-plugin"):
			p.noop = pid
		}
	}
	require.NotZero(t, p.iris, "no IRIS plugin process among Vault's children")
	require.NotZero(t, p.noop, "no no-op plugin process among Vault's children")
	return p
}

// cpuTimes is user plus system CPU time of Vault, of one plugin (when there
// is one) and of this process.
type cpuTimes struct {
	vault, plugin, self time.Duration
	hasPlugin           bool
}

func (p loadProcesses) cpu(plugin int) cpuTimes {
	c := cpuTimes{vault: cpuTime(p.vault), self: cpuTime(os.Getpid()), hasPlugin: plugin != 0}
	if plugin != 0 {
		c.plugin = cpuTime(plugin)
	}
	return c
}

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{vault: c.vault - o.vault, plugin: c.plugin - o.plugin, self: c.self - o.self, hasPlugin: c.hasPlugin}
}

// memoryPeak is the highest VmHWM seen of the IRIS plugin process, and of
// the no-op plugin's for comparison.
type memoryPeak struct {
	pid        int // the IRIS plugin process
	pids       int // how many IRIS plugin processes were seen
	hwmKiB     int
	noopHWMKiB int
}

type memoryWatch struct {
	stopOnce sync.Once
	done     chan struct{}
	finished chan struct{}
	mu       sync.Mutex
	peak     memoryPeak
	seen     map[int]bool
	sample   func()
}

// watchPluginMemory samples the VmHWM of the plugin processes, found among
// the Vault process's children by their binaries in its plugin directory,
// until stop, which returns the peak. VmHWM is the kernel's own high-water
// mark of a process's resident set, so sampling only has to notice a
// process being replaced.
func watchPluginMemory(t testing.TB, v *vaultServer) *memoryWatch {
	t.Helper()
	irisExe := filepath.Join(v.pluginDir, pluginName)
	noopExe := filepath.Join(v.pluginDir, "noop-plugin")
	supervisor := v.process().cmd.Process.Pid
	w := &memoryWatch{done: make(chan struct{}), finished: make(chan struct{}), seen: map[int]bool{}}
	w.sample = func() {
		for _, vaultPID := range childPIDs(supervisor) {
			for _, pid := range childPIDs(vaultPID) {
				exe := processExe(pid)
				hwm := vmHWM(pid)
				w.mu.Lock()
				switch exe {
				case irisExe:
					w.seen[pid] = true
					w.peak.pid, w.peak.pids = pid, len(w.seen)
					w.peak.hwmKiB = max(w.peak.hwmKiB, hwm)
				case noopExe:
					w.peak.noopHWMKiB = max(w.peak.noopHWMKiB, hwm)
				}
				w.mu.Unlock()
			}
		}
	}
	w.sample()
	go func() {
		defer close(w.finished)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.done:
				return
			case <-tick.C:
				w.sample()
			}
		}
	}()
	return w
}

// current is the plugin's VmHWM so far, without stopping the watch.
func (w *memoryWatch) current() int {
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak.hwmKiB
}

func (w *memoryWatch) stop() memoryPeak {
	w.stopOnce.Do(func() {
		close(w.done)
		<-w.finished
		w.sample()
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.peak
}

func vaultVersion(t testing.TB) string {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, vaultBin, "version").Output()
	if err != nil {
		t.Logf("vault version: %v", err)
		return "Vault (version unknown)"
	}
	// "Vault v1.21.0, built <date>": the date is not the release's.
	version, _, _ := strings.Cut(strings.TrimSpace(string(out)), ",")
	return version
}
