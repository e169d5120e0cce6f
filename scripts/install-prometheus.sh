#!/bin/sh
# Installs Debian's prometheus package (prometheus and promtool) when either
# is missing, for the monitoring tests of make test. Without systemd (CI
# containers) the package starts no server; the tests start their own.
set -eu
if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
	exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "prometheus and promtool are needed for make test; install them (Debian: apt-get install prometheus)" >&2
	exit 1
fi
SUDO=
if [ "$(id -u)" -ne 0 ]; then
	SUDO=sudo
fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends prometheus
