//go:build e2e

// Package e2e tests the plugin the way users run it: a real Vault (or
// OpenBao) server started from VAULT_BIN, the plugin binary from IRIS_PLUGIN_BIN registered by
// SHA-256 and version, driven through the real `vault` CLI and the HTTP API,
// against the in-process IRIS emulator. Run it with `make test-e2e`.
//
// Every process a test starts listens on a loopback port the test picked and
// is stopped in t.Cleanup, also when the test fails; a supervisor process
// takes it down even when go test panics on its timeout. Waits poll with
// deadlines.
//
// The harness, by concern: harness_test.go (settings, TestMain, small
// helpers), product_test.go (Vault or OpenBao, which release, and the
// features a test may need), process_test.go (supervised child processes, with the
// platform-specific parts in process_linux_test.go, process_unix_test.go and
// process_other_test.go), server_test.go (Vault servers), catalog_test.go
// (plugin registration), cli_test.go (the vault CLI), api_test.go (the HTTP
// API), agent_test.go (Vault Agent), emulator_test.go (the IRIS emulator) and
// leaks_test.go (the secret-leak check).
package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	var err error
	if server, err = detectProduct(vaultBin); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v\n", err)
		os.Exit(2)
	}
	fmt.Fprintf(os.Stderr, "e2e: against %s (%s)\n", server, server.banner)
	os.Exit(m.Run())
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
// or BAO_* setting that could point a command at another server (OpenBao
// reads both), plus extra.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") && !strings.HasPrefix(kv, "BAO_") {
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
