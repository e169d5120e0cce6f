// Command vault-plugin-secrets-iris is the IRIS secrets engine as a Vault
// plugin binary. Everything of substance lives in the root package.
package main

import (
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/plugin"

	iris "vault-plugin-secrets-iris"
)

func main() {
	apiClientMeta := &api.PluginAPIClientMeta{}
	flags := apiClientMeta.FlagSet()
	if err := flags.Parse(os.Args[1:]); err != nil {
		fatal(err)
	}

	err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: iris.Factory,
		// Vault sets VAULT_PLUGIN_AUTOMTLS_ENABLED and negotiates mTLS
		// itself; the TLS provider is only for Vault versions without it.
		TLSProviderFunc: api.VaultPluginTLSProvider(apiClientMeta.GetTLSConfig()),
	})
	if err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	hclog.New(&hclog.LoggerOptions{}).Error("plugin shutting down", "error", err)
	os.Exit(1)
}
