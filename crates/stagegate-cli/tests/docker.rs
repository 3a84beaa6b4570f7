//! The `docker` and `compose` drivers, run by the real `stagegate` binary against the real
//! Docker engine of this machine (images built `FROM scratch` by the tests, no registry).
//! Seed 000's Docker variant (`docker run -d --name erp-hub -p 8000:8000 -e BLOB_KEY=...`)
//! and seed 003's compose deployment with images by commit SHA.

mod common;
mod dockerd;

use common::{Project, assert_nowhere, http_get, status_json, with_reports};
use dockerd::{Scope, build_image, docker as dk, docker_quiet, free_port, inspect};

const SECRET: &str = "blob-key-docker-5150";

fn docker_plan(prefix: &str, port_lines: &str, extra: &str) -> String {
    format!(
        r#"project: erp-hub
release:
  version: "${{{{ env.ERP_VERSION || '1.3.0' }}}}"
vars:
  break: ""
environments:
  staging:
    secrets: {{ optional: [BLOB_KEY] }}
services:
  erp:
    driver: docker
    image: {prefix}-erp:${{{{ release.version }}}}
    build: image
    container: {prefix}-erp
{port_lines}
    env:
      DEMO_VERSION: "${{{{ release.version }}}}"
      DEMO_BREAK: "${{{{ vars.break }}}}"
      BLOB_KEY: "${{{{ secrets.BLOB_KEY || 'not-set' }}}}"
    stop_timeout: 2s
    timeout: 20s
{extra}    health:
      path: /health
      expect:
        status: 200
        json: {{ "$.version": "${{{{ release.version }}}}" }}
      interval: 100ms
      timeout: 4s
stages:
  deploy:
    - deploy: erp
"#
    )
}

fn container_of(p: &Project, id: &str) -> serde_json::Value {
    let text = p.read(&format!(
        ".stagegate/releases/staging/erp/{id}/release.json"
    ));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("release {id}: {e}: {text}"))
}

fn serves(url: &str, version: &str) {
    let got = http_get(&format!("{url}/health"));
    assert!(
        matches!(&got, Some((200, b)) if b.contains(&format!("\"{version}\""))),
        "{url} should serve {version}, got {got:?}"
    );
}

#[test]
fn fixed_port_deploy_then_failing_release_is_rolled_back_to_the_old_container() {
    let s = Scope::new("fixed");
    let port = free_port();
    let p = Project::new(&docker_plan(
        &s.prefix,
        &format!("    port: 8000\n    host_port: {port}\n    bind: 127.0.0.1"),
        "",
    ));
    dockerd::write_image_context(&p.path().join("image"), false);
    let url = format!("http://127.0.0.1:{port}");
    let env = [("ERP_VERSION", "1.3.0"), ("BLOB_KEY", SECRET)];

    p.run_env(&["deploy", "staging"], &env).code(0);
    serves(&url, "1.3.0");
    let first = container_of(&p, "1.3.0-d1");
    let image_id = first["docker"]["image_id"].as_str().unwrap().to_string();
    assert!(image_id.starts_with("sha256:"), "{first}");
    assert_eq!(
        inspect(&format!("{}-erp-1.3.0-d1", s.prefix), "{{.Image}}"),
        image_id
    );

    // 1.3.1 fails its health check: the old container (stopped to free the port) starts again.
    let o = p.run_env(
        &["deploy", "staging", "--var", "break=health"],
        &[("ERP_VERSION", "1.3.1"), ("BLOB_KEY", SECRET)],
    );
    o.code(4).stderr_has("503");
    serves(&url, "1.3.0");
    let failed = format!("{}-erp-1.3.1-d2", s.prefix);
    assert_eq!(
        inspect(&failed, "{{.State.Status}}"),
        "exited",
        "kept, stopped, for its logs"
    );
    assert_eq!(container_of(&p, "1.3.1-d2")["status"], "rolled_back");
    let st = status_json(&p, "staging");
    assert!(st.to_string().contains("1.3.0-d1"), "{st}");

    // 1.4.0, then a manual rollback, then `stop`.
    p.run_env(
        &["deploy", "staging"],
        &[("ERP_VERSION", "1.4.0"), ("BLOB_KEY", SECRET)],
    )
    .code(0);
    serves(&url, "1.4.0");
    let o = p.run_env(&["rollback", "staging"], &[("BLOB_KEY", SECRET)]);
    o.code(0);
    serves(&url, "1.3.0");
    let o = p.run(&["status", "staging"]);
    o.code(0)
        .stdout_has(&format!("container {}-erp-1.3.0-d1 running", s.prefix));
    p.run(&["stop", "staging"]).code(0);
    assert!(http_get(&format!("{url}/health")).is_none(), "stopped");
    assert_eq!(
        inspect(&format!("{}-erp-1.3.0-d1", s.prefix), "{{.State.Running}}"),
        "false"
    );
}

