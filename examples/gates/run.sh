#!/usr/bin/env bash
# The gate examples, each with a passing and a blocked case; fails when an exit code is not
# the expected one. Run from anywhere: bash examples/gates/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build -q -p stagegate-cli
SG="$PWD/target/debug/stagegate"
# A clean environment, so the machine's own variables (an AWS key, DRY_RUN) play no part.
sg() { env -i PATH="$PATH" HOME="${HOME:-/tmp}" CI=true STAGEGATE_ACTOR=ci "$@"; }
expect() {
  local want=$1; shift
  set +e
  "$@"
  local got=$?
  set -e
  if [ "$got" -ne "$want" ]; then
    echo "FAILED: expected exit code $want, got $got: $*" >&2
    exit 1
  fi
  echo "(exit code $got, as expected)"
  echo
}

echo "### credentials (seed 003): paper keys present, DRY_RUN on: passes"
PAPER=(ALPACA_PAPER_API_KEY=PKTEST1234567890ABCD ALPACA_PAPER_API_SECRET=paper-secret
       STAGING_DB_PASSWORD=staging-db-pw DRY_RUN=true ENVIRONMENT=staging)
expect 0 sg "${PAPER[@]}" "$SG" -f examples/gates/credentials/stagegate.yml check staging
echo "### credentials: a live key in staging: blocked before the deploy (exit 3)"
expect 3 sg "${PAPER[@]}" ALPACA_LIVE_API_KEY=AKLIVE1234567890ABCD \
  "$SG" -f examples/gates/credentials/stagegate.yml deploy staging

echo "### config (seed 002): staging configuration points at staging: passes"
expect 0 sg "$SG" -f examples/gates/config/stagegate.yml check staging
echo "### config: localhost URLs, plain http and DEBUG=true: blocked, each finding at file:line"
expect 3 sg "$SG" -f examples/gates/config/stagegate.yml check staging --var config=config.broken

echo "### checklists (seed 000): every item acknowledged: deploys"
expect 0 sg "$SG" -f examples/gates/checklists/erp-hub.yml deploy staging --ack-all --as alice
echo "### checklists: two items acknowledged, four missing, no terminal: blocked"
expect 3 sg "$SG" -f examples/gates/checklists/erp-hub.yml deploy staging --ack ci-green --ack db-backup
echo "### checklists (seed 001): acknowledged in CI: passes; without acknowledgements: blocked"
expect 0 sg "$SG" -f examples/gates/checklists/dashboard-api.yml check staging --ack-all --as alice
expect 3 sg "$SG" -f examples/gates/checklists/dashboard-api.yml check staging

echo "### windows (seed 004): Tuesday 11:00 London: inside the window"
expect 0 sg "$SG" -f examples/gates/windows/stagegate.yml check production --at 2025-10-07T11:00:00+01:00
echo "### windows: Monday: outside, with the next window"
expect 3 sg "$SG" -f examples/gates/windows/stagegate.yml check production --at 2025-10-06T11:00:00+01:00
echo "### windows: in the year-end freeze, with its reason"
expect 3 sg "$SG" -f examples/gates/windows/stagegate.yml check production --at 2025-12-23T11:00:00Z
echo "### windows: a hotfix on Monday with a recorded justification"
expect 0 sg "$SG" -f examples/gates/windows/stagegate.yml check production --at 2025-10-06T11:00:00+01:00 \
  --override "hotfix for INC-4711, approved by the tech lead"
echo "### windows: staging has no window"
expect 0 sg "$SG" -f examples/gates/windows/stagegate.yml check staging --at 2025-10-06T11:00:00+01:00
sg "$SG" -f examples/gates/windows/stagegate.yml history -n 3
