// Command vault builds the stock Vault CLI and server from a released Vault
// module, so the end-to-end tests and `make dev` run the real thing without
// downloading a prebuilt binary.
package main

import (
	"os"

	"github.com/hashicorp/vault/command"
)

func main() {
	os.Exit(command.Run(os.Args[1:]))
}
