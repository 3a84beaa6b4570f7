#!/usr/bin/env bash
# Seed 001's Kubernetes deploy against a fake Kubernetes API server (Kubernetes cannot run
# on this machine; examples/fake-kube serves the endpoints stagegate uses, on loopback):
#   1. deploy 3.2.0: server-side apply, then a watch until the rollout is done (exit 0);
#   2. deploy 3.3.0-bad, whose rollout exceeds its progress deadline: stagegate re-applies
#      3.2.0's recorded manifests and waits for that rollout (exit 4);
#   3. deploy 3.3.0, then `stagegate rollback staging` returns to 3.2.0 (exit 0);
#   4. stop scales the Deployment to zero.
# Takes a few seconds. Run from anywhere: bash examples/kubernetes/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build fake-kube

work=$(mktemp -d)
# A fresh state store (and release records) beside the fresh fake cluster.
export STAGEGATE_STATE="$work/state.db"
export KUBECONFIG="$work/kubeconfig"
export JWT_SECRET="${JWT_SECRET:-example-jwt-secret}"
port=${FAKE_KUBE_PORT:-19443}
"$SG_TARGET/debug/fake-kube" "$port" 400 "$KUBECONFIG" >"$work/fake-kube.log" 2>&1 &
fake_pid=$!
trap 'code=$?; kill "$fake_pid" 2>/dev/null || true; rm -rf "$work"; exit $code' EXIT
for _ in $(seq 100); do
  grep -q '^ready' "$work/fake-kube.log" 2>/dev/null && break
  kill -0 "$fake_pid" 2>/dev/null || { cat "$work/fake-kube.log" >&2; exit 1; }
  sleep 0.1
done
grep -q '^ready' "$work/fake-kube.log" || { echo "the fake Kubernetes API did not start" >&2; exit 1; }
sg_plan examples/kubernetes/stagegate.yml

current() { sg status staging --json | grep -Eo '"current": *"[^"]*"' | head -n 1 | grep -Eo '[^"]+"$' | tr -d '"'; }
expect_current() {
  local got
  got=$(current)
  if [ "$got" != "$1" ]; then
    echo "FAILED: expected release $1 to be current, got ${got:-none}" >&2
    exit 1
  fi
}

echo "### 1. deploy 3.2.0: apply k8s/staging/, wait for deployment/architect-api"
sg deploy staging --release-version 3.2.0
expect_current 3.2.0-d1

echo
echo "### 2. deploy 3.3.0-bad: progress deadline exceeded, 3.2.0 re-applied (exit code 4)"
expect_code 4 sg deploy staging --release-version 3.3.0-bad
expect_current 3.2.0-d1

echo
echo "### 3. deploy 3.3.0, then roll back by hand to 3.2.0"
sg deploy staging --release-version 3.3.0
expect_current 3.3.0-d3
sg rollback staging
expect_current 3.2.0-d1

echo
echo "### 4. what is recorded, and what runs"
sg history staging
sg status staging
if grep -rq "$JWT_SECRET" "$work" --exclude=fake-kube.log; then
  echo "FAILED: the secret is in stagegate's records" >&2
  exit 1
fi

echo
echo "### 5. stop: the Deployment is scaled to zero"
sg stop staging
