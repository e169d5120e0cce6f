//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// The server the suite runs against: Vault or OpenBao, told apart by what
// VAULT_BIN's `version` prints. Everything that differs between the two
// (the CLI's name, its environment variables, which features a release has)
// is decided here, so that the rest of the suite is written once.

// product is a server release.
type product struct {
	name      string // "Vault" or "OpenBao", as `version` prints it
	cli       string // the CLI's name in messages: "vault" or "bao"
	envPrefix string // the CLI's and Agent's environment: "VAULT_" or "BAO_"
	version   [3]int
	banner    string // the first line of `version`
}

// server is the product at VAULT_BIN, set by TestMain.
var server product

var versionLine = regexp.MustCompile(`^(Vault|OpenBao) v(\d+)\.(\d+)\.(\d+)`)

// detectProduct runs `version` on bin.
func detectProduct(bin string) (product, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "version")
	cmd.Env = childEnv()
	out, err := cmd.Output()
	if err != nil {
		return product{}, fmt.Errorf("%s version: %v", bin, err)
	}
	banner, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	m := versionLine.FindStringSubmatch(banner)
	if m == nil {
		return product{}, fmt.Errorf("%s version printed %q, neither a Vault nor an OpenBao release", bin, banner)
	}
	p := product{name: m[1], cli: "vault", envPrefix: "VAULT_", banner: banner}
	if p.name == "OpenBao" {
		p.cli, p.envPrefix = "bao", "BAO_"
	}
	for i := range p.version {
		p.version[i], _ = strconv.Atoi(m[2+i])
	}
	return p, nil
}

func (p product) String() string {
	return fmt.Sprintf("%s v%d.%d.%d", p.name, p.version[0], p.version[1], p.version[2])
}

// env is the CLI environment variable NAME (ADDR, TOKEN, ...) set to value,
// under this product's prefix.
func (p product) env(name, value string) string { return p.envPrefix + name + "=" + value }

// serverConfig is what the config file of every cluster node adds for this
// product. OpenBao (2.5 and later) serves reads on standby nodes of a Raft
// cluster by default, where the standby's router may not yet know a mount
// the active node just made (seen: "no handler for route iris/config/..."
// from a standby); the suite runs OpenBao clusters as Vault runs them, with
// every request forwarded to the active node.
func (p product) serverConfig() string {
	if p.name == "OpenBao" {
		return "disable_standby_reads = true\n"
	}
	return ""
}

// pluginReloadArgs is `plugin reload` of a plugin by name: OpenBao's CLI has
// no -type flag (it reloads the plugin of that name whatever its type).
func (p product) pluginReloadArgs(pluginType, name string) []string {
	if p.name == "OpenBao" {
		return []string{"plugin", "reload", "-plugin=" + name}
	}
	return []string{"plugin", "reload", "-type=" + pluginType, "-plugin=" + name}
}
