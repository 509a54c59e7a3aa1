#!/bin/sh
# Builds the docker sandbox image (agentgym-sandbox:latest) with no registry: Debian's own packages
# make a minimal root file system with python3 (debootstrap), docker imports it as a base image, and
# sandboxes/Dockerfile adds the sandbox user on top, exactly as it does on python:3.11-slim.
#
#   sudo sh sandboxes/build-offline-image.sh        (or: agentgym sandbox build-image --offline)
#
# Needs root, `debootstrap` and a running Docker engine; reaches only the Debian mirror. Idempotent:
# the base image (agentgym-sandbox-base:SUITE) is made once and reused; `docker rmi` it to remake it.
# Settings (environment): AGENTGYM_SANDBOX_IMAGE (default agentgym-sandbox:latest),
# AGENTGYM_SANDBOX_SUITE (default bookworm), AGENTGYM_SANDBOX_MIRROR (default http://deb.debian.org/debian).
set -eu

IMAGE=${AGENTGYM_SANDBOX_IMAGE:-agentgym-sandbox:latest}
SUITE=${AGENTGYM_SANDBOX_SUITE:-bookworm}
MIRROR=${AGENTGYM_SANDBOX_MIRROR:-http://deb.debian.org/debian}
BASE=agentgym-sandbox-base:$SUITE
HERE=$(cd "$(dirname "$0")" && pwd)

fail() {
  echo "build-offline-image: $*" >&2
  exit 1
}

[ "$(id -u)" = 0 ] || fail "run it as root (debootstrap creates device nodes and files of other users)"
command -v docker >/dev/null || fail "no docker command (Debian: apt-get install docker.io)"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (start dockerd)"

if docker image inspect "$BASE" >/dev/null 2>&1; then
  echo "build-offline-image: reusing the base image $BASE"
else
  command -v debootstrap >/dev/null || fail "no debootstrap (Debian: apt-get install debootstrap)"
  ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/agentgym-rootfs.XXXXXX")
  trap 'rm -rf "$ROOTFS"' EXIT INT TERM
  echo "build-offline-image: debootstrap $SUITE from $MIRROR (a few minutes)"
  debootstrap --variant=minbase --include=python3 "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 \
    || { tail -20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; fail "debootstrap failed"; }
  rm -f "$ROOTFS.log"
  # What a sandbox never reads: package caches and lists, documentation, translations (about half).
  rm -rf "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/locale/* "$ROOTFS"/dev/*
  tar --numeric-owner -C "$ROOTFS" -c . | docker import - "$BASE" >/dev/null
  echo "build-offline-image: imported $BASE"
fi

# No network during the build: the Dockerfile only adds a user (and the engine may have no bridge).
# Its output (and the newer docker CLIs' notice about the legacy builder) is shown only on failure.
output=$(docker build --network none --build-arg "BASE=$BASE" -t "$IMAGE" "$HERE" 2>&1) \
  || { echo "$output" | tail -n 20 >&2; fail "docker build failed"; }
echo "build-offline-image: built $IMAGE on $BASE"
