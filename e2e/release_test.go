//go:build e2e

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
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

		const mount = "iris-release"
		v.mustCLI(t, "plugin", "register", "-sha256="+sha, "-version="+version, "-command="+linux, "secret", pluginName)
		v.enableIRIS(t, mount, version)

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
