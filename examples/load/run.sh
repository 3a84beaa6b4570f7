#!/usr/bin/env bash
# The load tests of seeds 000, 001 and 002 as load steps against the staging demo: a good
# release passes every SLO; a slow one fails seed 001's latency SLO and a leaking one fails
# seed 002's isolation rule, and both are rolled back to the good release.
# Run from anywhere: bash examples/load/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build staging-demo
# The admin password of the blob API: a dummy here; a real staging takes it from its secret store.
export DEMO_ADMIN_PASSWORD="${DEMO_ADMIN_PASSWORD:-load-demo-admin}"
sg_plan examples/load/stagegate.yml
stop_on_exit staging

echo "### 1. deploy 1.0.0: every load test passes its SLOs"
sg deploy staging --release-version 1.0.0

echo
echo "### 2. deploy 1.1.0, whose /api routes take 300 ms: seed 001's SLOs fail, 1.0.0 stays (exit code 4)"
expect_code 4 sg deploy staging --release-version 1.1.0 --var fault=slow

echo
echo "### 3. deploy 1.2.0, which leaks one user's threads to another: seed 002's isolation rule fails (exit code 4)"
expect_code 4 sg deploy staging --release-version 1.2.0 --var fault=leak-threads

echo
echo "### 4. what the last run measured"
id=$(last_id staging)
sg show "$id"
sg status staging
sg stop staging
