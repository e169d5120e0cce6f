//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// releasePlatforms are the GOOS/GOARCH pairs `make release` builds.
var releasePlatforms = []string{"linux/amd64", "linux/arm64", "darwin/amd64", "darwin/arm64", "windows/amd64"}

// TestRelease runs `make release` into a temporary directory with a version
// no other build carries, checks SHA256SUMS against the binaries and the
// binaries' build information, and registers the linux/amd64 binary in a
// real Vault by the checksum from SHA256SUMS, as the README's install
// section tells operators to.
func TestRelease(t *testing.T) {
	t.Parallel()
	version := "v0.99.0-e2e." + randomHex(4)
	dist := t.TempDir()

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "make", "--no-print-directory", "-C", "..", "release", "VERSION="+version, "DIST_DIR="+dist)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "make release:\n%s", out)

	// SHA256SUMS names every binary, once, with its checksum.
	sums := map[string]string{}
	f, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	require.NoError(t, err)
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		sum, name, ok := strings.Cut(s.Text(), "  ")
		require.True(t, ok, "SHA256SUMS line %q", s.Text())
		require.NotContains(t, sums, name, "SHA256SUMS names %s twice", name)
		sums[name] = sum
	}
	require.NoError(t, s.Err())

	entries, err := os.ReadDir(dist)
	require.NoError(t, err)
	var binaries []string
	for _, e := range entries {
		if e.Name() != "SHA256SUMS" {
			binaries = append(binaries, e.Name())
		}
	}
	require.Len(t, binaries, len(releasePlatforms), "dist holds %v", binaries)
	require.Len(t, sums, len(releasePlatforms), "SHA256SUMS names %v", sums)

	for _, platform := range releasePlatforms {
		goos, goarch, _ := strings.Cut(platform, "/")
		name := pluginName + "_" + version + "_" + goos + "_" + goarch
		if goos == "windows" {
			name += ".exe"
		}
		path := filepath.Join(dist, name)
		t.Run(goos+"_"+goarch, func(t *testing.T) {
			require.FileExists(t, path)
			assert.Equal(t, fileSHA256(t, path), sums[name], "SHA256SUMS entry of %s", name)

			info := goVersionM(t, path)
			for _, want := range []string{
				"path\t" + pluginName + "/cmd/" + pluginName,
				"build\tGOOS=" + goos,
				"build\tGOARCH=" + goarch,
				"build\tCGO_ENABLED=0",
				"build\t-trimpath=true",
			} {
				assert.Contains(t, info, want, "go version -m %s", name)
			}
			// With -trimpath, go version -m leaves -ldflags out of the
			// build information (golang/go#52372), so the version the
			// -X flag stamped is looked for in the binary itself; it is
			// unique to this run. The linux/amd64 binary's running
			// version is checked in Vault below.
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, bytes.Contains(b, []byte(version)), "%s does not carry the version %s", name, version)
		})
	}

	t.Run("RegisteredByChecksum", func(t *testing.T) {
		linux := pluginName + "_" + version + "_linux_amd64"
		sha := sums[linux]
		require.NotEmpty(t, sha)
		rec := newRecorder()
		v := startDevVaultAt(t, rec, "info", func(v *vaultServer) {
			copyFile(t, filepath.Join(dist, linux), filepath.Join(v.pluginDir, linux), 0o755)
		})
		t.Cleanup(func() { v.finish(t) })

		// The README's install commands, as an operator runs them, with
		// this run's version and directories in place of the README's.
		const mount = "iris-release"
		stdout := runInstallBlock(t, v, dist, version, mount)
		// The emulator listens on loopback, which the default allowed_hosts
		// (auth.trackunit.com) refuses.
		v.mustCLI(t, "write", mount+"/settings", "allowed_hosts="+loopbackAllowedHosts)
		output := docBlock(t, readmePage, "install-output.txt")
		_, enabled, ok := strings.Cut(output, "\nSuccess! Enabled")
		require.True(t, ok, "the README's install output shows no enabled mount:\n%s", output)
		enabled, _, _ = strings.Cut(enabled, "\n")
		shownVersion := readmeVersion(t, output)
		enabled = strings.ReplaceAll(strings.ReplaceAll(enabled, shownVersion, version), " at: "+mountPath+"/", " at: "+mount+"/")
		assert.Contains(t, stdout, "Success! Enabled"+enabled, "secrets enable printed what the README does not show")

		var list struct {
			Details []struct{ Name, Version string } `json:"details"`
		}
		v.cliJSON(t, &list, "plugin", "list", "-format=json", "-detailed", "secret")
		var versions []string
		for _, p := range list.Details {
			if p.Name == pluginName {
				versions = append(versions, p.Version)
			}
		}
		assert.Contains(t, versions, version, "vault plugin list")

		var mounts map[string]struct {
			PluginVersion        string `json:"plugin_version"`
			RunningPluginVersion string `json:"running_plugin_version"`
			RunningSHA256        string `json:"running_sha256"`
		}
		v.cliJSON(t, &mounts, "secrets", "list", "-format=json", "-detailed")
		m, ok := mounts[mount+"/"]
		require.True(t, ok, "no %s/ mount", mount)
		assert.Equal(t, version, m.PluginVersion)
		assert.Equal(t, version, m.RunningPluginVersion, "the release binary's running version")
		assert.Equal(t, sha, m.RunningSHA256)

		// The release binary serves: a config write verifies against the
		// emulator with a password grant.
		em := newEmulator(t, rec, time.Hour)
		args := configArgs("release", em)
		args[1] = mount + "/config/release"
		v.mustCLI(t, args...)
		assert.Equal(t, 1, em.Stats().PasswordGrants)
	})
}

