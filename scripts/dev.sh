#!/usr/bin/env bash
# make dev: a real Vault dev server with the IRIS plugin registered (by SHA-256
# and version) and enabled at iris/, an IRIS emulator on loopback, and a demo
# credential of each kind: an API user at iris/config/demo, an API key at
# iris/config/demo-key and an app installation at iris/config/demo-app. Stays
# up until Ctrl-C, then stops all of it.
#
# Settings (environment):
#   VAULT_BIN, PLUGIN_BIN, EMULATOR_BIN, PLUGIN_VERSION   set by the Makefile
#   DEV_VAULT_PORT      first port to try for Vault (default 8200)
#   DEV_ROOT_TOKEN      root token of the dev server (default "root")
#   DEV_TOKEN_LIFETIME  lifetime of the emulator's access tokens (default 3600s)
set -euo pipefail

root_dir="$(cd "$(dirname "$0")/.." && pwd)"
VAULT_BIN="${VAULT_BIN:-$root_dir/bin/vault}"
PLUGIN_BIN="${PLUGIN_BIN:-$root_dir/bin/vault-plugin-secrets-iris}"
EMULATOR_BIN="${EMULATOR_BIN:-$root_dir/bin/iris-emulator}"
PLUGIN_VERSION="${PLUGIN_VERSION:-v0.1.0}"
DEV_VAULT_PORT="${DEV_VAULT_PORT:-8200}"
DEV_ROOT_TOKEN="${DEV_ROOT_TOKEN:-root}"
DEV_TOKEN_LIFETIME="${DEV_TOKEN_LIFETIME:-3600s}"

plugin_name=vault-plugin-secrets-iris
# The emulator's demo API user. Passed to the emulator explicitly so that the
# two ends cannot drift apart; none of this is a real credential.
demo_client_id=0oademo0000000000000
demo_client_secret=demo-client-secret-NOT-A-REAL-SECRET
demo_username=demo-api-user
demo_password=demo-password-NOT-A-REAL-SECRET
demo_key_id=0oakey00000000000000
demo_key_secret=demo-key-secret-NOT-A-REAL-SECRET
demo_key_scopes=iris.assets.read,iris.alerts.read
demo_app_id=0oaapp00000000000000
demo_app_secret=demo-app-secret-NOT-A-REAL-SECRET
demo_app_account=demo-account-4711
demo_app_scopes=iris.assets.read

for bin in "$VAULT_BIN" "$PLUGIN_BIN" "$EMULATOR_BIN"; do
	if [[ ! -x "$bin" ]]; then
		echo "dev.sh: $bin is missing; run 'make dev'" >&2
		exit 1
	fi
done

work_dir="$(mktemp -d "${TMPDIR:-/tmp}/iris-dev.XXXXXX")"
emulator_pid=""
vault_pid=""

