#!/usr/bin/env bash
# The quickstart: deploy a good release, then a broken one that stagegate rolls back.
# Run from anywhere: bash examples/quickstart/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p stagegate-cli -p quickstart-demo
sg() { ./target/debug/stagegate -f examples/quickstart/stagegate.yml "$@"; }

echo "### 1. deploy the good release 1.0.0"
sg deploy staging --release-version 1.0.0

echo
echo "### 2. deploy 1.1.0, whose health check fails: stagegate rolls back to 1.0.0 (exit code 4)"
set +e
sg deploy staging --release-version 1.1.0 --var break=health
code=$?
set -e
if [ "$code" -ne 4 ]; then
  echo "expected exit code 4 (rolled back), got $code" >&2
  exit 1
fi

echo
echo "### 3. what is recorded, and what runs"
sg history staging
sg status staging

echo
echo "### 4. stop the service (the next deploy starts it again)"
sg stop staging
