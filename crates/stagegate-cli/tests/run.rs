//! `deploy` with `run` steps: order, outputs, retries, timeouts, rollback, exit codes, locks,
//! interruption, reports and secret masking, all through the real binary and real processes.

mod common;
use std::time::Duration;

use common::Project;

/// A plan with one environment and the given stages (YAML, indented under `stages:`).
fn plan(stages: &str) -> String {
    format!("project: demo\nenvironments:\n  staging: {{}}\nstages:\n{stages}")
}

#[test]
fn runs_steps_in_order_and_passes_outputs_on() {
    let p = Project::new(&plan(
        r#"  build:
    - id: version
      run: |
        echo "building"
        echo "tag=v-${{ release.version }}" >> "$STAGEGATE_OUTPUT"
        printf 'notes<<EOF\nline one\nline two\nEOF\n' >> "$STAGEGATE_OUTPUT"
  verify:
    - id: use
      run: echo "${{ steps.version.outputs.tag }} $STAGEGATE_ENVIRONMENT" > used.txt
    - name: skipped one
      when: environment.name == 'production'
      run: touch skipped.txt
"#,
    ));
    let o = p.run(&["deploy", "staging", "--release-version", "3.1"]);
    o.code(0)
        .stderr_has("  ok      echo \"building\"… [version]")
        .stderr_has("  ok      echo \"${{…}} $STAGEGATE_ENVIRONMENT\" > used.txt [use]")
        .stderr_has("  skip    skipped one [verify-2]")
        .stderr_has("stagegate: succeeded in ");
    assert_eq!(p.read("used.txt"), "v-3.1 staging\n");
    assert!(!p.path().join("skipped.txt").exists());

    let show = p.run(&["show", "1", "--json"]);
    show.code(0);
    let v: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[0]["outputs"]["tag"], "v-3.1");
    assert_eq!(steps[0]["outputs"]["notes"], "line one\nline two");
    assert_eq!(steps[2]["status"], "skipped");
    assert_eq!(v["deployment"]["outcome"], "succeeded");
    assert_eq!(v["deployment"]["actor"], "tester");
}

#[test]
fn a_failure_rolls_back_what_ran_newest_first() {
    let p = Project::new(&plan(
        r#"  migrate:
    - id: one
      run: echo do-one >> journal
      rollback: echo undo-one >> journal
    - id: two
      run: echo do-two >> journal
      rollback: echo undo-two >> journal
    - id: plain
      run: echo plain >> journal
  verify:
    - id: check
      run: echo "the check fails"; exit 7
      rollback: echo undo-check >> journal
"#,
    ));
    let o = p.run(&["deploy", "staging"]);
    o.code(4)
        .stderr_has("step `check` failed: command exited with code 7")
        .stderr_has("the check fails")
        .stderr_has("step `plain` has no `rollback` command: its effects remain");
    assert_eq!(
        p.read("journal"),
        "do-one\ndo-two\nplain\nundo-check\nundo-two\nundo-one\n"
    );
    let h = p.run(&["history"]);
    h.code(0).stdout_has("rolled_back");
    p.run(&["show", "1"])
        .code(0)
        .stdout_has("exit 7")
        .stdout_has("one.rollback")
        .stdout_has("| the check fails");
}

#[test]
fn a_failure_before_anything_changed_exits_3() {
    let p = Project::new(&plan(
        "  preflight:\n    - run: exit 1\n    - run: touch never\n",
    ));
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("nothing had changed yet");
    assert!(!p.path().join("never").exists());
}

#[test]
fn on_failure_stop_leaves_things_as_they_are() {
    let p = Project::new(
        "project: demo\non_failure: stop\nenvironments: { staging: {} }\nstages:\n  s:\n    - run: echo did >> j\n      rollback: echo undid >> j\n    - run: 'false'\n",
    );
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("on_failure: stop");
    assert_eq!(p.read("j"), "did\n");
}

