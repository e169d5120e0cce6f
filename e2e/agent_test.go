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

// vaultAgent is a running Vault Agent rendering one template.
type vaultAgent struct {
	proc        *process
	destination string
	logPath     string
}

// startAgent runs `vault agent` against v, authenticated with v's root token
// through a token file, rendering tmpl (consul-template syntax) to a file.
// Use waitRendered to read it.
func startAgent(t testing.TB, v *vaultServer, tmpl string) *vaultAgent {
	t.Helper()
	// Inside the server's directory, so that the Agent log is still there
	// for the leak check when the server stops.
	dir, err := os.MkdirTemp(v.dir, "agent-")
	require.NoError(t, err)
	tokenPath := filepath.Join(dir, "token")
	sourcePath := filepath.Join(dir, "template.ctmpl")
	a := &vaultAgent{
		destination: filepath.Join(dir, "rendered"),
		logPath:     filepath.Join(dir, "agent.log"),
	}
	require.NoError(t, os.WriteFile(tokenPath, []byte(v.rootToken()), 0o600))
	require.NoError(t, os.WriteFile(sourcePath, []byte(tmpl), 0o600))
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
template {
  source      = %q
  destination = %q
}
`, v.address(), tokenPath, sourcePath, a.destination)
	cfgPath := filepath.Join(dir, "agent.hcl")
	require.NoError(t, os.WriteFile(cfgPath, []byte(cfg), 0o600))

	v.rec.addLogFile("vault agent log", a.logPath)
	a.proc = startProcess(t, "vault agent", a.logPath, childEnv("HOME="+dir), vaultBin,
		"agent", "-config="+cfgPath, "-log-level=trace")
	return a
}

// waitRendered polls the rendered file until accept returns true for its
// content, and returns that content. It fails early if Agent exits.
func (a *vaultAgent) waitRendered(t testing.TB, timeout time.Duration, what string, accept func(content string) bool) string {
	t.Helper()
	var content string
	eventually(t, timeout, what, func() (bool, string) {
		if a.proc.exited() {
			t.Fatalf("Vault Agent exited (%v); log tail:\n%s", a.proc.waitErr, logTail(a.logPath, 40))
		}
		b, err := os.ReadFile(a.destination)
		if err != nil {
			return false, err.Error()
		}
		content = string(b)
		return accept(content), fmt.Sprintf("rendered file holds %d bytes", len(b))
	})
	return content
}