// goVersionM is what `go version -m` says about a binary.
func goVersionM(t testing.TB, path string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "version", "-m", path).CombinedOutput()
	require.NoError(t, err, "go version -m %s:\n%s", path, out)
	return string(out)
}

// readmeVersion is the plugin version a README block shows.
func readmeVersion(t testing.TB, block string) string {
	t.Helper()
	m := regexp.MustCompile(`\bv\d+\.\d+\.\d+\b`).FindString(block)
	require.NotEmpty(t, m, "no version in the README block:\n%s", block)
	return m
}

// runInstallBlock runs the README's install commands against v, past their
// first line (make release, which TestRelease ran already with version into
// dist), and returns what they printed.
func runInstallBlock(t testing.TB, v *vaultServer, dist, version, mount string) string {
	t.Helper()
	block := docBlock(t, readmePage, "install-release.sh")
	first, rest, _ := strings.Cut(block, "\n")
	require.True(t, strings.HasPrefix(first, "make release VERSION="), "the README's install block starts with %q", first)
	shown := readmeVersion(t, first)
	const pluginDir = "/etc/vault/plugins/"
	require.Contains(t, rest, pluginDir, "the README's install block copies into another directory")
	require.Contains(t, rest, " -path="+mountPath+" ", "the README's install block mounts elsewhere")
	script := strings.NewReplacer(
		shown, version,
		"dist/", dist+"/",
		pluginDir, v.pluginDir+"/",
		" -path="+mountPath+" ", " -path="+mount+" ",
	).Replace(rest)

	// The CLI as the README calls it, vault, whichever server runs.
	bin := filepath.Join(t.TempDir(), "bin")
	require.NoError(t, os.MkdirAll(bin, 0o755))
	vault, err := filepath.Abs(vaultBin)
	require.NoError(t, err)
	require.NoError(t, os.Symlink(vault, filepath.Join(bin, "vault")))
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-e", "-c", script)
	cmd.Dir = t.TempDir()
	cmd.Env = childEnv(
		"PATH="+bin+string(os.PathListSeparator)+"/usr/bin:/bin",
		"HOME="+filepath.Join(v.dir, "home"),
		server.env("ADDR", v.address()),
		server.env("TOKEN", v.rootToken()),
		"VAULT_ADDR="+v.address(),
		"VAULT_TOKEN="+v.rootToken(),
	)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the README's install commands failed:\n%s\n%s", script, out)
	return string(out)
}
