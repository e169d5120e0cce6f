package iris

import (
	_ "embed"
	"strings"
)

//go:embed VERSION
var versionFile string

// Version is the plugin's version, reported to Vault as RunningVersion.
// Vault refuses to register a binary whose reported version differs from the
// -version given, so a plain `go build` and the Makefile must agree: both take
// it from the VERSION file. A release build may stamp another one with
// -ldflags "-X vault-plugin-secrets-iris.Version=…".
var Version string

func init() {
	if Version == "" {
		Version = strings.TrimSpace(versionFile)
	}
}
