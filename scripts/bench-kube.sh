#!/usr/bin/env bash
# Deploy and rollback times of the kubernetes driver against the fake Kubernetes API
# (examples/fake-kube: Kubernetes cannot run on this machine), with the fake's rollout
# taking ROLLOUT_MS (0: stagegate's own cost: process start, state store, reading the
# kubeconfig, rendering, server-side apply of 3 objects, the watch, the records).
#
# Each of RUNS rounds deploys a new version (a real rollout: the pod template changes), then
# `stagegate rollback` re-applies the previous release's recorded manifests and waits for
# that rollout. Prints min and median wall time of each, in ms, of the whole `stagegate`
# command. Nothing fails on a figure.
#
# Usage: bash scripts/bench-kube.sh   Settings: RUNS=10 ROLLOUT_MS=0 PROFILE=debug|release
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
ROLLOUT_MS=${ROLLOUT_MS:-0}
PROFILE=${PROFILE:-debug}
flag=(); [ "$PROFILE" = release ] && flag=(--release)
cargo build -q "${flag[@]}" -p stagegate-cli -p fake-kube
bin=${CARGO_TARGET_DIR:-target}/$PROFILE
work=$(mktemp -d)
export STAGEGATE_STATE="$work/state.db" KUBECONFIG="$work/kubeconfig" CI=true
port=${FAKE_KUBE_PORT:-19444}
"$bin/fake-kube" "$port" "$ROLLOUT_MS" "$KUBECONFIG" >"$work/fake.log" 2>&1 &
fake=$!
trap 'kill "$fake" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q '^ready' "$work/fake.log" && break; sleep 0.1; done
sg() { "$bin/stagegate" -f examples/kubernetes/stagegate.yml "$@" >/dev/null 2>&1; }
ms() { local t0 t1; t0=$(date +%s%N); "$@" || { echo "FAILED: $*" >&2; exit 1; }; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
stats() { sort -n | awk '{a[NR]=$1} END {printf "min %d ms, median %d ms (%d runs)\n", a[1], a[int((NR+1)/2)], NR}'; }

sg deploy staging --release-version 0.0.1
deploys=() rollbacks=()
for i in $(seq "$RUNS"); do
  deploys+=("$(ms sg deploy staging --release-version "1.0.$i")")
  rollbacks+=("$(ms sg rollback staging)")
done
echo "fake rollout ${ROLLOUT_MS} ms, $PROFILE build, $(nproc) cores"
printf 'deploy:   '; printf '%s\n' "${deploys[@]}" | stats
printf 'rollback: '; printf '%s\n' "${rollbacks[@]}" | stats
