#!/bin/sh
# CI: a Docker engine and the sandbox image for agentgym's docker backend, so that its tests (the attack
# tests included) run instead of skipping. For a clean Debian machine, run as root, without systemd:
#
#   sh sandboxes/ci-docker.sh
#
# 1. apt-get installs docker.io and debootstrap if missing;
# 2. starts dockerd in the background if no engine answers (log: $AGENTGYM_DOCKERD_LOG, default
#    /var/log/agentgym-dockerd.log) and waits until `docker info` answers (at most
#    $AGENTGYM_DOCKERD_WAIT seconds, default 60); if it will not start with its default networking
#    (no iptables here, say), it tries once more without a bridge: the sandbox needs no network;
# 3. builds agentgym-sandbox:latest with no registry (build-offline-image.sh) if the image is missing.
#
# Idempotent, and it never fails the CI run: if any step fails it says why and exits 0, and the docker
# tests skip with the reason. Takes a few minutes the first time (debootstrap), seconds afterwards.

LOG=${AGENTGYM_DOCKERD_LOG:-/var/log/agentgym-dockerd.log}
WAIT=${AGENTGYM_DOCKERD_WAIT:-60}
IMAGE=${AGENTGYM_SANDBOX_IMAGE:-agentgym-sandbox:latest}
HERE=$(cd "$(dirname "$0")" && pwd)

say() {
  echo "ci-docker: $*"
}

# Start dockerd with the given options; 0 once `docker info` answers, 1 if it exits or never answers.
start_dockerd() {
  say "starting dockerd${*:+ $*} (log: $LOG)"
  nohup dockerd "$@" </dev/null >>"$LOG" 2>&1 &
  pid=$!
  waited=0
  while [ "$waited" -lt "$WAIT" ]; do
    if docker info >/dev/null 2>&1; then
      say "dockerd answers (pid $pid, after ${waited}s)"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      say "dockerd exited; the end of its log:"
      tail -n 5 "$LOG" | sed 's/^/    /'
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "dockerd did not answer within ${WAIT}s; stopping it. The end of its log:"
  tail -n 5 "$LOG" | sed 's/^/    /'
  kill "$pid" 2>/dev/null
  # Let it go (and release its pid file) before another try.
  waited=0
  while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 20 ]; do
    sleep 0.5
    waited=$((waited + 1))
  done
  return 1
}

setup() {
  if [ "$(id -u)" != 0 ]; then
    say "not root: cannot install or start a Docker engine"
    return 1
  fi
  missing=""
  command -v dockerd >/dev/null || missing=" docker.io"
  command -v debootstrap >/dev/null || missing="$missing debootstrap"
  if [ -n "$missing" ]; then
    say "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    if ! output=$({ apt-get update -q && apt-get install -y -q --no-install-recommends $missing; } 2>&1); then
      echo "$output" | tail -n 10 | sed 's/^/    /'
      say "apt-get install$missing failed"
      return 1
    fi
  fi
  command -v docker >/dev/null || { say "no docker command after installing docker.io"; return 1; }

  if docker info >/dev/null 2>&1; then
    say "a Docker engine answers already"
  else
    mkdir -p "$(dirname "$LOG")"
    start_dockerd || start_dockerd --iptables=false --bridge=none || return 1
  fi

  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "image $IMAGE present"
  else
    AGENTGYM_SANDBOX_IMAGE=$IMAGE sh "$HERE/build-offline-image.sh" || return 1
  fi
  say "the docker sandbox backend is ready"
}

setup || say "the docker sandbox backend is not available; its tests will skip"
exit 0