#[test]
fn retries_then_passes_and_continue_on_error_goes_on() {
    let p = Project::new(&plan(
        r#"  s:
    - id: flaky
      run: n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; [ $n -ge 3 ]
      retries: 3
      retry_delay: 10ms
    - id: optional
      run: exit 2
      continue_on_error: true
    - run: touch reached
"#,
    ));
    p.run(&["deploy", "staging"])
        .code(0)
        .stderr_has("retry")
        .stderr_has("continue_on_error");
    assert_eq!(p.read("count").trim(), "3");
    assert!(p.path().join("reached").exists());
    let v: serde_json::Value =
        serde_json::from_str(&p.run(&["show", "1", "--json"]).stdout).unwrap();
    assert_eq!(v["steps"][0]["attempts"], 3);
    assert_eq!(v["steps"][1]["status"], "failed");
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let p = Project::new(&plan(
        "  s:\n    - id: hang\n      run: (sleep 30 & echo $! > grandchild.pid; wait)\n      timeout: 300ms\n",
    ));
    p.run(&["deploy", "staging"])
        .code(3)
        .stderr_has("did not finish within its timeout");
    let pid: i32 = p.read("grandchild.pid").trim().parse().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the grandchild sleep survived: {stat}"
    );
}

#[test]
fn the_html_report_is_one_self_contained_file_with_hostile_output_escaped() {
    let p = Project::new(&plan(
        r#"  build:
    - id: hostile
      name: prints <b>markup</b>
      run: echo '<script>alert("owned")</script> & <img src=x onerror=alert(1)>'
      rollback: 'true'
  verify:
    - id: bad
      run: echo "<script src=https://evil.example.com/x.js></script>"; exit 3
"#,
    ));
    p.run(&[
        "deploy",
        "staging",
        "--release-version",
        "4.2",
        "--report",
        "html=out/report.html",
    ])
    .code(4);
    let files = common::walk(&p.path().join("out"));
    assert_eq!(files.len(), 1, "{files:?}");
    let html = p.read("out/report.html");
    assert!(html.starts_with("<!DOCTYPE html>"), "{html}");
    for want in [
        "<style>",
        "hostile",
        "prints &lt;b&gt;markup&lt;/b&gt;",
        "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;",
        "&lt;script src=https://evil.example.com/x.js&gt;",
        "<h2>Rollback</h2>",
        "rolled back (exit code 4)",
        "<th>Who</th><td>tester</td>",
        "<code>4.2</code>",
    ] {
        assert!(html.contains(want), "{want} missing:\n{html}");
    }
    // No script at all, no external asset, nothing fetched.
    for bad in [
        "<script",
        "<link",
        "<img",
        "src=\"http",
        "href=\"http",
        "url(http",
    ] {
        assert!(!html.contains(bad), "{bad} in:\n{html}");
    }
}

#[test]
fn reports_are_written_in_every_format() {
    let p = Project::new(&plan(
        "  build:\n    - id: ok\n      run: echo fine\n  verify:\n    - id: bad\n      name: a | pipe\n      run: echo broken; exit 1\n      rollback: 'true'\n",
    ));
    p.run(&[
        "deploy",
        "staging",
        "--report",
        "json=out/r.json",
        "--report",
        "junit=out/r.xml",
        "--report",
        "markdown=out/r.md",
        "--events",
        "out/e.jsonl",
    ])
    .code(4);
    let json: serde_json::Value = serde_json::from_str(&p.read("out/r.json")).unwrap();
    assert_eq!(json["outcome"], "rolled_back");
    assert_eq!(json["exit_code"], 4);
    let junit = p.read("out/r.xml");
    assert!(
        junit.contains("<failure") && junit.contains("broken"),
        "{junit}"
    );
    let md = p.read("out/r.md");
    assert!(md.contains("a \\| pipe"), "{md}");
    let events = p.read("out/e.jsonl");
    assert!(
        events
            .lines()
            .next()
            .unwrap()
            .contains("\"event\":\"run_started\""),
        "{events}"
    );
    assert!(
        events
            .lines()
            .last()
            .unwrap()
            .contains("\"event\":\"run_finished\""),
        "{events}"
    );
}

#[test]
fn bad_report_argument_is_a_usage_error() {
    let p = Project::new(&plan("  s:\n    - run: 'true'\n"));
    p.run(&["deploy", "staging", "--report", "pdf=x.pdf"])
        .code(2)
        .stderr_has("unknown report kind `pdf`");
}

