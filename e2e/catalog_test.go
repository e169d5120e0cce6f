//go:build e2e

package e2e

import (
	"path/filepath"
	"testing"
)

// Plugin registration: the catalog and the mount.

// registerAndEnable registers the plugin by SHA-256 and version, as an
// operator would, and mounts that version at iris/.
func (v *vaultServer) registerAndEnable(t testing.TB) {
	t.Helper()
	sha := fileSHA256(t, filepath.Join(v.pluginDir, pluginName))
	v.mustCLI(t, "plugin", "register", "-sha256="+sha, "-version="+pluginVersion, "secret", pluginName)
	v.mustCLI(t, "secrets", "enable", "-path="+mountPath, "-plugin-version="+pluginVersion, pluginName)
}
