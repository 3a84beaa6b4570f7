//! Promotion, approvals, soak, wait timers, tags and bypass (docs/promotion.md), through the
//! real binary: the demo service deploys with the local driver into staging and production
//! on loopback, and everything is read back from the real SQLite store.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A plan whose production takes promotions from staging under `rules` (YAML under
/// `production:`, indented 4). The build stamps `$STAMP` into a second artifact, so a test can
/// make the production build differ from staging's.
fn plan(rules: &str) -> String {
    format!(
        r#"project: shop
roles:
  security: [alice]
  devops: [bob]
  product: [carol, alice]
  tech-lead: [dana]
secrets:
  optional: [SHOP_TOKEN]
environments:
  staging: {{}}
  production:
{rules}
services:
  web:
    build: mkdir -p build && cp demo build/demo && printf '%s' "${{STAMP:-one}}" > build/stamp
    artifacts: [build/demo, build/stamp]
    start: ./build/demo
    env:
      DEMO_VERSION: "${{{{ release.version }}}}"
    health:
      path: /health
      interval: 50ms
      timeout: 5s
stages:
  deploy:
    - deploy: web
"#
    )
}

const TWO_ROLES: &str = "    promote_from: staging
    soak: 2s
    approvals: { required: 2, from: [security, devops, product], distinct_roles: true }";

fn deploy_staging(p: &Project, version: &str) {
    p.run(&["deploy", "staging", "--release-version", version])
        .code(0);
}

fn as_(p: &Project, who: &str, args: &[&str]) -> Out {
    p.run_env(args, &[("STAGEGATE_ACTOR", who)])
}

