#!/usr/bin/env bash
# Builds OpenBao's `bao` from a source checkout ($OPENBAO_SRC, a git work
# tree of github.com/openbao/openbao) and links it at the path given as $1.
#
# OpenBao's module is not served by the Go module proxy, but its dependencies
# mostly are; nothing of OpenBao is copied into this repository. The binary
# is cached outside the work tree, keyed by the checkout's commit (and its
# local changes, if any). GOTOOLCHAIN=auto lets the go command fetch the
# toolchain the checkout's go.mod asks for, where ours is older.
#
# Tried here: v2.6.0 to v2.6.2 do not build from the module proxy, which
# answers "403 This module version is not available" for six of the KMS seal
# wrappers they require (github.com/openbao/go-kms-wrapping/wrappers/
# alicloudkms v2.3.0, awskms v2.4.0, azurekeyvault v2.4.0, gcpckms v2.3.0,
# ocikms v2.3.0, pkcs11 v2.6.0); v2.5.5 builds.
set -euo pipefail

out=${1:?usage: OPENBAO_SRC=DIR build-openbao.sh OUTPUT}
src=${OPENBAO_SRC:?set OPENBAO_SRC to an OpenBao source checkout}
src=$(cd "$src" && pwd)
cache_dir=${VAULT_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-iris}
mkdir -p "$cache_dir"

[ -f "$src/go.mod" ] && grep -q '^module github.com/openbao/openbao' "$src/go.mod" ||
  { echo "$src is not an OpenBao source checkout (no go.mod of github.com/openbao/openbao)" >&2; exit 1; }
commit=$(git -C "$src" rev-parse HEAD)
key=$commit
dirty=$(git -C "$src" status --porcelain --untracked-files=no)
if [ -n "$dirty" ]; then
  key=$commit-dirty-$(git -C "$src" diff HEAD | sha256sum | cut -c1-12)
fi
# The release version bao reports (`bao version`), as OpenBao's release
# builds set it; a commit between tags reports the next tag's -dev.
tag=$(git -C "$src" describe --tags --exact-match HEAD 2>/dev/null || true)
version=${tag#v}
[ -n "$version" ] || version=$(git -C "$src" describe --tags --abbrev=0 HEAD 2>/dev/null | sed 's/^v//')-dev
cached="$cache_dir/openbao-$key"

export GOTOOLCHAIN=${OPENBAO_GOTOOLCHAIN:-auto}
echo "OpenBao ${tag:-$version} from $src at $commit$([ -n "$dirty" ] && echo ' (with local changes)'), $(cd "$src" && go version)" >&2
if [ ! -x "$cached" ]; then
  echo "building bao into $cached" >&2
  tmp="$cached.tmp.$$"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -o "$tmp" \
    -ldflags "-s -w -X github.com/openbao/openbao/version.fullVersion=$version -X github.com/openbao/openbao/version.GitCommit=$commit" .)
  mv -f "$tmp" "$cached"
fi
mkdir -p "$(dirname "$out")"
ln -sf "$cached" "$out"
"$out" version >&2
