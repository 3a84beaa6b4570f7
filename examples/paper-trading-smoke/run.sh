#!/usr/bin/env bash
# Seed 003's smoke tests as a plan: deploy three staging-demo services and smoke-test them,
# then deploy a gateway that is not in dry-run: the paper-mode check fails and the release is
# rolled back. Run from anywhere: bash examples/paper-trading-smoke/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build staging-demo
# Paper-trading keys: dummies here; a real staging takes them from its secret store.
export ALPACA_PAPER_API_KEY="${ALPACA_PAPER_API_KEY:-PK-paper-demo}"
export ALPACA_PAPER_API_SECRET="${ALPACA_PAPER_API_SECRET:-paper-demo-secret}"
sg_plan examples/paper-trading-smoke/stagegate.yml
stop_on_exit staging

echo "### 1. deploy 2.4.0 and run the smoke tests"
sg deploy staging --release-version 2.4.0

echo
echo "### 2. deploy 2.4.1 with DRY_RUN=false: the smoke tests catch it, 2.4.0 stays (exit code 4)"
expect_code 4 sg deploy staging --release-version 2.4.1 --var dry_run=false

echo
echo "### 3. what was verified"
id=$(last_id staging)
sg show "$id"
sg stop staging