/// The sha256 of every artifact of deployment `id`'s deploy step, sorted.
fn artifact_digests(p: &Project, id: &str) -> Vec<String> {
    let show = show_json(p, id);
    let mut out: Vec<String> = show["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "deploy" && s["phase"] == "run")
        .flat_map(|s| {
            s["details"]["artifacts"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|a| {
            format!(
                "{} {}",
                a["path"].as_str().unwrap(),
                a["sha256"].as_str().unwrap()
            )
        })
        .collect();
    out.sort();
    out
}

fn history(p: &Project, env: &str) -> Vec<serde_json::Value> {
    let out = p.run(&["history", env, "--json"]).code(0).stdout.clone();
    serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
}

fn stop_all(p: &Project) {
    let _ = p.run(&["stop", "staging"]);
    let _ = p.run(&["stop", "production"]);
}

#[test]
fn bad_protection_rules_name_the_line_and_what_to_do() {
    let p = Project::new(
        "project: shop
roles:
  security: [alice]
  empty: []
environments:
  staging:
    soak: 2h
    approvals: { required: 2, from: [security], distinct_roles: true }
  production:
    promote_from: stagin
    approvals: { required: 0, from: [security], distinct_roles: true }
    tags: \"[v\"
  qa:
    promote_from: qa
    bypass: { by: [] }
    wait_timer: soon
stages:
  s: [ { run: echo } ]
",
    );
    let out = p.run(&["validate"]);
    out.code(2)
        .stderr_has("stagegate.yml:4")
        .stderr_has("role `empty` has no members")
        .stderr_has("stagegate.yml:7")
        .stderr_has("`soak` in environment `staging` needs `promote_from`")
        .stderr_has("stagegate.yml:10")
        .stderr_has("names unknown environment `stagin`")
        .stderr_has("did you mean `staging`?")
        .stderr_has("`required` in `approvals` in environment `production` is 0")
        .stderr_has("needs 2 approvals from distinct roles, but `from` has 1 role")
        .stderr_has("`tags` in environment `production`")
        .stderr_has("environment `qa` promotes from itself")
        .lacks("cycle")
        .stderr_has("`bypass` in environment `qa` names nobody")
        .stderr_has("`wait_timer` in environment `qa`");
}

#[test]
fn a_promotion_waits_for_its_soak_and_two_distinct_roles_then_deploys_the_same_artifact() {
    let p = Project::with_demo(&plan(TWO_ROLES));
    deploy_staging(&p, "1.4.0");
    let staging_id = history(&p, "staging")[0]["id"].to_string();

    // At once: the soak is not over, nobody has approved. Nothing runs in production.
    let out = p.run(&["promote", "staging", "production"]);
    out.code(8)
        .stderr_has("request #2 to deploy 1.4.0 to `production` is awaiting approval; nothing ran")
        .stderr_has("soak: the artifact has run in `staging` for")
        .stderr_has("approvals: 0 of 2");
    let req = &history(&p, "production")[0];
    assert_eq!(req["kind"], "request");
    assert_eq!(req["outcome"], "awaiting_approval");
    let status = p.run(&["status", "production"]).code(0).stdout.clone();
    assert!(
        status.contains("request #2: 1.4.0 from `staging` by tester, awaiting approval"),
        "{status}"
    );
    assert!(status.contains("approvals: 0 of 2"), "{status}");
    assert!(status.contains("not deployed"), "{status}");

    // The requester cannot approve; nor can someone outside the role they name.
    p.run(&["approve", "production", "--role", "security"])
        .code(9)
        .stderr_has("tester asked for request #2 and cannot approve it");
    as_(&p, "bob", &["approve", "production", "--role", "security"])
        .code(9)
        .stderr_has("bob is not a member of role `security`");
    as_(&p, "mallory", &["approve", "production"])
        .code(9)
        .stderr_has("mallory may not approve deploys to `production`");
    // alice is in two roles: she must say which.
    as_(&p, "alice", &["approve", "production"])
        .code(2)
        .stderr_has("more than one approving role (security, product)");
    as_(
        &p,
        "alice",
        &[
            "approve",
            "production",
            "--role",
            "security",
            "--comment",
            "pen test closed",
        ],
    )
    .code(0)
    .stdout_has("(1 of 2)")
    .stdout_has("needs 1 more from devops, product");
    // One person, one approval; carol's product approval would count, a second security not.
    as_(&p, "alice", &["approve", "production", "--role", "product"])
        .code(9)
        .stderr_has("one person gives one approval");

    std::thread::sleep(Duration::from_millis(2100));
    p.run(&["promote", "staging", "production"])
        .code(8)
        .stderr_has("approvals: 1 of 2 (so far: alice as security)")
        .lacks("soak:");
    as_(&p, "bob", &["approve", "production"])
        .code(0)
        .stdout_has("by bob as devops (2 of 2)")
        .stdout_has("every condition holds");

    let report = p.path().join("report.json");
    let out = p.run(&[
        "promote",
        "staging",
        "production",
        "--report",
        &format!("json={}", report.display()),
    ]);
    out.code(0)
        .stderr_has("authorized: promotion from staging (deployment #1)")
        .stderr_has("approved by alice (security), bob (devops)");
    let prod = &history(&p, "production");
    assert_eq!(prod[0]["kind"], "deploy");
    assert_eq!(prod[0]["outcome"], "succeeded");
    assert_eq!(prod[0]["release_version"], "1.4.0");
    assert_eq!(prod[1]["outcome"], "approved");
    let prod_id = prod[0]["id"].to_string();
    let staged = artifact_digests(&p, &staging_id);
    assert_eq!(staged.len(), 2, "{staged:?}");
    assert_eq!(staged, artifact_digests(&p, &prod_id));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let auth = &json["authorized"];
    assert_eq!(auth["from"], "staging");
    assert_eq!(auth["request"], 2);
    assert_eq!(auth["approvals"][0]["actor"], "alice");
    assert_eq!(auth["approvals"][0]["comment"], "pen test closed");
    assert_eq!(auth["approvals"][1]["role"], "devops");

    let audit = p.run(&["audit", "show"]).code(0).stdout.clone();
    assert_eq!(audit.matches(" approval ").count(), 2, "{audit}");
    assert!(audit.contains(" promotion "), "{audit}");
    p.run(&["audit", "verify"])
        .code(0)
        .stdout_has("2 approvals");
    // The request is closed: nothing is left to approve.
    as_(&p, "carol", &["approve", "production"])
        .code(2)
        .stderr_has("nothing in `production` awaits approval");
    stop_all(&p);
}

#[test]
fn a_changed_plan_voids_the_approvals_given_under_the_old_one() {
    let rules = "    promote_from: staging
    approvals: { required: 2, from: [security, devops] }";
    let p = Project::with_demo(&plan(rules));
    deploy_staging(&p, "2.0.0");
    p.run(&["promote", "staging", "production"]).code(8);
    as_(&p, "alice", &["approve", "production"]).code(0);

    let text = p.read("stagegate.yml") + "# a reviewed change\n";
    p.write("stagegate.yml", &text);
    as_(&p, "bob", &["approve", "production"])
        .code(9)
        .stderr_has("the plan changed since request #2 was made");
    p.run(&["promote", "staging", "production"])
        .code(8)
        .stderr_has("request #2 voided: the plan changed")
        .stderr_has("approvals: 0 of 2");
    let prod = history(&p, "production");
    assert_eq!(prod[0]["outcome"], "awaiting_approval");
    assert_eq!(prod[1]["outcome"], "voided");
    as_(&p, "bob", &["approve", "production"])
        .code(0)
        .stdout_has("(1 of 2)");
    as_(&p, "alice", &["approve", "production"])
        .code(0)
        .stdout_has("(2 of 2)");
    p.run(&["promote", "staging", "production"]).code(0);
    stop_all(&p);
}

/// An approval binds to the artifact too: once a newer release has passed staging, the open
/// request for the older one is voided when promoted, and the newer one asks afresh.
#[test]
fn a_newer_artifact_in_staging_voids_the_open_request() {
    let rules = "    promote_from: staging
    approvals: { required: 2, from: [security, devops] }";
    let p = Project::with_demo(&plan(rules));
    deploy_staging(&p, "2.0.0");
    p.run(&["promote", "staging", "production"]).code(8);
    as_(&p, "alice", &["approve", "production"])
        .code(0)
        .stdout_has("(1 of 2)");

    deploy_staging(&p, "2.0.1");
    p.run(&["promote", "staging", "production"])
        .code(8)
        .stderr_has("request #2 voided: a different artifact")
        .stderr_has("promotion of 2.0.1")
        .stderr_has("approvals: 0 of 2");
    let prod = history(&p, "production");
    assert_eq!(prod[0]["release_version"], "2.0.1");
    assert_eq!(prod[0]["outcome"], "awaiting_approval");
    assert_eq!(prod[1]["release_version"], "2.0.0");
    assert_eq!(prod[1]["outcome"], "voided");
    // Alice's approval of 2.0.0 does not count for 2.0.1: she approves again.
    as_(&p, "bob", &["approve", "production"])
        .code(0)
        .stdout_has("(1 of 2)");
    stop_all(&p);
}

#[test]
fn a_build_that_differs_from_what_passed_staging_is_refused_before_it_starts() {
    let p = Project::with_demo(&plan("    promote_from: staging"));
    deploy_staging(&p, "3.0.0");
    let out = p.run_env(&["promote", "staging", "production"], &[("STAMP", "two")]);
    out.code(3)
        .stderr_has("the artifact `build/stamp` differs from what passed the source environment")
        .stderr_has("nothing was started");
    let s = status_json(&p, "production");
    assert!(
        s["services"][0]["releases"]
            .as_array()
            .is_none_or(|r| r.is_empty()),
        "{s}"
    );
    // The same build goes through.
    p.run(&["promote", "staging", "production"]).code(0);
    stop_all(&p);
}

#[test]
fn only_what_still_runs_in_staging_and_matches_the_tags_is_promoted() {
    let p = Project::with_demo(&plan("    promote_from: staging\n    tags: \"v*\""));
    p.run(&["promote", "staging", "production"])
        .code(9)
        .stderr_has("no deployment of `staging` has succeeded yet");
    deploy_staging(&p, "4.0.0-rc1");
    p.run(&["promote", "staging", "production"])
        .code(9)
        .stderr_has(
            "release 4.0.0-rc1 may not go to `production`: its version matches none of `tags` (v*",
        );
    deploy_staging(&p, "v4.0.0");
    p.run(&["stop", "staging"]).code(0);
    p.run(&["promote", "staging", "production"])
        .code(9)
        .stderr_has("no longer runs there");
    // Direct deploys are refused: production takes promotions only.
    p.run(&["deploy", "production", "--release-version", "v4.0.0"])
        .code(9)
        .stderr_has("takes releases only by promotion from `staging`")
        .stderr_has("the plan allows no bypass");
    p.run(&["promote", "qa", "production"])
        .code(2)
        .stderr_has("the plan has no environment `qa`");
    p.run(&["promote", "production", "staging"])
        .code(9)
        .stderr_has("`staging` does not take promotions");
    assert!(history(&p, "production").is_empty());
    stop_all(&p);
}

#[test]
fn a_rejection_closes_the_request() {
    let p = Project::with_demo(&plan(
        "    promote_from: staging\n    approvals: { required: 1, from: [security, devops] }",
    ));
    deploy_staging(&p, "5.0.0");
    p.run(&["promote", "staging", "production"]).code(8);
    as_(&p, "bob", &["reject", "production"])
        .code(2)
        .stderr_has("a rejection needs --comment");
    as_(
        &p,
        "bob",
        &["reject", "production", "--comment", "error budget spent"],
    )
    .code(0)
    .stdout_has("rejected: request #2");
    assert_eq!(history(&p, "production")[0]["outcome"], "rejected");
    as_(&p, "alice", &["approve", "production", "--deployment", "2"])
        .code(9)
        .stderr_has("request #2 is not open: it is rejected");
    // A new promotion is a new request, which bob's rejection does not bind.
    p.run(&["promote", "staging", "production"])
        .code(8)
        .stderr_has("request #3");
    stop_all(&p);
}

#[test]
fn a_bypass_needs_the_rule_a_member_and_a_reason_and_is_audited() {
    let rules = "    promote_from: staging
    soak: 48h
    bypass: { by: [tech-lead] }";
    let p = Project::with_demo(&plan(rules));
    let secret = "tok-3f9a1c77e2";
    let env = [("SHOP_TOKEN", secret)];
    p.run(&["deploy", "production", "--release-version", "6.0.1"])
        .code(9)
        .stderr_has("allowed for: tech-lead");
    p.run(&[
        "deploy",
        "production",
        "--release-version",
        "6.0.1",
        "--bypass",
        "hotfix",
    ])
    .code(9)
    .stderr_has("tester may not bypass the promotion to `production` (allowed: tech-lead)");
    as_(
        &p,
        "dana",
        &[
            "deploy",
            "production",
            "--release-version",
            "6.0.1",
            "--bypass",
            "  ",
        ],
    )
    .code(2)
    .stderr_has("--bypass needs a reason");
    assert!(history(&p, "production").is_empty());
    let reason = format!("INC-77: logins fail (token {secret} leaked in the log)");
    let mut c = p.cmd(&[
        "deploy",
        "production",
        "--release-version",
        "6.0.1",
        "--bypass",
        &reason,
    ]);
    c.env("STAGEGATE_ACTOR", "dana");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = Out::of(c);
    out.code(0)
        .stderr_has("bypass: dana (tech-lead) skips the promotion from `staging` to `production`")
        .lacks(secret);
    let audit = p.run(&["audit", "show"]).code(0).stdout.clone();
    assert!(audit.contains(" bypass "), "{audit}");
    assert!(audit.contains("INC-77: logins fail"), "{audit}");
    assert!(
        !audit.contains(secret),
        "the secret reached the audit log: {audit}"
    );
    assert_not_stored(&p, &[secret]);
    p.run(&["audit", "verify"]).code(0);
    stop_all(&p);
}

#[test]
fn wait_approval_blocks_until_the_approvals_arrive_then_deploys() {
    let p = Project::with_demo(&plan(
        "    promote_from: staging\n    wait_timer: 1s\n    approvals: { required: 1, from: [devops] }",
    ));
    deploy_staging(&p, "7.0.0");
    let started = Instant::now();
    let child = p.spawn(&[
        "promote",
        "staging",
        "production",
        "--wait-approval",
        "--approval-timeout",
        "60s",
    ]);
    // The request appears, then bob approves from another process.
    while history(&p, "production").is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no request appeared"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    as_(&p, "bob", &["approve", "production"]).code(0);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("waiting (request #2): approvals: 0 of 1"),
        "{stderr}"
    );
    assert!(stderr.contains("approved by bob (devops)"), "{stderr}");
    // The wait timer held it for at least its second.
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(history(&p, "production")[0]["outcome"], "succeeded");

    // And it gives up when told to, leaving the request open; `--wait` waits for approvals too.
    deploy_staging(&p, "7.0.1");
    p.run(&[
        "promote",
        "staging",
        "production",
        "--wait",
        "--approval-timeout",
        "1s",
    ])
    .code(8)
    .stderr_has("gave up after 1s waiting for request #5");
    assert_eq!(history(&p, "production")[0]["outcome"], "awaiting_approval");
    stop_all(&p);
}

#[test]
fn approvals_survive_a_deploy_that_failed_and_are_spent_by_one_that_succeeded() {
    let p = Project::with_demo(&plan(
        "    promote_from: staging\n    approvals: { required: 1, from: [devops] }",
    ));
    deploy_staging(&p, "8.0.0");
    p.run(&["promote", "staging", "production"]).code(8);
    as_(&p, "bob", &["approve", "production"]).code(0);
    // The deploy fails (the build differs): the approval still stands for this artifact.
    p.run_env(&["promote", "staging", "production"], &[("STAMP", "two")])
        .code(3);
    p.run(&["promote", "staging", "production"])
        .code(0)
        .stderr_has("approved by bob (devops)");
    let prod = history(&p, "production");
    let requests = prod.iter().filter(|d| d["kind"] == "request").count();
    assert_eq!(requests, 1, "{prod:?}");
    // Once deployed, promoting the same artifact again asks anew.
    p.run(&["promote", "staging", "production"])
        .code(8)
        .stderr_has("approvals: 0 of 1");
    stop_all(&p);
}
