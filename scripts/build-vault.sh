#!/usr/bin/env bash
# Builds Vault from the released module pinned in tools/vault and links it at
# the path given as $1. The binary is cached outside the work tree, keyed by
# the tools module's contents, so that fresh clones on the same machine (CI
# among them) reuse one build: a cold build downloads about 1.5 GB of modules
# and compiles for about ten minutes on two cores.
set -euo pipefail

out=${1:?usage: build-vault.sh OUTPUT}
root=$(cd "$(dirname "$0")/.." && pwd)
key=$(cat "$root/tools/vault/go.mod" "$root/tools/vault/go.sum" "$root/tools/vault/main.go" | sha256sum | cut -c1-16)
cache_dir=${VAULT_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-iris}
cached="$cache_dir/vault-$key"

if [ ! -x "$cached" ]; then
  mkdir -p "$cache_dir"
  echo "building Vault from tools/vault into $cached (cold: ~1.5 GB of modules, ~10 minutes)" >&2
  tmp="$cached.tmp.$$"
  (cd "$root/tools/vault" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp" .)
  mv -f "$tmp" "$cached"
fi
mkdir -p "$(dirname "$out")"
ln -sf "$cached" "$out"
