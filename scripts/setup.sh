#!/usr/bin/env bash
# Install everything churnwatch needs on a fresh Debian (12) machine.
# Idempotent and quick when everything is already there. Needs root (or sudo).
set -euo pipefail

PACKAGES=(build-essential cmake pkg-config clang clang-format
          librdkafka-dev libhiredis-dev libyajl-dev libcriterion-dev libmicrohttpd-dev
          redis-server redis-tools kcat jq curl python3 python3-yaml
          chromium fonts-dejavu-core libclang-rt-14-dev)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# redis-server is started by the tests and the demo themselves, never as a system service.