#[test]
fn secrets_never_reach_any_output() {
    const SECRET: &str = "s3cr3t-VALUE-42";
    let p = Project::new(
        r#"project: demo
environments:
  staging:
    secrets: { require: [API_TOKEN] }
stages:
  s:
    - id: leak
      name: leak ${{ secrets.API_TOKEN }}
      run: |
        echo "token is ${{ secrets.API_TOKEN }}"
        echo "$TOKEN" >&2
        echo "copy=${{ secrets.API_TOKEN }}" >> "$STAGEGATE_OUTPUT"
      env: { TOKEN: "${{ secrets.API_TOKEN }}" }
      rollback: echo "undo with ${{ secrets.API_TOKEN }}"
    - id: fail
      run: echo "failing with $TOKEN"; exit 1
      env: { TOKEN: "${{ secrets.API_TOKEN }}" }
"#,
    );
    p.write(".env.staging", &format!("API_TOKEN={SECRET}\n"));
    let o = p.run(&common::with_reports(&["deploy", "staging"]));
    o.code(4)
        .stderr_has("failing with ***")
        .stderr_has("leak *** [leak]")
        .lacks(SECRET);
    // The reports, the record, the plan, and every file stagegate wrote: the SQLite store
    // (and its WAL) and the step logs.
    let checked = common::assert_nowhere(&p, &[SECRET], "staging");
    p.run(&["status", "staging", "--json"]).lacks(SECRET);
    assert!(
        checked >= 3,
        "expected a store and step logs, found {checked} files"
    );
    assert!(
        p.read(".stagegate/logs/1/001-leak.log")
            .contains("token is ***")
    );
}

#[test]
fn a_second_deploy_waits_for_or_reports_the_lock() {
    // The step holds the deploy (and its lock) until the test writes `go`.
    let p = Project::new(&plan(
        "  s:\n    - run: touch started; while [ ! -f go ]; do sleep 0.05; done\n",
    ));
    let mut first = p.spawn(&["deploy", "staging"]);
    p.wait_for("started", Duration::from_secs(10));
    p.run(&["deploy", "staging"])
        .code(6)
        .stderr_has("environment `staging` is locked by tester@")
        .stderr_has("deployment #1")
        .stderr_has("--wait");
    p.run(&["status", "staging"])
        .code(0)
        .stdout_has("lock: held by tester@")
        .stdout_has("is still running");
    // A deploy with --wait says it waits; once the first one ends, it runs.
    let mut waiting = p.spawn(&["deploy", "staging", "--wait"]);
    let mut stderr = std::io::BufReader::new(waiting.stderr.take().unwrap());
    let mut said = String::new();
    while !said.contains("waiting: environment `staging` is locked") {
        let before = said.len();
        std::io::BufRead::read_line(&mut stderr, &mut said).unwrap();
        assert!(
            said.len() > before,
            "the second deploy ended without waiting:\n{said}"
        );
    }
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first deploy ended before the second one waited"
    );
    p.write("go", "");
    assert!(first.wait().unwrap().success());
    std::io::Read::read_to_string(&mut stderr, &mut said).unwrap();
    assert!(waiting.wait().unwrap().success(), "{said}");
    let h = p.run(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
}

#[test]
fn a_killed_run_leaves_a_lock_that_is_reported_and_can_be_broken() {
    let p = Project::new(&plan(
        "  s:\n    - id: first\n      run: echo one\n    - id: long\n      run: touch started; sleep 30\n",
    ));
    let mut run = p.spawn(&["deploy", "staging"]);
    p.wait_for("started", Duration::from_secs(10));
    // Let the recorder catch up with the step that is running, then SIGKILL: no clean-up.
    std::thread::sleep(Duration::from_millis(500));
    run.kill().unwrap();
    run.wait().unwrap();
    p.run(&["deploy", "staging"])
        .code(6)
        .stderr_has("that process is gone")
        .stderr_has("stagegate unlock staging");
    p.run(&["status", "staging"])
        .code(0)
        .stdout_has("unfinished: deployment #1")
        .stdout_has("at step `long` (running)")
        .stdout_has("its process is gone");
    p.run(&["unlock", "staging"])
        .code(0)
        .stdout_has("unlocked staging")
        .stderr_has("marked abandoned");
    p.run(&["history"]).code(0).stdout_has("abandoned");
    std::fs::remove_file(p.path().join("started")).unwrap();
    // The next deploy runs, with a new plan whose step ends at once.
    p.write("stagegate.yml", &plan("  s:\n    - run: 'true'\n"));
    p.run(&["deploy", "staging"]).code(0);
}

