#!/usr/bin/env bash
# Seed 000's E2E validation as a plan: deploy the staging-demo service and verify it, then
# deploy a build whose downloads lose a byte: the sha256 check fails and the release is rolled
# back. Run from anywhere: bash examples/erp-hub-e2e/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build staging-demo
random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
# The secrets the plan requires; a real staging would take them from its secret store.
export ADMIN_PASSWORD="${ADMIN_PASSWORD:-$(random_hex 16)}"
export JWT_SECRET="${JWT_SECRET:-$(random_hex 32)}"
export BLOB_KEY="${BLOB_KEY:-$(random_hex 32)}"
sg_plan examples/erp-hub-e2e/stagegate.yml
stop_on_exit staging

echo "### 1. deploy 1.3.0 and run the E2E validation"
sg deploy staging --release-version 1.3.0 --report markdown=examples/erp-hub-e2e/build/summary.md

echo
echo "### 2. deploy 1.3.1, whose downloads lose a byte: the hash check fails, 1.3.0 stays (exit code 4)"
expect_code 4 sg deploy staging --release-version 1.3.1 --var fault=corrupt-byte

echo
echo "### 3. what was verified"
sg history staging
sg stop staging
