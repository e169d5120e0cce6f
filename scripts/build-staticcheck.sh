#!/usr/bin/env bash
# Builds staticcheck from the release pinned in tools/staticcheck (a module
# of its own, so that the plugin's go.mod does not carry a linter's
# dependencies) and links it at the path given as $1. The binary is cached
# outside the work tree, keyed by that module's contents, so that fresh
# clones on one machine (CI among them) build it once.
set -euo pipefail

out=${1:?usage: build-staticcheck.sh OUTPUT}
root=$(cd "$(dirname "$0")/.." && pwd)
src="$root/tools/staticcheck"
cache_dir=${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-iris
key=$(cat "$src/go.mod" "$src/go.sum" | sha256sum | cut -c1-16)
cached="$cache_dir/staticcheck-$key"
if [ ! -x "$cached" ]; then
  mkdir -p "$cache_dir"
  echo "building staticcheck from $src into $cached" >&2
  tmp="$cached.tmp.$$"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$tmp" honnef.co/go/tools/cmd/staticcheck)
  mv -f "$tmp" "$cached"
fi
mkdir -p "$(dirname "$out")"
ln -sf "$cached" "$out"
