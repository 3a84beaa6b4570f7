#!/usr/bin/env bash
# The gate examples, each with a passing and a blocked case; fails when an exit code is not
# the expected one. Run from anywhere: bash examples/gates/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build
# A clean environment, so the machine's own variables (an AWS key, DRY_RUN) play no part.
sg_clean_env
expect() {
  expect_code "$@"
  echo "(exit code $1, as expected)"
  echo
}

echo "### credentials (seed 003): paper keys present, DRY_RUN on: passes"
sg_plan examples/gates/credentials/stagegate.yml
PAPER=(ALPACA_PAPER_API_KEY=PKTEST1234567890ABCD ALPACA_PAPER_API_SECRET=paper-secret
       STAGING_DB_PASSWORD=staging-db-pw DRY_RUN=true ENVIRONMENT=staging)
expect 0 sg "${PAPER[@]}" check staging
echo "### credentials: a live key in staging: blocked before the deploy (exit 3)"
expect 3 sg "${PAPER[@]}" ALPACA_LIVE_API_KEY=AKLIVE1234567890ABCD deploy staging

echo "### config (seed 002): staging configuration points at staging: passes"
sg_plan examples/gates/config/stagegate.yml
expect 0 sg check staging
echo "### config: localhost URLs, plain http and DEBUG=true: blocked, each finding at file:line"
expect 3 sg check staging --var config=config.broken

echo "### checklists (seed 000): every item acknowledged: deploys"
sg_plan examples/gates/checklists/erp-hub.yml
expect 0 sg deploy staging --ack-all --as alice
echo "### checklists: two items acknowledged, four missing, no terminal: blocked"
expect 3 sg deploy staging --ack ci-green --ack db-backup
echo "### checklists (seed 001): acknowledged in CI: passes; without acknowledgements: blocked"
sg_plan examples/gates/checklists/dashboard-api.yml
expect 0 sg check staging --ack-all --as alice
expect 3 sg check staging

echo "### windows (seed 004): Tuesday 11:00 London: inside the window"
sg_plan examples/gates/windows/stagegate.yml
expect 0 sg check production --at 2025-10-07T11:00:00+01:00
echo "### windows: Monday: outside, with the next window"
expect 3 sg check production --at 2025-10-06T11:00:00+01:00
echo "### windows: in the year-end freeze, with its reason"
expect 3 sg check production --at 2025-12-23T11:00:00Z
echo "### windows: a hotfix on Monday with a recorded justification"
expect 0 sg check production --at 2025-10-06T11:00:00+01:00 \
  --override "hotfix for INC-4711, approved by the tech lead"
echo "### windows: staging has no window"
expect 0 sg check staging --at 2025-10-06T11:00:00+01:00
sg history -n 3