#[test]
fn a_free_port_release_starts_beside_the_old_one_and_the_images_healthcheck_is_waited_on() {
    let s = Scope::new("beside");
    let p = Project::new(&docker_plan(&s.prefix, "    port: 8000", ""));
    dockerd::write_image_context(&p.path().join("image"), true);
    p.run_env(&["deploy", "staging"], &[("ERP_VERSION", "2.0.0")])
        .code(0);
    let first = container_of(&p, "2.0.0-d1");
    assert_eq!(first["docker"]["healthcheck"], true, "{first}");
    let url1 = first["url"].as_str().unwrap().to_string();
    serves(&url1, "2.0.0");
    let old = format!("{}-erp-2.0.0-d1", s.prefix);
    let started = inspect(&old, "{{.State.StartedAt}}");

    // The image's own HEALTHCHECK fails: the old container never stopped.
    let o = p.run_env(
        &["deploy", "staging", "--var", "break=health"],
        &[("ERP_VERSION", "2.1.0")],
    );
    o.code(4).stderr_has("unhealthy by its image's HEALTHCHECK");
    serves(&url1, "2.0.0");
    assert_eq!(
        inspect(&old, "{{.State.StartedAt}}"),
        started,
        "never restarted"
    );

    // A good release: the old container is stopped only after the new one passed.
    p.run_env(&["deploy", "staging"], &[("ERP_VERSION", "2.2.0")])
        .code(0);
    let third = container_of(&p, "2.2.0-d3");
    serves(third["url"].as_str().unwrap(), "2.2.0");
    assert_eq!(
        inspect(&format!("{}-erp-2.0.0-d1", s.prefix), "{{.State.Running}}"),
        "false"
    );

    // The previous container is gone: rollback makes it again from the recorded image id.
    let gone_id = inspect(&old, "{{.Id}}");
    dk(&["rm", "-f", &old]);
    p.run(&["rollback", "staging"]).code(0);
    assert_ne!(inspect(&old, "{{.Id}}"), gone_id, "a new container");
    assert_eq!(
        inspect(&old, "{{.Image}}"),
        first["docker"]["image_id"].as_str().unwrap()
    );
    let back = container_of(&p, "2.0.0-d1");
    serves(back["url"].as_str().unwrap(), "2.0.0");
}

#[test]
fn a_container_that_exits_is_reported_with_its_last_output() {
    let s = Scope::new("crash");
    let p = Project::new(&docker_plan(&s.prefix, "    port: 8000", ""));
    dockerd::write_image_context(&p.path().join("image"), false);
    let o = p.run_env(
        &["deploy", "staging", "--var", "break=crash"],
        &[("ERP_VERSION", "3.0.0")],
    );
    o.code(4)
        .stderr_has("exited (1)")
        .stderr_has("refusing to start (DEMO_BREAK=crash)");
    // There was nothing before it: nothing runs now.
    assert!(p.run(&["status", "staging"]).stdout.contains("3.0.0-d1"));
}

#[test]
fn secrets_reach_the_container_only_through_its_environment() {
    let s = Scope::new("secret");
    let p = Project::new(&docker_plan(&s.prefix, "    port: 8000", ""));
    dockerd::write_image_context(&p.path().join("image"), false);
    let mut args = vec!["deploy", "staging"];
    args.extend(with_reports(&[]));
    p.run_env(&args, &[("ERP_VERSION", "1.0.0"), ("BLOB_KEY", SECRET)])
        .code(0)
        .lacks(SECRET);
    let name = format!("{}-erp-1.0.0-d1", s.prefix);
    // Not in the container's command line, on either side.
    let argv = inspect(
        &name,
        "{{.Path}} {{json .Args}} {{json .Config.Cmd}} {{json .Config.Entrypoint}}",
    );
    assert!(!argv.contains(SECRET), "{argv}");
    // In its environment, as the runbook's `-e BLOB_KEY=...` had it.
    let env = inspect(&name, "{{json .Config.Env}}");
    assert!(env.contains(&format!("BLOB_KEY={SECRET}")), "{env}");
    // The env file docker read is gone; nothing stagegate wrote holds the value.
    let rec = p.path().join(".stagegate/releases/staging/erp/1.0.0-d1");
    assert!(!rec.join("container.env").exists());
    assert!(assert_nowhere(&p, &[SECRET], "staging") > 0);
    let o = p.run_env(
        &["rollback", "staging", "--to", "1.0.0"],
        &[("BLOB_KEY", SECRET)],
    );
    o.lacks(SECRET);
}

