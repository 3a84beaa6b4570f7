#!/usr/bin/env bash
# Promotion with approvals, soak and bypass (docs/promotion.md), on three seed runbooks' rules:
#   trading     seed 003: 2 reviewers from distinct roles, a wait timer, a soak in staging, no bypass
#   marketedge  seed 004: release tags only, a stakeholder's approval, a tech lead's hotfix bypass
#   dashboard   seed 001: four sign-offs (engineering, devops, security, product) before it runs
# Run from anywhere: bash examples/promotion/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build quickstart-demo
sg_clean_env   # `sg` runs as STAGEGATE_ACTOR=ci unless a call says otherwise

digests() { # the artifact sha256 of deployment $1's deploy step
  sg show "$1" --json | grep -Eo '"sha256": *"[0-9a-f]{64}"' | sort -u
}

for p in trading marketedge dashboard; do
  rm -rf "examples/promotion/$p/.stagegate"
done

echo "### seed 003 (examples/promotion/trading)"
sg_plan examples/promotion/trading/stagegate.yml
stop_on_exit staging
stop_on_exit production

echo "## 1. 1.4.0 deploys to staging"
sg deploy staging --release-version 1.4.0
staging_id=$(last_id staging)

echo
echo "## 2. promote at once: refused for the soak (and the wait timer, and approvals): exit 8"
expect_code 8 sg promote staging production

echo
echo "## 3. after the soak: still refused, for the missing approvals (exit 8)"
sleep 3
expect_code 8 sg promote staging production

echo
echo "## 4. the requester cannot approve (exit 9), nor can alice approve as a role she is not in"
expect_code 9 sg approve production --role security
expect_code 9 sg STAGEGATE_ACTOR=alice approve production --role devops

echo
echo "## 5. alice (security) and bob (devops) approve; carol as a second security approval would not count"
sg STAGEGATE_ACTOR=alice approve production --role security --comment "pen test findings closed"
sg STAGEGATE_ACTOR=bob approve production --comment "alerts and on-call in place"
sg status production

echo
echo "## 6. promote: production gets the very artifact that passed staging"
sg promote staging production --report markdown=target/promotion-report.md
prod_id=$(last_id production)
if [ "$(digests "$staging_id")" != "$(digests "$prod_id")" ]; then
  echo "FAILED: production's artifact differs from staging's" >&2
  exit 1
fi
echo "same artifact in staging #$staging_id and production #$prod_id: $(digests "$prod_id")"
grep -A6 '### Authorization' target/promotion-report.md

echo
echo "## 7. administrators cannot bypass either: the plan has no bypass rule (exit 9)"
expect_code 9 sg deploy production --release-version 1.4.1 --bypass "admin override"

echo
echo "## 8. 1.4.1 passes staging; an approval is given; then the plan changes: the approval is void"
sg deploy staging --release-version 1.4.1
sleep 3
expect_code 8 sg promote staging production
sg STAGEGATE_ACTOR=alice approve production --role security
# The changed plan, beside the first so that it shares its state store:
changed=examples/promotion/trading/stagegate-changed.yml
{ cat examples/promotion/trading/stagegate.yml; echo "# a reviewed change"; } > "$changed"
sg_plan "$changed"
expect_code 9 sg STAGEGATE_ACTOR=bob approve production
expect_code 8 sg promote staging production   # the old request is voided; a new one waits
sg history production
rm -f "$changed"

echo
echo "### seed 004 (examples/promotion/marketedge)"
sg_plan examples/promotion/marketedge/stagegate.yml
stop_on_exit staging
stop_on_exit production

echo "## 1. a version that is not a release tag cannot reach production (exit 9)"
sg deploy staging --release-version 2.0.0-rc1
expect_code 9 sg promote staging production

echo
echo "## 2. v2.0.0: staging, a stakeholder's approval, then production"
sg deploy staging --release-version v2.0.0
expect_code 8 sg promote staging production
sg STAGEGATE_ACTOR=erin approve production --comment "demoed to the client"
sg promote staging production

echo
echo "## 3. a hotfix bypasses staging: only a tech lead, only with a reason; recorded"
expect_code 9 sg deploy production --release-version v2.0.1 --bypass "hotfix"
expect_code 2 sg STAGEGATE_ACTOR=dana deploy production --release-version v2.0.1 --bypass " "
expect_code 8 sg STAGEGATE_ACTOR=dana deploy production --release-version v2.0.1 --bypass "INC-4312: logins fail; fix is one line"
sg STAGEGATE_ACTOR=erin approve production --comment "ok for the hotfix"
sg STAGEGATE_ACTOR=dana deploy production --release-version v2.0.1 --bypass "INC-4312: logins fail; fix is one line"
sg audit show | grep -E 'bypass|approval|promotion'
sg audit verify

echo
echo "### seed 001 (examples/promotion/dashboard)"
sg_plan examples/promotion/dashboard/stagegate.yml
stop_on_exit staging
echo "## four sign-offs, one per role, before the deploy runs"
expect_code 8 sg deploy staging --release-version 3.2.0
sg STAGEGATE_ACTOR=eng-lead approve staging --role engineering --comment "code review and tests"
expect_code 9 sg STAGEGATE_ACTOR=eng-lead approve staging --role product   # one person, one approval
sg STAGEGATE_ACTOR=ops-lead approve staging --comment "infrastructure and monitoring"
sg STAGEGATE_ACTOR=sec-lead approve staging --comment "security validation"
expect_code 8 sg deploy staging --release-version 3.2.0
sg STAGEGATE_ACTOR=product-lead approve staging --comment "feature ready"
sg deploy staging --release-version 3.2.0
sg history staging
