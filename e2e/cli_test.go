//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The vault CLI

type cliResult struct {
	args           []string
	Stdout, Stderr string
	ExitCode       int
}

func (r cliResult) String() string {
	return fmt.Sprintf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", server.cli, commandName(r.args), r.ExitCode, r.Stdout, r.Stderr)
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

// cli runs the real vault CLI (bao on OpenBao) against this server with the
// root token. Its output is recorded for the secret-leak check.
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
		server.env("ADDR", v.address()),
		server.env("TOKEN", token),
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
		t.Fatalf("running %s %s: %v", server.cli, commandName(args), err)
	}
	v.rec.addOutput("cli: "+server.cli+" "+commandName(args), res.Stdout+"\n"+res.Stderr)
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
	require.NoError(t, json.Unmarshal([]byte(stdout), out), "%s %s printed:\n%s", server.cli, commandName(args), stdout)
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