#[test]
fn docker_errors_say_what_to_do_and_change_nothing() {
    let s = Scope::new("errors");
    // No build and no such image: nothing can be pulled here.
    let plan = docker_plan(&s.prefix, "    port: 8000", "").replace("    build: image\n", "");
    let p = Project::new(&plan);
    let o = p.run_env(&["deploy", "staging"], &[("ERP_VERSION", "9.9.9")]);
    o.code(3)
        .stderr_has("is not on this Docker engine and could not be pulled");
    assert!(docker_quiet(&["inspect", &format!("{}-erp-9.9.9-d1", s.prefix)]).is_none());

    // An engine that does not answer.
    let p = Project::new(&docker_plan(&s.prefix, "    port: 8000", ""));
    dockerd::write_image_context(&p.path().join("image"), false);
    let o = p.run_env(
        &["deploy", "staging"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    o.code(3).stderr_has("the Docker engine is not running");
}

#[test]
fn docker_and_compose_plans_are_validated_with_file_and_line() {
    let p = Project::new(
        r#"project: x
environments: { staging: {} }
services:
  a:
    driver: docker
    port: 70000
    host_port: 8000
    bind: everywhere
    volumes: [data]
    health: { path: /health }
  b:
    driver: compose
    file: missing.yml
    images: { "bad name": "x:1" }
    health: { path: /health }
stages:
  deploy:
    - deploy: a
    - deploy: b
"#,
    );
    let o = p.run(&["validate"]);
    o.code(2)
        .stderr_has("has no `image`")
        .stderr_has("`port` in service `a` must be from 1 to 65535, found 70000")
        .stderr_has("`bind` in service `a` must be an IP address")
        .stderr_has("volume `data` of service `a` is not `SOURCE:TARGET`")
        .stderr_has("the service has no `port`")
        .stderr_has("compose file `missing.yml` of service `b` does not exist")
        .stderr_has("not a compose service name")
        .stderr_has("a compose service has no address of its own")
        .stderr_has("stagegate.yml:6");
}

// ---- compose -------------------------------------------------------------------------

const COMPOSE_FILE: &str = r#"version: "3.8"
services:
  signal_service:
    image: placeholder
    init: true
    environment:
      DEMO_VERSION: "${SIGNAL_VERSION}"
    ports: ["127.0.0.1:${SIGNAL_PORT}:8000"]
  execution_gateway:
    image: placeholder
    init: true
    environment:
      DEMO_VERSION: "${GATEWAY_VERSION}"
      DEMO_BREAK: "${GATEWAY_BREAK}"
      ALPACA_PAPER_API_KEY: "${ALPACA_PAPER_API_KEY}"
    ports: ["127.0.0.1:${GATEWAY_PORT}:8000"]
"#;

fn compose_plan(prefix: &str, sp: u16, gp: u16) -> String {
    format!(
        r#"project: trading
release:
  version: "${{{{ env.SHA }}}}"
  sha: "${{{{ env.SHA }}}}"
vars:
  break: ""
environments:
  staging:
    secrets: {{ optional: [ALPACA_PAPER_API_KEY] }}
services:
  platform:
    driver: compose
    file: docker-compose.staging.yml
    project: {prefix}
    images:
      signal_service: {prefix}-signal:${{{{ release.sha }}}}
      execution_gateway: {prefix}-gateway:${{{{ release.sha }}}}
    env:
      SIGNAL_VERSION: "${{{{ release.sha }}}}"
      GATEWAY_VERSION: "${{{{ release.sha }}}}"
      GATEWAY_BREAK: "${{{{ vars.break }}}}"
      SIGNAL_PORT: "{sp}"
      GATEWAY_PORT: "{gp}"
      ALPACA_PAPER_API_KEY: "${{{{ secrets.ALPACA_PAPER_API_KEY || 'unset' }}}}"
    timeout: 30s
    health:
      url: http://127.0.0.1:{gp}/health
      expect:
        status: 200
        json: {{ "$.version": "${{{{ release.sha }}}}" }}
      interval: 100ms
      timeout: 4s
stages:
  deploy:
    - deploy: platform
"#
    )
}

#[test]
fn compose_deploys_images_by_sha_and_rolls_back_to_the_previous_tags() {
    let s = Scope::new("compose");
    let (sp, gp) = (free_port(), free_port());
    let p = Project::new(&compose_plan(&s.prefix, sp, gp));
    p.write("docker-compose.staging.yml", COMPOSE_FILE);
    // CI built and pushed these; here they are built locally, one image per commit.
    for sha in ["a1b2c3d", "e4f5a6b"] {
        for svc in ["signal", "gateway"] {
            build_image(
                &p.path().join(format!("img-{svc}-{sha}")),
                &format!("{}-{svc}:{sha}", s.prefix),
                true,
                sha,
            );
        }
    }
    let key = "alpaca-paper-key-8086";
    p.run_env(
        &["deploy", "staging"],
        &[("SHA", "a1b2c3d"), ("ALPACA_PAPER_API_KEY", key)],
    )
    .code(0)
    .lacks(key);
    serves(&format!("http://127.0.0.1:{gp}"), "a1b2c3d");
    serves(&format!("http://127.0.0.1:{sp}"), "a1b2c3d");
    let rec = container_of_platform(&p, "a1b2c3d-d1");
    let containers = rec["compose"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2, "{rec}");
    let gw_image = dk(&[
        "image",
        "inspect",
        "-f",
        "{{.Id}}",
        &format!("{}-gateway:a1b2c3d", s.prefix),
    ]);
    assert!(
        containers.iter().any(|c| c["image_id"] == gw_image.trim()),
        "the gateway's image id is recorded: {rec}"
    );

    // The next commit's gateway fails its health check: back to the previous tags.
    let o = p.run_env(
        &["deploy", "staging", "--var", "break=health"],
        &[("SHA", "e4f5a6b"), ("ALPACA_PAPER_API_KEY", key)],
    );
    o.code(4)
        .stderr_has("`execution_gateway`")
        .stderr_has("unhealthy by its image's HEALTHCHECK")
        .lacks(key);
    serves(&format!("http://127.0.0.1:{gp}"), "a1b2c3d");
    let running = dk(&[
        "ps",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.prefix),
        "--format",
        "{{.Image}}",
    ]);
    assert!(!running.contains("e4f5a6b"), "old tags again: {running}");
    assert!(
        running.contains(&format!("{}-gateway:a1b2c3d", s.prefix)),
        "{running}"
    );

    p.run(&["status", "staging"])
        .code(0)
        .stdout_has("execution_gateway running (healthy)");
    p.run(&["stop", "staging"]).code(0);
    assert!(http_get(&format!("http://127.0.0.1:{gp}/health")).is_none());
    common::assert_not_stored(&p, &[key]);
}

#[test]
fn a_compose_file_that_does_not_load_changes_nothing() {
    let s = Scope::new("badcompose");
    let (sp, gp) = (free_port(), free_port());
    let p = Project::new(&compose_plan(&s.prefix, sp, gp));
    p.write(
        "docker-compose.staging.yml",
        "services:\n  signal_service: [not, a, mapping]\n",
    );
    let o = p.run_env(&["deploy", "staging"], &[("SHA", "0000000")]);
    o.code(3).stderr_has("the compose files do not load");
    let running = docker_quiet(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=com.docker.compose.project={}", s.prefix),
    ])
    .unwrap_or_default();
    assert!(running.trim().is_empty(), "no containers: {running}");
}

