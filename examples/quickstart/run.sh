#!/usr/bin/env bash
# The quickstart: deploy a good release, then a broken one that stagegate rolls back.
# Run from anywhere: bash examples/quickstart/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build quickstart-demo
sg_plan examples/quickstart/stagegate.yml
stop_on_exit staging

echo "### 1. deploy the good release 1.0.0"
sg deploy staging --release-version 1.0.0

echo
echo "### 2. deploy 1.1.0, whose health check fails: stagegate rolls back to 1.0.0 (exit code 4)"
expect_code 4 sg deploy staging --release-version 1.1.0 --var break=health

echo
echo "### 3. what is recorded, and what runs"
sg history staging
sg status staging

echo
echo "### 4. stop the service (the next deploy starts it again)"
sg stop staging
