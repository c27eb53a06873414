#!/usr/bin/env bash
# Install the Debian packages the tests and the demo need, only when some are missing.
# Go is not installed here: Debian's is older than the Kubernetes modules accept (see README).
set -euo pipefail

# buildah, podman, runc, mmdebstrap: `make images` and the node agent's container runtime (no Docker engine).
packages=(ca-certificates iproute2 procps util-linux git redis-server redis-tools buildah podman runc mmdebstrap uidmap)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "==> installing Debian packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "error: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
