// Command noop-plugin is a Vault secrets plugin that does nothing: its one
// path, noop, answers every read with the same small map. `make bench` runs
// it next to the IRIS plugin so that the load run can tell what any external
// plugin costs (Vault plus its gRPC hop) from what the IRIS plugin adds.
package main

import (
	"context"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/plugin"
)

func main() {
	err := plugin.ServeMultiplex(&plugin.ServeOpts{BackendFactoryFunc: factory})
	if err != nil {
		hclog.New(&hclog.LoggerOptions{}).Error("noop plugin shutting down", "error", err)
		os.Exit(1)
	}
}

func factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := &framework.Backend{
		BackendType: logical.TypeLogical,
		Help:        "Answers reads of noop with a constant; for benchmarks only.",
		Paths: []*framework.Path{{
			Pattern: "noop",
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: read},
			},
		}},
	}
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func read(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	return &logical.Response{Data: map[string]interface{}{"value": "noop"}}, nil
}
