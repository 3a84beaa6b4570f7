//! The `ssh` driver against real OpenSSH servers (Debian's sshd, one per host on
//! 127.0.0.2, 127.0.0.3, ...; see `tests/sshd/mod.rs`) and the real demo service started on
//! each "host": rolling batches, a failing batch restored, manual rollback, stop, the lock
//! on the host, connection errors, secrets.

mod common;
mod sshd;

use common::{Project, http_get, status_json};
use sshd::Hosts;

const SECRET: &str = "sv-token-5d1c9e0b77";

fn plan(hosts: &Hosts, port: u16, batch: &str, host_extra: &str) -> String {
    format!(
        r#"project: fleet
vars: {{ break_on: "" }}
environments:
  staging:
    secrets: {{ optional: [SERVICE_TOKEN] }}
{hosts}
services:
  web:
    driver: ssh
    hosts: [web]
    artifacts: [demo]
    start: |
      if [ "$STAGEGATE_HOST" = "$BREAK_ON" ] || [ "$BREAK_ON" = all ]; then export DEMO_BREAK=health; fi
      echo "starting $STAGEGATE_RELEASE on $STAGEGATE_HOST"
      DEMO_BIND="$STAGEGATE_HOST_ADDRESS" exec ./demo
    env:
      DEMO_VERSION: "${{{{ release.version }}}}"
      BREAK_ON: "${{{{ vars.break_on }}}}"
      TOKEN: "${{{{ secrets.SERVICE_TOKEN || 'none' }}}}"
    port: {port}
    batch: {batch}
    keep: 3
    stop_timeout: 2s
    health:
      path: /health
      expect: {{ status: 200, json: {{ "$.version": "${{{{ release.version }}}}" }} }}
      interval: 50ms
      timeout: 4s
stages:
  deploy:
    - deploy: web
"#,
        hosts = hosts.yaml(host_extra),
    )
}

fn free_port() -> u16 {
    // A port free on every test address (the hosts' services all listen on it).
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        if (2..8)
            .all(|i| std::net::TcpListener::bind((format!("127.0.0.{i}").as_str(), port)).is_ok())
        {
            return port;
        }
    }
}

