#!/usr/bin/env bash
# Builds Vault from a released module and links it at the path given as $1.
#
# By default the release is the one pinned in tools/vault. With VAULT_VERSION
# set (make test-compat), a tools module for that release is generated under
# the cache directory instead: the same main.go, with the
# github.com/hashicorp/vault/sdk and /api releases that Vault's own go.mod
# requires (newer SDK releases do not compile against older Vault releases).
# Where a release does not compile against those, the case below pairs it
# with the nearest releases that do, and says why; the script prints the
# pairing it used. VAULT_SDK_VERSION picks another sdk release (its own
# generated module). Releases that compile against no released sdk (1.18.2
# to 1.18.5, 1.20.x) stop at once with the reason.
#
# The binary is cached outside the work tree, keyed by the tools module's
# contents, so that fresh clones on the same machine
# (CI among them) reuse one build: a cold build downloads about 1.5 GB of
# modules and compiles for about ten minutes on two cores. With
# VAULT_FETCH_ONLY=1 the script only generates the tools module, which
# downloads the modules, and stops before compiling.
#
# A module the checksum database does not know fails `go get` with "verifying
# module: ... 404 Not Found" (seen for Vault v1.20.0's
# github.com/hashicorp/vault-plugin-secrets-gcp v0.22.0); setting GONOSUMDB to
# that module's path accepts what the module proxy serves for it.
set -euo pipefail

out=${1:?usage: [VAULT_VERSION=vX.Y.Z] build-vault.sh OUTPUT}
root=$(cd "$(dirname "$0")/.." && pwd)
cache_dir=${VAULT_BUILD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-iris}
mkdir -p "$cache_dir"