#[test]
fn sigterm_cancels_the_step_and_rolls_back() {
    let p = Project::new(&plan(
        "  s:\n    - id: change\n      run: echo did >> journal\n      rollback: echo undid >> journal\n    - id: long\n      run: echo $$ > long.pid; touch started; sleep 30\n",
    ));
    let run = p.spawn(&["deploy", "staging", "--report", "json=r.json"]);
    p.wait_for("started", Duration::from_secs(10));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert_eq!(p.read("journal"), "did\nundid\n");
    let pid: i32 = p.read("long.pid").trim().parse().unwrap();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || stat.contains(") Z"),
        "the step's shell survived: {stat}"
    );
    let v: serde_json::Value = serde_json::from_str(&p.read("r.json")).unwrap();
    assert_eq!(v["outcome"], "interrupted");
    p.run(&["history"]).code(0).stdout_has("interrupted");
    // The lock was released.
    p.run(&["status", "staging"])
        .code(0)
        .stdout_has("lock: free");
}

#[test]
fn a_failing_rollback_exits_5_and_says_what_is_left() {
    let p = Project::new(&plan(
        "  s:\n    - id: migrate\n      run: echo up >> j\n      rollback: echo 'cannot go down' >&2; exit 9\n    - id: verify\n      run: exit 1\n",
    ));
    p.run(&["deploy", "staging"])
        .code(5)
        .stderr_has("the rollback command of step `migrate` failed")
        .stderr_has("mixed state")
        .stderr_has("cannot go down");
    p.run(&["history"]).code(0).stdout_has("rollback_failed");
}

#[test]
fn an_unusable_state_store_is_an_internal_error_naming_the_path() {
    let p = Project::new(&plan("  s:\n    - run: touch ran\n"));
    p.write("blocker", "a file where a directory should be");
    p.run(&["deploy", "staging", "--state", "blocker/state.db"])
        .code(1)
        .stderr_has("blocker");
    assert!(
        !p.path().join("ran").exists(),
        "nothing runs without a record"
    );
}

#[test]
fn history_and_show_still_read_the_record_when_the_plan_breaks() {
    let p = Project::new(&plan("  s:\n    - run: 'true'\n"));
    p.run(&["deploy", "staging"]).code(0);
    p.write("stagegate.yml", "project: [broken\n");
    p.run(&["history"])
        .code(0)
        .stdout_has("succeeded")
        .stderr_has("does not validate");
    p.run(&["show", "1"]).code(0).stdout_has("deployment #1");
    p.run(&["show", "99"])
        .code(2)
        .stderr_has("no deployment #99");
}

#[test]
fn conditions_outputs_and_reports_edge_cases() {
    let p = Project::new(&plan(
        r#"  s:
    - name: only when asked
      when: env.STAGEGATE_TEST_FLAG == 'yes'
      run: touch flagged
    - id: out
      run: echo "cmd=cat <<EOF" >> "$STAGEGATE_OUTPUT"
    - run: test "${{ steps.out.outputs.cmd }}" = "cat <<EOF"
"#,
    ));
    p.run(&["deploy", "staging"]).code(0);
    assert!(
        !p.path().join("flagged").exists(),
        "an unset variable makes the condition false"
    );
    p.write("blocked", "");
    p.run(&["deploy", "staging", "--report", "json=blocked/r.json"])
        .code(2)
        .stderr_has("cannot write the report");
    let h = p.run(&["history", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(
        v.as_array().unwrap().len(),
        1,
        "a bad report path records nothing"
    );
}