/// The version each host serves, or `down`.
fn versions(h: &Hosts, port: u16) -> Vec<String> {
    h.hosts
        .iter()
        .map(
            |s| match http_get(&format!("http://{}:{port}/health", s.address)) {
                Some((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["version"].as_str().map(String::from))
                    .unwrap_or(body),
                Some((code, _)) => format!("http {code}"),
                None => "down".into(),
            },
        )
        .collect()
}

fn current_link(h: &Hosts, i: usize) -> String {
    std::fs::read_link(h.host_dir(i).join("web/current"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn deploy(p: &Project, version: &str, extra: &[&str]) -> common::Out {
    let mut args = vec!["deploy", "staging", "--release-version", version];
    args.extend_from_slice(extra);
    p.run_env(&args, &[("SERVICE_TOKEN", SECRET)])
}

#[test]
fn a_rolling_deploy_reaches_every_host_and_a_failing_first_batch_is_rolled_back() {
    let h = Hosts::start(3);
    let port = free_port();
    let p = Project::with_demo(&plan(&h, port, "1", ""));
    let o = deploy(&p, "1.0.0", &[]);
    o.code(0)
        .stderr_has("batch 1/3: release 1.0.0-d1 to web-1")
        .stderr_has("batch 3/3: release 1.0.0-d1 to web-3");
    assert_eq!(versions(&h, port), ["1.0.0", "1.0.0", "1.0.0"]);
    for i in 0..3 {
        assert_eq!(current_link(&h, i), "releases/1.0.0-d1");
        let env = h.host_dir(i).join("web/releases/1.0.0-d1/.stagegate.env");
        let mode = std::fs::metadata(&env).unwrap().permissions();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.mode() & 0o777, 0o600, "{} is private", env.display());
    }
    let s = status_json(&p, "staging");
    let web = &s["services"][0];
    assert_eq!(web["current"], "1.0.0-d1");
    let live = web["releases"][0]["live"].as_str().unwrap_or_default();
    assert!(live.contains("running on web-1, web-2, web-3"), "{s}");

    // Every host breaks: the first batch fails and the rest are never touched.
    let o = deploy(&p, "1.1.0", &["--var", "break_on=all"]);
    o.code(4)
        .stderr_has("failed in batch 1/3")
        .stderr_has("the hosts after this batch were not touched: web-2, web-3")
        .stderr_has("web-1: back on 1.0.0-d1")
        .stderr_has("web-2: already on 1.0.0-d1");
    assert_eq!(versions(&h, port), ["1.0.0", "1.0.0", "1.0.0"]);
    for i in 0..3 {
        assert_eq!(current_link(&h, i), "releases/1.0.0-d1");
    }
    // Only web-1 ever got the bad release.
    assert!(h.host_dir(0).join("web/releases/1.1.0-d2").is_dir());
    assert!(!h.host_dir(1).join("web/releases/1.1.0-d2").exists());
    let s = status_json(&p, "staging");
    assert_eq!(s["services"][0]["current"], "1.0.0-d1");
    // No lock is left behind.
    for i in 0..3 {
        assert!(!h.host_dir(i).join("web/.stagegate-lock").exists());
    }
}

#[test]
fn a_failure_in_the_second_batch_restores_the_first_and_leaves_the_third_alone() {
    let h = Hosts::start(3);
    let port = free_port();
    let p = Project::with_demo(&plan(&h, port, "1", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    let o = deploy(&p, "1.1.0", &["--var", "break_on=web-2"]);
    o.code(4)
        .stderr_has("failed in batch 2/3")
        .stderr_has("host web-2: health check")
        .stderr_has("web/releases/1.1.0-d2/service.log:")
        .stderr_has("the hosts after this batch were not touched: web-3")
        .stderr_has("web-1: back on 1.0.0-d1")
        .stderr_has("web-3: already on 1.0.0-d1");
    assert_eq!(versions(&h, port), ["1.0.0", "1.0.0", "1.0.0"]);
    assert!(!h.host_dir(2).join("web/releases/1.1.0-d2").exists());
}

#[test]
fn batches_by_percentage_then_manual_rollback_and_stop() {
    let h = Hosts::start(3);
    let port = free_port();
    let p = Project::with_demo(&plan(&h, port, "\"50%\"", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    let o = deploy(&p, "2.0.0", &[]);
    // 50% of 3 hosts is 2 per batch.
    o.code(0)
        .stderr_has("batch 1/2: release 2.0.0-d2 to web-1, web-2")
        .stderr_has("batch 2/2: release 2.0.0-d2 to web-3");
    assert_eq!(versions(&h, port), ["2.0.0", "2.0.0", "2.0.0"]);

    let o = p.run_env(&["rollback", "staging"], &[("SERVICE_TOKEN", SECRET)]);
    o.code(0).stderr_has("web-3: back on 1.0.0-d1");
    assert_eq!(versions(&h, port), ["1.0.0", "1.0.0", "1.0.0"]);
    let o = p.run_env(
        &["rollback", "staging", "--to", "2.0.0"],
        &[("SERVICE_TOKEN", SECRET)],
    );
    o.code(0);
    assert_eq!(versions(&h, port), ["2.0.0", "2.0.0", "2.0.0"]);

    p.run(&["stop", "staging"]).code(0);
    assert_eq!(versions(&h, port), ["down", "down", "down"]);
    let s = status_json(&p, "staging");
    assert_eq!(s["services"][0]["running"], false, "{s}");
}

#[test]
fn a_host_locked_by_another_run_is_refused_and_nothing_changes() {
    let h = Hosts::start(2);
    let port = free_port();
    let p = Project::with_demo(&plan(&h, port, "1", ""));
    deploy(&p, "1.0.0", &[]).code(0);
    let lock = h.host_dir(1).join("web/.stagegate-lock");
    std::fs::create_dir_all(&lock).unwrap();
    std::fs::write(lock.join("holder"), "alice@laptop: deploy of web 0.9.9\n").unwrap();
    let o = deploy(&p, "1.1.0", &[]);
    o.code(3)
        .stderr_has("nothing was changed")
        .stderr_has("host web-2 is locked by alice@laptop: deploy of web 0.9.9")
        .stderr_has("rm -r");
    assert_eq!(versions(&h, port), ["1.0.0", "1.0.0"]);
    // Our lock on web-1 was given back; theirs stays.
    assert!(!h.host_dir(0).join("web/.stagegate-lock").exists());
    assert!(lock.join("holder").exists());
    std::fs::remove_dir_all(&lock).unwrap();
    deploy(&p, "1.1.0", &[]).code(0);
    assert_eq!(versions(&h, port), ["1.1.0", "1.1.0"]);
}

#[test]
fn connection_errors_say_what_is_wrong_and_change_nothing() {
    let mut h = Hosts::start(2);
    let port = free_port();

    // An unknown host key: known_hosts checking is strict by default.
    let empty = h.dir.path().join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let plan_text = plan(&h, port, "1", "").replace(
        &format!("known_hosts: {}", h.known_hosts.display()),
        &format!("known_hosts: {}", empty.display()),
    );
    let p = Project::with_demo(&plan_text);
    deploy(&p, "1.0.0", &[])
        .code(3)
        .stderr_has("host web-1 (")
        .stderr_has("its host key is not known")
        .stderr_has("ssh-keyscan")
        .stderr_has("nothing was changed");

    // A key the hosts do not accept.
    let other = h.dir.path().join("other_key");
    let st = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(st.success());
    let plan_text = plan(&h, port, "1", "").replace(
        &format!("identity: {}", h.identity.display()),
        &format!("identity: {}", other.display()),
    );
    let p = Project::with_demo(&plan_text);
    deploy(&p, "1.0.0", &[])
        .code(3)
        .stderr_has("authentication failed")
        .stderr_has("authorized_keys");

    // A host whose sshd is down: the other host is not touched either.
    let p = Project::with_demo(&plan(&h, port, "1", ""));
    h.stop(1);
    deploy(&p, "1.0.0", &[])
        .code(3)
        .stderr_has("host web-2 (")
        .stderr_has("the connection was refused")
        .stderr_has("nothing was changed");
    assert!(!h.host_dir(0).join("web/releases").exists());
    h.restart(1);
    deploy(&p, "1.0.0", &[]).code(0);
}

#[test]
fn secrets_reach_the_service_but_no_output_record_or_log() {
    let h = Hosts::start(1);
    let port = free_port();
    let p = Project::with_demo(&plan(&h, port, "1", ""));
    let o = deploy(&p, "1.0.0", &[]);
    o.code(0).lacks(SECRET);
    let env = std::fs::read_to_string(h.host_dir(0).join("web/releases/1.0.0-d1/.stagegate.env"))
        .unwrap();
    assert!(env.contains(&format!("TOKEN='{SECRET}'")), "{env}");
    common::assert_not_stored(&p, &[SECRET]);
    for cmd in [
        vec!["show", "1", "--json"],
        vec!["status", "staging"],
        vec!["plan", "staging"],
    ] {
        p.run(&cmd).code(0).lacks(SECRET);
    }
}

#[test]
fn ssh_plans_that_cannot_work_are_refused_with_their_line() {
    let p = Project::new(
        r#"project: bad
environments:
  staging:
    hosts:
      web-1: { address: 10.0.0.1, roles: [web] }
      web-2: { address: "-oProxyCommand=x", roles: [web] }
services:
  api:
    driver: ssh
    hosts: [wbe]
    artifacts: [api]
    start: ./api
    unit: api.service
    port: 8080
    batch: 0%
    dir: srv/api
stages:
  deploy:
    - deploy: api
"#,
    );
    let o = p.run_env(&["validate"], &[("NO_COLOR", "1")]);
    o.code(2)
        .stderr_has("is not a host name or IP address")
        .stderr_has("has both `start` and `unit`")
        .stderr_has("`batch` in service `api` must be a host count or a percentage")
        .stderr_has("`dir` in service `api` must be an absolute path")
        .stderr_has("names `wbe`, which is neither a host nor a role")
        .stderr_has("did you mean `web`?")
        .stderr_has("stagegate.yml:10");

    let p = Project::new(
        r#"project: bad
environments:
  staging: {}
services:
  api:
    driver: ssh
    start: ./api
    port: 8080
stages:
  deploy:
    - deploy: api
"#,
    );
    p.run_env(&["validate"], &[("NO_COLOR", "1")])
        .code(2)
        .stderr_has("is deployed over ssh but environment `staging` has no `hosts`");
}

#[test]
fn a_systemd_unit_is_restarted_after_the_switch_and_again_on_rollback() {
    // systemd cannot run here (it must be PID 1): the hosts' PATH finds the stand-in
    // systemctl of examples/ssh, which runs units described like real ones.
    let h = Hosts::start_with(2, true);
    let port = free_port();
    for i in 0..2 {
        std::fs::write(
            h.units(i).join("web.service"),
            format!(
                "WorkingDirectory={d}/web/current\nEnvironmentFile={d}/web/current/.stagegate.env\nEnvironment=DEMO_BIND={a}\nExecStart=./demo\n",
                d = h.host_dir(i).display(),
                a = h.hosts[i].address
            ),
        )
        .unwrap();
    }
    let text = plan(&h, port, "1", "")
        .replace(
            "    start: |\n      if [ \"$STAGEGATE_HOST\" = \"$BREAK_ON\" ] || [ \"$BREAK_ON\" = all ]; then export DEMO_BREAK=health; fi\n      echo \"starting $STAGEGATE_RELEASE on $STAGEGATE_HOST\"\n      DEMO_BIND=\"$STAGEGATE_HOST_ADDRESS\" exec ./demo\n",
            "    unit: web.service\n",
        )
        .replace(
            "      BREAK_ON: \"${{ vars.break_on }}\"\n",
            "      DEMO_BREAK: \"${{ vars.break_on }}\"\n",
        );
    assert!(text.contains("unit: web.service"), "{text}");
    // Both hosts share this machine: the service listens on every loopback address.
    let text = text.replace(
        "vars: { break_on: \"\" }",
        "vars: { break_on: \"\", bind: 0.0.0.0 }",
    );
    let p = Project::with_demo(&text);
    deploy(&p, "1.0.0", &[]).code(0);
    assert_eq!(versions(&h, port)[..2], ["1.0.0", "1.0.0"]);
    deploy(&p, "1.1.0", &["--var", "break_on=health"])
        .code(4)
        .stderr_has("failed in batch 1/2")
        .stderr_has("web-1: back on 1.0.0-d1");
    assert_eq!(versions(&h, port)[..2], ["1.0.0", "1.0.0"]);
    let calls = std::fs::read_to_string(h.units(0).join("calls.log")).unwrap();
    let restarts = calls
        .lines()
        .filter(|l| *l == "restart web.service")
        .count();
    // 1.0.0, the failing 1.1.0, and 1.0.0 again.
    assert_eq!(restarts, 3, "{calls}");
    assert!(calls.contains("stop web.service"), "{calls}");
    assert_eq!(
        std::fs::read_to_string(h.units(1).join("calls.log"))
            .unwrap()
            .lines()
            .filter(|l| *l == "restart web.service")
            .count(),
        1,
        "web-2 never got 1.1.0, and was already on 1.0.0"
    );
}