fn container_of_platform(p: &Project, id: &str) -> serde_json::Value {
    let text = p.read(&format!(
        ".stagegate/releases/staging/platform/{id}/release.json"
    ));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("release {id}: {e}: {text}"))
}

/// A promotion carries the image id that passed staging: the same image goes to production;
/// a tag rebuilt with other content since is caught and its container rolled back.
#[test]
fn a_promotion_deploys_the_image_that_passed_staging_and_refuses_a_rebuilt_tag() {
    let s = Scope::new("promote");
    let plan = docker_plan(&s.prefix, "    port: 8000", "").replace(
        "environments:\n  staging:\n    secrets: { optional: [BLOB_KEY] }\n",
        "environments:\n  staging:\n    secrets: { optional: [BLOB_KEY] }\n  production:\n    promote_from: staging\n    secrets: { optional: [BLOB_KEY] }\n",
    );
    assert!(plan.contains("promote_from"), "{plan}");
    let p = Project::new(&plan);
    dockerd::write_image_context(&p.path().join("image"), false);
    let env = [("ERP_VERSION", "3.0.0")];
    p.run_env(&["deploy", "staging"], &env).code(0);
    let staged = container_of(&p, "3.0.0-d1");
    let image_id = staged["docker"]["image_id"].as_str().unwrap().to_string();

    p.run_env(&["promote", "staging", "production"], &env)
        .code(0)
        .stderr_has("authorized: promotion from staging (deployment #1)");
    let prod: serde_json::Value =
        serde_json::from_str(&p.read(".stagegate/releases/production/erp/3.0.0-d2/release.json"))
            .unwrap();
    assert_eq!(prod["docker"]["image_id"], image_id.as_str());
    serves(prod["url"].as_str().unwrap(), "3.0.0");

    // The tag is rebuilt from other content: production would run another image.
    std::fs::write(p.path().join("image/rootfs/extra"), "changed").unwrap();
    p.run_env(&["promote", "staging", "production"], &env)
        .code(4)
        .stderr_has("the artifact `image ")
        .stderr_has("differs from what passed the source environment");
    // Production still serves the image that passed.
    serves(prod["url"].as_str().unwrap(), "3.0.0");
    let _ = p.run(&["stop", "production"]);
    let _ = p.run(&["stop", "staging"]);
}
