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
	v.enableIRIS(t, mountPath, pluginVersion)
}

// loopbackAllowedHosts is what every suite's mount allows: Trackunit's own
// host, and the emulators on any loopback port of 127.0.0.1. Other loopback
// addresses (127.0.0.2) stay outside, for collectors that must see nothing.
const loopbackAllowedHosts = "auth.trackunit.com,127.0.0.1"

// enableIRIS mounts the plugin's version at mount and allows loopback, as
// an operator with a local emulator would. Every suite mounts through it.
func (v *vaultServer) enableIRIS(t testing.TB, mount, version string) {
	t.Helper()
	v.mustCLI(t, "secrets", "enable", "-path="+mount, "-plugin-version="+version, pluginName)
	v.mustCLI(t, "write", mount+"/settings", "allowed_hosts="+loopbackAllowedHosts)
}
