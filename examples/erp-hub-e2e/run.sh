#!/usr/bin/env bash
# Seed 000's E2E validation as a plan: deploy the staging-demo service and verify it, then
# deploy a build whose downloads lose a byte: the sha256 check fails and the release is rolled
# back. Run from anywhere: bash examples/erp-hub-e2e/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p stagegate-cli -p staging-demo
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
# The secrets the plan requires; a real staging would take them from its secret store.
export ADMIN_PASSWORD="${ADMIN_PASSWORD:-$(random_hex 16)}"
export JWT_SECRET="${JWT_SECRET:-$(random_hex 32)}"
export BLOB_KEY="${BLOB_KEY:-$(random_hex 32)}"
sg() { ./target/debug/stagegate -f examples/erp-hub-e2e/stagegate.yml "$@"; }

echo "### 1. deploy 1.3.0 and run the E2E validation"
sg deploy staging --release-version 1.3.0 --report markdown=examples/erp-hub-e2e/build/summary.md

echo
echo "### 2. deploy 1.3.1, whose downloads lose a byte: the hash check fails, 1.3.0 stays (exit code 4)"
set +e
sg deploy staging --release-version 1.3.1 --var fault=corrupt-byte
code=$?
set -e
if [ "$code" -ne 4 ]; then
  echo "expected exit code 4 (rolled back), got $code" >&2
  exit 1
fi

echo
echo "### 3. what was verified"
sg history staging
sg stop staging
