//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// vaultAgent is a running Vault Agent. destination is the file startAgent
// renders to; startAgentWith's callers choose their own files in dir.
type vaultAgent struct {
	proc        *process
	dir         string
	destination string
	logPath     string
}

// startAgent runs `vault agent` (`bao agent` on OpenBao) against v, authenticated with v's root token
// through a token file, rendering tmpl (consul-template syntax) to a file.
// Use waitRendered to read it.
func startAgent(t testing.TB, v *vaultServer, tmpl string) *vaultAgent {
	t.Helper()
	return startAgentWith(t, v, func(dir string) string {
		sourcePath := filepath.Join(dir, "template.ctmpl")
		require.NoError(t, os.WriteFile(sourcePath, []byte(tmpl), 0o600))
		return fmt.Sprintf("template {\n  source      = %q\n  destination = %q\n}\n", sourcePath, filepath.Join(dir, "rendered"))
	})
}

// startAgentWith runs `vault agent` like startAgent, with the template
// stanzas that templates returns for the Agent's directory, so that a test
// can render several files, or run a stanza exactly as docs/consumers.md shows it.
func startAgentWith(t testing.TB, v *vaultServer, templates func(dir string) string) *vaultAgent {
	t.Helper()
	// Inside the server's directory, so that the Agent log is still there
	// for the leak check when the server stops.
	dir, err := os.MkdirTemp(v.dir, "agent-")
	require.NoError(t, err)
	tokenPath := filepath.Join(dir, "token")
	a := &vaultAgent{
		dir:         dir,
		destination: filepath.Join(dir, "rendered"),
		logPath:     filepath.Join(dir, "agent.log"),
	}
	require.NoError(t, os.WriteFile(tokenPath, []byte(v.rootToken()), 0o600))
	cfg := fmt.Sprintf(`
vault {
  address = %q
}
auto_auth {
  method {
    type = "token_file"
    config = {
      token_file_path = %q
    }
  }
}
template_config {
  exit_on_retry_failure = true
}
`, v.address(), tokenPath) + templates(dir)
	cfgPath := filepath.Join(dir, "agent.hcl")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))

	v.rec.addLogFile(server.cli+" agent log", a.logPath)
	a.proc = startProcess(t, server.cli+" agent", a.logPath, childEnv("HOME="+dir), vaultBin,
		"agent", "-config="+cfgPath, "-log-level=trace")
	return a
}

// waitRendered polls the rendered file until accept returns true for its
// content, and returns that content. It fails early if Agent exits.
func (a *vaultAgent) waitRendered(t testing.TB, timeout time.Duration, what string, accept func(content string) bool) string {
	t.Helper()
	return a.waitFile(t, a.destination, timeout, what, accept)
}

// waitFile is waitRendered for any file the Agent renders.
func (a *vaultAgent) waitFile(t testing.TB, path string, timeout time.Duration, what string, accept func(content string) bool) string {
	t.Helper()
	var content string
	eventually(t, timeout, what, func() (bool, string) {
		a.checkRunning(t)
		b, err := os.ReadFile(path)
		if err != nil {
			return false, err.Error()
		}
		content = string(b)
		return accept(content), fmt.Sprintf("rendered file holds %d bytes", len(b))
	})
	return content
}

// checkRunning fails the test with the Agent's log if it has exited.
func (a *vaultAgent) checkRunning(t testing.TB) {
	t.Helper()
	if a.proc.exited() {
		t.Fatalf("Vault Agent exited (%v); log tail:\n%s", a.proc.waitErr, logTail(a.logPath, 40))
	}
}