if [ -n "${VAULT_VERSION:-}" ]; then
  case "$VAULT_VERSION" in
    v[0-9]*.[0-9]*.[0-9]*) ;;
    *) echo "VAULT_VERSION=$VAULT_VERSION is not a release like v1.20.0" >&2; exit 1 ;;
  esac
  # The pairing comes first, from Vault's own go.mod (downloaded once, then
  # read from the module cache), so that the generated module's directory
  # names it: a change of the pairing below generates a new module instead
  # of reusing one generated with another.
  gomod=$(cd "$cache_dir" && go mod download -json "github.com/hashicorp/vault@$VAULT_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -f "$gomod" ] || { echo "no go.mod for github.com/hashicorp/vault@$VAULT_VERSION" >&2; exit 1; }
  # Vault replaces sdk and api with its own directories; the require lines
  # name the releases cut from them.
  sdk=$(awk '$1 == "github.com/hashicorp/vault/sdk" && $2 ~ /^v/ { print $2; exit }' "$gomod")
  api=$(awk '$1 == "github.com/hashicorp/vault/api" && $2 ~ /^v/ { print $2; exit }' "$gomod")
  nosumdb= replaces=
  why="as its go.mod requires"
  # Releases that do not compile against what their go.mod requires, with
  # the nearest pairing that does (tried here).
  case "$VAULT_VERSION" in
    v1.19.5)
      # sdk v0.15.2 lacks consts.PluginTier ("undefined: consts.PluginTier");
      # v0.17.0 is the oldest sdk release the proxy serves that has it, and
      # the checksum database does not know the snowflake plugin v0.13.1
      # that v1.19.5 requires.
      sdk=v0.17.0 api=v1.16.0 nosumdb=github.com/hashicorp/vault-plugin-database-snowflake
      why="its go.mod's sdk v0.15.2 lacks consts.PluginTier"
      ;;
    v1.18.[2-9] | v1.20.*)
      # No released sdk compiles with these. Their go.mod requires sdk
      # v0.14.0 (1.18) or v0.18.0 (1.20), built from their own tree, and the
      # proxy refuses the sdk at those commits ("not available"). 1.18.2 on
      # use certutil.AlwaysEnforceErr, 1.18.3 on logical.EventMetadataPath
      # and 1.18.5 certutil.VerifyCertificate, none of which v0.14.0 has;
      # v0.14.1 and later add DeregisterRotationJob to logical.SystemView,
      # which the system views of 1.18 do not implement ("missing method
      # DeregisterRotationJob", tried with v0.15.0), and v0.14.2 is refused.
      # 1.20.0 and 1.20.4 fail against sdk v0.18.0 (no
      # pluginutil.PluginRunner.Download) and v0.19.0 (a changed
      # connutil.GetCloudSQLAuthOptions). v1.18.1 builds (below).
      if [ -z "${VAULT_SDK_VERSION:-}" ]; then
        echo "Vault $VAULT_VERSION compiles against no sdk release the module proxy serves; see the comment in $0 (v1.18.1 is the newest 1.18 that builds). Set VAULT_SDK_VERSION to try one anyway." >&2
        exit 1
      fi
      ;;
    v1.18.1)
      # Its go.mod's api v1.15.0 lacks MountConfigInput's
      # TrimRequestTrailingSlashes, which its command package sets
      # ("undefined"); v1.16.0 is the next release the proxy serves.
      api=v1.16.0
      why="its go.mod's api v1.15.0 lacks MountConfigInput.TrimRequestTrailingSlashes"
      ;;
    v1.16.3)
      # sdk v0.11.0 lacks logical.CreateContextRedactionSettings,
      # logical.CtxRedactionSettingsValue, ocsp.IsOcspVerificationError and
      # pluginidentityutil.ErrPluginWorkloadIdentityUnsupported, and its
      # ldaputil.Connection wants the Close() of an older go-ldap than the
      # build selects ("wrong type for method Close"); v0.11.1 still lacks
      # the ocsp one; v0.12.0 has them all and builds.
      sdk=v0.12.0
      why="its go.mod's sdk v0.11.0 lacks logical.CreateContextRedactionSettings and ocsp.IsOcspVerificationError"
      ;;
    v1.17.6)
      # Its go.mod requires github.com/pires/go-proxyproto v1.0.0, which
      # the proxy refuses ("403 This module version is not available"), and
      # replaces it with a fork; a dependency's replace directives do not
      # apply to the module that requires it, so ours repeats that one.
      # (Its other replaces, and those of later releases, are left out:
      # the builds compile without them, and 1.18's and 1.19's
      # github.com/Jeffail/keyring is refused by the proxy too.)
      replaces=github.com/pires/go-proxyproto@v1.0.0=github.com/peteski22/go-proxyproto@v1.0.0
      ;;
  esac
  if [ -n "${VAULT_SDK_VERSION:-}" ]; then
    sdk=$VAULT_SDK_VERSION why="VAULT_SDK_VERSION"
  fi
  pairing="Vault $VAULT_VERSION: sdk $sdk, api $api ($why)${nosumdb:+, GONOSUMDB=$nosumdb}${replaces:+, replace $replaces}"
  echo "$pairing" >&2
  src="$cache_dir/tools-vault-$VAULT_VERSION-$(echo "$pairing" | sha256sum | cut -c1-12)"
  if [ ! -f "$src/.generated" ]; then
    echo "generating a tools module for Vault $VAULT_VERSION in $src" >&2
    rm -rf "$src"
    mkdir -p "$src"
    cp "$root/tools/vault/main.go" "$src/main.go"
    go_directive=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$root/tools/vault/go.mod")
    printf 'module vault-plugin-secrets-iris/tools/vault-compat\n\ngo %s\n' "$go_directive" >"$src/go.mod"
    echo "$pairing" >"$src/pairing"
    for r in $replaces; do
      (cd "$src" && go mod edit -replace "$r")
    done
    (cd "$src" && GONOSUMDB=${GONOSUMDB:-}${nosumdb:+,$nosumdb} go get "github.com/hashicorp/vault/command@$VAULT_VERSION" \
      "github.com/hashicorp/vault/sdk@$sdk" "github.com/hashicorp/vault/api@$api")
    touch "$src/.generated"
  fi
  key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
  cached="$cache_dir/compat-vault-$VAULT_VERSION-$key"
  [ -z "${VAULT_FETCH_ONLY:-}" ] || exit 0
else
  src="$root/tools/vault"
  key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
  cached="$cache_dir/vault-$key"
fi

if [ ! -x "$cached" ]; then
  echo "building Vault from $src into $cached (cold: ~1.5 GB of modules, ~10 minutes)" >&2
  tmp="$cached.tmp.$$"
  (cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp" .)
  mv -f "$tmp" "$cached"
fi
mkdir -p "$(dirname "$out")"
ln -sf "$cached" "$out"