cleanup() {
	local status=$?
	trap - EXIT INT TERM
	# Vault stops its plugins when it shuts down; killing each process group
	# afterwards catches any a crashed Vault left behind.
	for pid in "$vault_pid" "$emulator_pid"; do
		[[ -n "$pid" ]] && kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in "$vault_pid" "$emulator_pid"; do
		[[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
	done
	for pid in "$vault_pid" "$emulator_pid"; do
		[[ -n "$pid" ]] && kill -KILL -- "-$pid" 2>/dev/null || true
	done
	if [[ $status -ne 0 && $status -ne 130 && $status -ne 143 ]]; then
		for log in "$work_dir/vault.log" "$work_dir/emulator.log"; do
			[[ -f "$log" ]] && { echo "--- last lines of $(basename "$log"):" >&2; tail -n 20 "$log" >&2; }
		done
	fi
	rm -rf "$work_dir"
	echo "dev.sh: stopped Vault and the IRIS emulator" >&2
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for runs a command until it succeeds, for at most $1 seconds; the
# processes it waits on also get checked, so a crash fails fast.
wait_for() {
	local timeout=$1 what=$2
	shift 2
	local deadline=$((SECONDS + timeout))
	until "$@" >/dev/null 2>&1; do
		for pid in $vault_pid $emulator_pid; do
			if ! kill -0 "$pid" 2>/dev/null; then
				echo "dev.sh: a process exited while waiting for $what" >&2
				exit 1
			fi
		done
		if ((SECONDS >= deadline)); then
			echo "dev.sh: timed out after ${timeout}s waiting for $what" >&2
			exit 1
		fi
		sleep 0.2
	done
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

sha256_of() {
	if command -v sha256sum >/dev/null; then
		sha256sum "$1" | cut -d' ' -f1
	else
		shasum -a 256 "$1" | cut -d' ' -f1
	fi
}

# Job control (set -m) while starting a background process gives it a process
# group of its own, so that cleanup also reaches the plugin processes Vault
# starts, even those a crashed Vault left behind. It is off otherwise, so that
# foreground commands stay in the script's group and Ctrl-C reaches the script.

# --- IRIS emulator ---------------------------------------------------------
set -m
"$EMULATOR_BIN" -addr 127.0.0.1:0 -ready-file "$work_dir/emulator.url" \
	-client-id "$demo_client_id" -client-secret "$demo_client_secret" \
	-username "$demo_username" -password "$demo_password" \
	-api-key "$demo_key_id:$demo_key_secret:$demo_key_scopes" \
	-app "$demo_app_id:$demo_app_secret:$demo_app_account:$demo_app_scopes" \
	-token-lifetime "$DEV_TOKEN_LIFETIME" >"$work_dir/emulator.log" 2>&1 &
emulator_pid=$!
set +m
wait_for 30 "the IRIS emulator" test -s "$work_dir/emulator.url"
emulator_url="$(cat "$work_dir/emulator.url")"

# --- Vault dev server ------------------------------------------------------
# A dev server also takes port+1 for its cluster listener.
port=$DEV_VAULT_PORT
while port_in_use "$port" || port_in_use $((port + 1)); do
	port=$((port + 2))
	if ((port > DEV_VAULT_PORT + 100)); then
		echo "dev.sh: no free port pair from $DEV_VAULT_PORT on" >&2
		exit 1
	fi
done
export VAULT_ADDR="http://127.0.0.1:$port"
export VAULT_TOKEN="$DEV_ROOT_TOKEN"

# The plugin directory is set in a config file instead of -dev-plugin-dir,
# which would register the binary without a version behind our back.
mkdir -p "$work_dir/plugins"
cp "$PLUGIN_BIN" "$work_dir/plugins/$plugin_name"
chmod 0755 "$work_dir/plugins/$plugin_name"
printf 'plugin_directory = "%s"\n' "$work_dir/plugins" >"$work_dir/vault.hcl"

set -m
"$VAULT_BIN" server -dev -dev-root-token-id="$DEV_ROOT_TOKEN" \
	-dev-listen-address="127.0.0.1:$port" -config="$work_dir/vault.hcl" \
	>"$work_dir/vault.log" 2>&1 &
vault_pid=$!
set +m
wait_for 60 "Vault at $VAULT_ADDR" "$VAULT_BIN" status

vault() { "$VAULT_BIN" "$@"; }
sha256="$(sha256_of "$work_dir/plugins/$plugin_name")"
vault plugin register -sha256="$sha256" -version="$PLUGIN_VERSION" secret "$plugin_name" >/dev/null
vault secrets enable -path=iris -plugin-version="$PLUGIN_VERSION" "$plugin_name" >/dev/null
# As an operator would for a local emulator: loopback on any port, besides
# Trackunit's own host.
vault write iris/settings allowed_hosts=auth.trackunit.com,127.0.0.1 >/dev/null
vault write iris/config/demo \
	client_id="$demo_client_id" client_secret="$demo_client_secret" \
	username="$demo_username" password="$demo_password" \
	token_url="$emulator_url/token" revocation_url="$emulator_url/revoke" >/dev/null
vault write iris/config/demo-key kind=api_key \
	client_id="$demo_key_id" client_secret="$demo_key_secret" \
	scopes=iris.assets.read token_url="$emulator_url/token/v2" >/dev/null
vault write iris/config/demo-app kind=app account_id="$demo_app_account" \
	client_id="$demo_app_id" client_secret="$demo_app_secret" \
	scopes="$demo_app_scopes" token_url="$emulator_url/apptoken" >/dev/null

echo
echo "Vault $("$VAULT_BIN" version | awk '{sub(",", "", $2); print $2}') is running at $VAULT_ADDR with $plugin_name $PLUGIN_VERSION"
echo "(registered by SHA-256 $sha256) enabled at iris/."
echo "The IRIS emulator is at $emulator_url; iris/config/demo (an API user),"
echo "iris/config/demo-key (an API key) and iris/config/demo-app (an app"
echo "installation) point at it."
for name in demo demo-key demo-app; do
	echo
	echo "\$ vault read iris/creds/$name"
	vault read "iris/creds/$name"
done
echo
vault_dir="$(cd "$(dirname "$VAULT_BIN")" && pwd)"
cat <<EOF
Next, in another shell:

  export PATH="$vault_dir:\$PATH"
  export VAULT_ADDR=$VAULT_ADDR
  export VAULT_TOKEN=$VAULT_TOKEN

  vault read iris/creds/demo-key      # a new leased access token each time
  vault read iris/token/demo-key      # the shared, always-fresh token
  vault read iris/status/demo-key     # how the credential is doing
  vault read iris/config/demo         # a stored credential, without its secrets
  vault list iris/config              # every stored credential
  vault path-help iris/creds/demo     # what each path does

To use the real Trackunit IRIS (each kind's token_url defaults to it), store
an API key from Trackunit's API Keys app:

  vault write iris/config/<name> kind=api_key client_id=… client_secret=… scopes=…
  vault read iris/creds/<name>

Logs: $work_dir/vault.log, $work_dir/emulator.log
Press Ctrl-C to stop Vault and the emulator.
EOF

# Returns when either process exits; Ctrl-C runs the EXIT trap instead.
wait -n "$vault_pid" "$emulator_pid" || true
echo "dev.sh: Vault or the IRIS emulator exited unexpectedly" >&2
exit 1
