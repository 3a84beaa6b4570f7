#!/usr/bin/env bash
# Seed 003's smoke tests as a plan: deploy three staging-demo services and smoke-test them,
# then deploy a gateway that is not in dry-run: the paper-mode check fails and the release is
# rolled back. Run from anywhere: bash examples/paper-trading-smoke/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p stagegate-cli -p staging-demo
# Paper-trading keys: dummies here; a real staging takes them from its secret store.
export ALPACA_PAPER_API_KEY="${ALPACA_PAPER_API_KEY:-PK-paper-demo}"
export ALPACA_PAPER_API_SECRET="${ALPACA_PAPER_API_SECRET:-paper-demo-secret}"
sg() { ./target/debug/stagegate -f examples/paper-trading-smoke/stagegate.yml "$@"; }

echo "### 1. deploy 2.4.0 and run the smoke tests"
sg deploy staging --release-version 2.4.0

echo
echo "### 2. deploy 2.4.1 with DRY_RUN=false: the smoke tests catch it, 2.4.0 stays (exit code 4)"
set +e
sg deploy staging --release-version 2.4.1 --var dry_run=false
code=$?
set -e
if [ "$code" -ne 4 ]; then
  echo "expected exit code 4 (rolled back), got $code" >&2
  exit 1
fi

echo
echo "### 3. what was verified"
sg show "$(sg history staging --json | sed -n 's/^ *"id": \([0-9]*\),.*/\1/p' | head -1)"
sg stop staging
