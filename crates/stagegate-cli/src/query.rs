//! The read-mostly commands: validate, plan, status, stop, history, show, unlock.

use stagegate_engine::{StepDetails, exit, health};
use stagegate_plan::{Driver, HealthTarget, Plan, PortMode, Scope, StepKind};
use stagegate_report::gate::evidence_text;
use stagegate_report::{format_duration_ms, format_time_ms};

use crate::cli::Cli;
use crate::context::{CmdResult, Failure, driver_for, load_plan, open_store, plan_path, state_dir};

pub fn validate(cli: &Cli, json: bool) -> CmdResult {
    let path = plan_path(cli);
    let result = stagegate_plan::load_file(&path);
    let diags = match &result {
        Ok((_, w)) => w.clone(),
        Err(d) => d.clone(),
    };
    if json {
        let items: Vec<serde_json::Value> = diags
            .items
            .iter()
            .map(|d| {
                serde_json::json!({
                    "severity": match d.severity { stagegate_plan::Severity::Error => "error", stagegate_plan::Severity::Warning => "warning" },
                    "message": d.message,
                    "file": d.span.as_ref().map(|s| s.path().display().to_string()),
                    "line": d.span.as_ref().map(|s| s.pos.line),
                    "column": d.span.as_ref().map(|s| s.pos.col),
                    "help": d.help,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "valid": result.is_ok(), "diagnostics": items })
            )
            .unwrap_or_default()
        );
    } else {
        eprint!("{diags}");
    }
    let outcome = match &result {
        Ok((plan, _)) => {
            if !json {
                println!(
                    "{} is valid: {} environment(s), {} service(s), {} stage(s), {} step(s)",
                    path.display(),
                    plan.environments.len(),
                    plan.services.len(),
                    plan.stages.len(),
                    plan.steps().count()
                );
            }
            Ok(exit::SUCCESS)
        }
        Err(d) => {
            if !json {
                let n = d.error_count();
                eprintln!(
                    "error: {} has {n} error{}",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                );
            }
            Ok(exit::INVALID)
        }
    };
    // A large plan's tree takes a while to free, and the process ends now anyway.
    std::mem::forget(result);
    outcome
}

pub fn print_plan(plan: &Plan, scope: &Scope) {
    let mut out = String::new();
    let push = |out: &mut String, s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    push(
        &mut out,
        format!(
            "plan: {} -> {} (release {}, sha {})",
            plan.project,
            scope.environment,
            scope.release.version,
            short_sha(&scope.release.sha)
        ),
    );
    push(&mut out, format!("plan hash: {}", plan.hash));
    if !scope.vars.is_empty() {
        push(&mut out, "vars:".into());
        for (k, v) in &scope.vars {
            push(&mut out, format!("  {k} = {}", scope.scrubber().scrub(v)));
        }
    }
    if !scope.secrets.is_empty() {
        push(&mut out, "secrets:".into());
        for (k, v) in &scope.secrets {
            push(
                &mut out,
                format!(
                    "  {k} = {v} (from {})",
                    scope
                        .secret_sources
                        .get(k)
                        .map(String::as_str)
                        .unwrap_or("?")
                ),
            );
        }
    }
    // Notifiers by label only: their URLs and signing keys are secrets.
    let (targets, left_out) = stagegate_engine::notify::targets(plan, scope);
    if !targets.is_empty() || !left_out.is_empty() {
        push(&mut out, "notify:".into());
        for t in &targets {
            let on: Vec<&str> = t.on.iter().map(|e| e.as_str()).collect();
            push(
                &mut out,
                format!(
                    "  {}{} on {}",
                    t.label(),
                    if t.secret.is_some() { ", signed" } else { "" },
                    on.join(", ")
                ),
            );
        }
        for w in &left_out {
            push(&mut out, format!("  {}", w.trim_start_matches("warning: ")));
        }
    }
    let on_failure = plan
        .environment(&scope.environment)
        .and_then(|e| e.on_failure)
        .unwrap_or(plan.on_failure);
    push(
        &mut out,
        format!(
            "on failure: {}",
            match on_failure {
                stagegate_plan::OnFailure::Rollback => "roll back what ran, newest first",
                stagegate_plan::OnFailure::Stop => "stop and leave everything as it is",
            }
        ),
    );
    let mut n = 0;
    for stage in &plan.stages {
        push(&mut out, format!("stage {}", stage.name));
        for step in &stage.steps {
            n += 1;
            let mut line = format!("  {n:>3}. {}", step.name);
            if step.explicit_id {
                line.push_str(&format!(" [{}]", step.id));
            }
            push(&mut out, line);
            match &step.kind {
                StepKind::Deploy { service } => {
                    if let Some(svc) = plan.service(&service.value) {
                        if let Some(l) = svc.driver.local() {
                            let o = plan
                                .environment(&scope.environment)
                                .and_then(|e| e.services.get(&svc.name));
                            if let Some(b) = &l.build {
                                push(
                                    &mut out,
                                    format!(
                                        "         build: {}",
                                        scope.render_for_display(&b.value)
                                    ),
                                );
                            }
                            if !l.artifacts.is_empty() {
                                push(
                                    &mut out,
                                    format!(
                                        "         artifacts: {}",
                                        l.artifacts
                                            .iter()
                                            .map(|a| a.value.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ),
                                );
                            }
                            let start = o.and_then(|o| o.start.as_ref()).unwrap_or(&l.start);
                            push(
                                &mut out,
                                format!(
                                    "         start: {}",
                                    scope.render_for_display(&start.value)
                                ),
                            );
                            let port = o.and_then(|o| o.port).unwrap_or(l.port);
                            push(&mut out, format!("         port: {}", match port { PortMode::Auto => "auto (a free port per release; the old release runs until the deploy passes)".to_string(), PortMode::Fixed(p) => format!("{p} (the old release stops before the new one starts)") }));
                        } else if let stagegate_plan::Driver::Ssh(s) = &svc.driver {
                            let env = plan.environment(&scope.environment);
                            let hosts: Vec<String> = env
                                .map(|e| e.hosts_for(&s.hosts))
                                .unwrap_or_default()
                                .iter()
                                .map(|h| {
                                    format!(
                                        "{} ({}{}:{}, {})",
                                        h.name,
                                        h.user
                                            .as_ref()
                                            .map(|u| format!("{u}@"))
                                            .unwrap_or_default(),
                                        h.address,
                                        h.port,
                                        s.dir_on(&svc.name, h).unwrap_or_default()
                                    )
                                })
                                .collect();
                            push(
                                &mut out,
                                format!(
                                    "         driver: ssh, to {} host(s) in batches of {}",
                                    hosts.len(),
                                    s.batch.size(hosts.len())
                                ),
                            );
                            for h in &hosts {
                                push(&mut out, format!("           {h}"));
                            }
                            if let Some(b) = &s.build {
                                push(
                                    &mut out,
                                    format!(
                                        "         build: {}",
                                        scope.render_for_display(&b.value)
                                    ),
                                );
                            }
                            if !s.artifacts.is_empty() {
                                push(
                                    &mut out,
                                    format!(
                                        "         upload: {}",
                                        s.artifacts
                                            .iter()
                                            .map(|a| a.value.as_str())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ),
                                );
                            }
                            let activation = match &s.activation {
                                stagegate_plan::ssh::Activation::Unit { unit, sudo } => format!(
                                    "{}systemctl restart {}",
                                    if *sudo { "sudo -n " } else { "" },
                                    unit.value
                                ),
                                stagegate_plan::ssh::Activation::Command { start, .. } => format!(
                                    "start (in the background): {}",
                                    scope.render_for_display(&start.value)
                                ),
                            };
                            push(
                                &mut out,
                                format!(
                                    "         activate: switch current, then {activation}; health on port {}",
                                    s.port
                                ),
                            );
                        } else {
                            push(&mut out, format!("         driver: {}", svc.driver.name()));
                            if let Driver::Kubernetes(k) = &svc.driver {
                                push(
                                    &mut out,
                                    format!("         kubernetes: {}", kube_summary(k, scope)),
                                );
                            }
                        }
                        if let Some(h) = &svc.health {
                            let target = match &h.target {
                                HealthTarget::Path(p) => {
                                    format!("<release url>{}", scope.render_for_display(&p.value))
                                }
                                HealthTarget::Url(u) => scope.render_for_display(&u.value),
                            };
                            let json: Vec<String> = h
                                .json
                                .iter()
                                .map(|j| {
                                    format!(
                                        ", {} == {}",
                                        j.path.value,
                                        scope.render_for_display(&j.equals.value)
                                    )
                                })
                                .collect();
                            push(
                                &mut out,
                                format!(
                                    "         health: GET {target} expect status {:?}{} every {:?} for up to {:?}",
                                    h.status,
                                    json.join(""),
                                    h.interval,
                                    h.timeout
                                ),
                            );
                        }
                    }
                }
                other => {
                    for l in other.describe(&|t| scope.render_for_display(t)) {
                        push(&mut out, format!("         {l}"));
                    }
                }
            }
            let mut extras = Vec::new();
            if let Some(t) = step.timeout {
                extras.push(format!("timeout {t:?}"));
            }
            if step.retries > 0 {
                extras.push(format!(
                    "retries {} (every {:?})",
                    step.retries, step.retry_delay
                ));
            }
            if step.continue_on_error {
                extras.push("continue on error".into());
            }
            if let Some(w) = &step.when {
                extras.push(format!(
                    "when {}",
                    step.span
                        .source
                        .text
                        .lines()
                        .nth(w.span.pos.line - 1)
                        .map(|l| l.trim().trim_start_matches("when:").trim().to_string())
                        .unwrap_or_default()
                ));
            }
            if !extras.is_empty() {
                push(&mut out, format!("         ({})", extras.join(", ")));
            }
            if let Some(r) = &step.rollback {
                push(
                    &mut out,
                    format!("         rollback: {}", scope.render_for_display(&r.value)),
                );
            }
        }
    }
    push(&mut out, "nothing was run: this is a preview".into());
    print!("{}", scope.scrubber().scrub(&out));
}

fn short_sha(s: &str) -> &str {
    &s[..s.len().min(12)]
}

fn check_env(plan: &Plan, env: &str) -> Result<(), Failure> {
    if plan.environment(env).is_none() {
        let names = plan.environment_names();
        let hint = stagegate_plan::diagnostic::did_you_mean(env, names.iter().copied())
            .map(|s| format!("did you mean `{s}`?"))
            .unwrap_or_else(|| format!("the plan defines: {}", names.join(", ")));
        return Err(Failure::invalid(format!(
            "error: unknown environment `{env}`: {hint}"
        )));
    }
    Ok(())
}

pub async fn status(cli: &Cli, env: &str, json: bool) -> CmdResult {
    let plan = load_plan(cli)?;
    check_env(&plan, env)?;
    let store = open_store(cli, &plan).await?;
    let driver = driver_for(cli, &plan, env, std::env::current_exe().unwrap_or_default());
    let lock = store.lock_info(env).await?;
    let unfinished = store.unfinished(Some(env)).await?;
    let last = store.last_deployment(env, None).await?;
    let awaiting = crate::promote::describe_open(&store, &plan, env)
        .await?
        .map(|(_, text)| text);
    let client = health::http_client();
    let mut services = Vec::new();
    for svc in &plan.services {
        let releases = driver.observe(svc).await;
        let current = releases.iter().find(|r| r.current).cloned();
        let health = match (&current, &svc.health) {
            (Some(r), Some(h)) if r.running() => match &h.target {
                HealthTarget::Path(p) if p.value.is_literal() => {
                    let url = format!(
                        "{}{}",
                        r.meta.url,
                        stagegate_plan::Scope::prepare(&plan, env, Default::default())
                            .ok()
                            .and_then(|s| s.render(&p.value).ok())
                            .unwrap_or_default()
                    );
                    let probe = health::HealthProbe {
                        url,
                        status: h.status.clone(),
                        json: Vec::new(),
                        interval: std::time::Duration::from_secs(2),
                        timeout: std::time::Duration::from_secs(2),
                    };
                    Some(
                        health::probe_once(&client, &probe)
                            .await
                            .map(|a| format!("ok ({a})"))
                            .unwrap_or_else(|e| format!("FAILING: {e}")),
                    )
                }
                _ => None,
            },
            _ => None,
        };
        services.push((svc, releases, current, health));
    }
    if json {
        let v = serde_json::json!({
            "environment": env,
            "lock": lock,
            "unfinished": unfinished,
            "awaiting_approval": awaiting,
            "last_deployment": last,
            "services": services.iter().map(|(s, rs, cur, h)| serde_json::json!({
                "service": s.name,
                "current": cur.as_ref().map(|c| c.meta.id.clone()),
                "running": cur.as_ref().is_some_and(|c| c.running()),
                "url": cur.as_ref().map(|c| c.meta.url.clone()),
                "health": h,
                "releases": rs,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(exit::SUCCESS);
    }
    println!("environment {env} of {}", plan.project);
    match &lock {
        None => println!("  lock: free"),
        Some(l) => {
            let here = l.host == crate::context::hostname();
            let gone = stagegate_engine::session::holder_gone(l, &crate::context::hostname());
            let state = match (gone, here) {
                (false, true) => String::new(),
                (false, false) if l.lease_ms.is_some() => format!(
                    " on {}, lease renewed {} ago",
                    l.host,
                    stagegate_report::lease_silence(l)
                ),
                (false, false) => format!(" on {} (no lease: an older stagegate's)", l.host),
                (true, true) => format!(": that process is gone; run `stagegate unlock {env}`"),
                (true, false) => format!(
                    " on {}: that run is gone, its lease not renewed for {}; run `stagegate unlock {env}`",
                    l.host,
                    stagegate_report::lease_silence(l)
                ),
            };
            println!(
                "  lock: held by {} (pid {}{}) since {}{state}",
                l.holder,
                l.pid,
                l.deployment_id
                    .map(|d| format!(", deployment #{d}"))
                    .unwrap_or_default(),
                format_time_ms(l.acquired_at),
            );
        }
    }
    if let Some(a) = &awaiting {
        println!("  {a}");
    }
    for d in &unfinished {
        let steps = store.steps(d.id).await?;
        let last_step = steps
            .iter()
            .rev()
            .find(|s| s.phase == "run")
            .map(|s| format!(" at step `{}` ({})", s.step_id, s.status))
            .unwrap_or_default();
        let alive = stagegate_engine::process::pid_alive(d.pid);
        println!(
            "  unfinished: deployment #{} (release {}) started {}{}{}",
            d.id,
            d.release_version,
            format_time_ms(d.started_at),
            last_step,
            if alive {
                " is still running".to_string()
            } else {
                format!(
                    ": its process is gone and it was not rolled back; `stagegate rollback {env}` returns services to their previous release, `stagegate unlock {env}` clears it"
                )
            }
        );
    }
    if let Some(d) = &last {
        println!(
            "  last deployment: #{} {} release {} {} at {}",
            d.id,
            d.kind,
            d.release_version,
            d.outcome,
            format_time_ms(d.started_at)
        );
    }
    for (svc, releases, current, health) in &services {
        println!("service {} ({})", svc.name, svc.driver.name());
        match current {
            None => println!("  not deployed"),
            Some(r) => {
                let state = if let Some(live) = &r.live {
                    // A remote driver's word on what runs (`deployment web 3/3 available`,
                    // `running on web-1, web-2`).
                    if live.starts_with("running") {
                        live.clone()
                    } else {
                        format!("running: {live}")
                    }
                } else if r.running() {
                    format!(
                        "running, pid {}",
                        r.service_pid
                            .map(|p| p.to_string())
                            .unwrap_or_else(|| "restarting".into())
                    )
                } else {
                    "STOPPED".into()
                };
                let at = if r.meta.url.is_empty() {
                    String::new()
                } else {
                    format!(" at {}", r.meta.url)
                };
                println!(
                    "  current: {} (version {}) {state}{at}",
                    r.meta.id, r.meta.version
                );
                if r.exits > 0 {
                    println!(
                        "  the process has exited {} time(s) and was restarted; see {}",
                        r.exits,
                        r.dir.join("stderr.log").display()
                    );
                }
                if let Some(h) = health {
                    println!("  health: {h}");
                }
                if svc.driver.local().is_some() {
                    println!("  logs: {}", r.dir.display());
                } else {
                    println!("  record: {}", r.dir.display());
                }
            }
        }
        for r in releases.iter().rev() {
            println!(
                "    {} {:<10} {}{}",
                if r.current { "*" } else { " " },
                r.meta.status,
                r.meta.id,
                if let Some(live) = &r.live {
                    format!(" ({live})")
                } else if r.running() && r.meta.url.is_empty() {
                    " (running)".to_string()
                } else if r.running() {
                    format!(" (running at {})", r.meta.url)
                } else {
                    String::new()
                }
            );
        }
    }
    Ok(exit::SUCCESS)
}

pub async fn stop(cli: &Cli, env: &str, service: Option<&str>) -> CmdResult {
    let plan = load_plan(cli)?;
    check_env(&plan, env)?;
    if let Some(s) = service
        && plan.service(s).is_none()
    {
        return Err(Failure::invalid(format!(
            "error: the plan has no service `{s}`"
        )));
    }
    let store = open_store(cli, &plan).await?;
    if let Some(l) = store.lock_info(env).await?
        && !stagegate_engine::session::holder_gone(&l, &crate::context::hostname())
    {
        return Err(Failure::new(
            exit::LOCKED,
            format!(
                "error: environment `{env}` is locked by {} (pid {}); wait for the run to finish",
                l.holder, l.pid
            ),
        ));
    }
    let driver = driver_for(cli, &plan, env, std::env::current_exe().unwrap_or_default());
    let mut any = false;
    for svc in plan
        .services
        .iter()
        .rev()
        .filter(|s| service.is_none_or(|x| x == s.name))
    {
        for id in driver.stop(svc).await {
            println!("stopped {} release {id}", svc.name);
            any = true;
        }
    }
    if !any {
        println!("nothing was running in {env}");
    }
    Ok(exit::SUCCESS)
}

/// The record is worth reading even when the plan has errors: fall back to the default
/// store beside the plan file, and say so.
async fn record_only(cli: &Cli) -> Result<(stagegate_store::Store, Option<Plan>), Failure> {
    if let Ok((plan, _)) = stagegate_plan::load_file(&plan_path(cli)) {
        let store = open_store(cli, &plan).await?;
        return Ok((store, Some(plan)));
    }
    let plan_file = plan_path(cli);
    let dir = plan_file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    if let Some(store) = crate::context::open_flag_url(cli, dir).await? {
        eprintln!(
            "warning: the plan does not validate (run `stagegate validate`); reading the record in the PostgreSQL store"
        );
        return Ok((store, None));
    }
    let path = cli
        .state
        .clone()
        .unwrap_or_else(|| crate::context::default_store_path(dir));
    if !path.exists() {
        return Err(Failure::invalid(format!(
            "error: no state store at {} and the plan cannot be read; run `stagegate validate`, or pass --state",
            path.display()
        )));
    }
    eprintln!(
        "warning: the plan does not validate (run `stagegate validate`); reading the record at {}",
        path.display()
    );
    Ok((stagegate_store::Store::open(&path).await?, None))
}

pub async fn history(cli: &Cli, env: Option<&str>, limit: i64, json: bool) -> CmdResult {
    let (store, plan) = record_only(cli).await?;
    if let (Some(e), Some(plan)) = (env, &plan) {
        check_env(plan, e)?;
    }
    let list = store.deployments(env, limit).await?;
    let mut overrides = Vec::with_capacity(list.len());
    for d in &list {
        overrides.push(gate_overrides(&store, d.id).await?);
    }
    if json {
        let rows: Vec<serde_json::Value> = list
            .iter()
            .zip(&overrides)
            .map(|(d, o)| {
                let mut v = serde_json::to_value(d).unwrap_or_default();
                if !o.is_empty()
                    && let Some(m) = v.as_object_mut()
                {
                    m.insert("overrides".into(), serde_json::json!(o));
                }
                v
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        );
        return Ok(exit::SUCCESS);
    }
    if list.is_empty() {
        println!(
            "no deployments recorded{}",
            env.map(|e| format!(" for {e}")).unwrap_or_default()
        );
        return Ok(exit::SUCCESS);
    }
    println!(
        "{:>5}  {:<12} {:<9} {:<20} {:<17} {:<20} {:>8}  BY",
        "ID", "ENV", "KIND", "RELEASE", "OUTCOME", "STARTED", "TOOK"
    );
    for (d, overridden) in list.into_iter().zip(overrides) {
        let took = d
            .finished_at
            .map(|f| format_duration_ms((f - d.started_at).max(0) as u64))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:>5}  {:<12} {:<9} {:<20} {:<17} {:<20} {:>8}  {}",
            format!("#{}", d.id),
            d.environment,
            d.kind,
            d.release_version,
            d.outcome.as_str(),
            format_time_ms(d.started_at),
            took,
            d.actor
        );
        if d.kind == crate::promote::REQUEST
            && let Some(sum) = &d.summary
        {
            println!("{:>5}  {sum}", "");
        }
        for o in overridden {
            println!(
                "{:>5}  gate `{}` overridden by {} at {}: {}",
                "",
                o["step"].as_str().unwrap_or(""),
                o["by"].as_str().unwrap_or(""),
                o["at"].as_str().unwrap_or(""),
                o["reason"].as_str().unwrap_or("")
            );
        }
    }
    Ok(exit::SUCCESS)
}

/// The gates of a deployment that failed and were passed with `--override`.
async fn gate_overrides(
    store: &stagegate_store::Store,
    id: i64,
) -> Result<Vec<serde_json::Value>, Failure> {
    Ok(store
        .steps(id)
        .await?
        .iter()
        .filter(|s| s.kind == "gate")
        .filter_map(|s| {
            let o = StepDetails::from_json(&s.details).gate()?.overridden.clone()?;
            Some(serde_json::json!({ "step": s.step_id, "by": o.by, "at": o.at, "reason": o.reason }))
        })
        .collect())
}

/// A gate's evidence under its step in `show`.
fn print_gate_evidence(s: &stagegate_store::StepRun) {
    if s.kind != "gate" {
        return;
    }
    let details = StepDetails::from_json(&s.details);
    let Some(e) = details.gate() else {
        return;
    };
    for l in evidence_text(e).lines() {
        println!("        {l}");
    }
}

pub async fn show(cli: &Cli, id: i64, json: bool) -> CmdResult {
    let (store, plan) = record_only(cli).await?;
    let Some(d) = store.deployment(id).await? else {
        return Err(Failure::new(
            exit::INVALID,
            format!("error: there is no deployment #{id}; `stagegate history` lists them"),
        ));
    };
    let steps = store.steps(id).await?;
    if json {
        // Every sample of its bakes, round by round (the measurements' names and order are
        // in each watch step's details).
        let rounds: Vec<serde_json::Value> = if steps.iter().any(|s| s.kind == "watch") {
            store
                .events(id)
                .await?
                .into_iter()
                .filter(|e| e.kind == "measurement_round")
                .map(|e| e.data)
                .collect()
        } else {
            Vec::new()
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "deployment": d,
                "steps": steps,
                "measurement_rounds": rounds,
            }))
            .unwrap_or_default()
        );
        return Ok(exit::SUCCESS);
    }
    println!(
        "deployment #{} of {} to {} ({})",
        d.id, d.project, d.environment, d.kind
    );
    println!(
        "  release: {} (sha {})",
        d.release_version,
        short_sha(&d.release_sha)
    );
    println!("  plan hash: {}", d.plan_hash);
    println!("  by {} on {} (pid {})", d.actor, d.host, d.pid);
    println!(
        "  started {}{}",
        format_time_ms(d.started_at),
        d.finished_at
            .map(|f| format!(
                ", took {}",
                format_duration_ms((f - d.started_at).max(0) as u64)
            ))
            .unwrap_or_default()
    );
    println!(
        "  outcome: {}{}",
        d.outcome,
        d.exit_code
            .map(|c| format!(" (exit {c})"))
            .unwrap_or_default()
    );
    if let Some(s) = &d.summary {
        for l in s.lines() {
            println!("  {l}");
        }
    }
    println!("steps:");
    for s in &steps {
        println!(
            "  {:>3} {:<9} {:<10} {:<40} {:>8}{}",
            s.seq,
            s.phase,
            s.status,
            format!("{} [{}]", s.name, s.step_id),
            s.duration_ms
                .map(|d| format_duration_ms(d as u64))
                .unwrap_or_else(|| "-".into()),
            s.exit_code
                .map(|c| format!("  exit {c}"))
                .unwrap_or_default()
        );
        print_gate_evidence(s);
        // A check lists its assertions; its error then needs only its headline.
        let details = StepDetails::from_json(&s.details);
        let assertions = details.assertions();
        if let Some(e) = &s.error {
            match stagegate_report::checks::error_headline(e).filter(|_| !assertions.is_empty()) {
                Some(head) => println!("        {head}"),
                None => {
                    for l in e.lines() {
                        println!("        {l}");
                    }
                }
            }
        }
        if let Some(r) = details.check().and_then(|c| c.repeat.as_ref()) {
            println!(
                "        {} requests, {} at a time: {} passed every assertion, {} errors, {:.0} checks/s",
                r.sent, r.concurrency, r.passed, r.errors, r.checks_per_second
            );
        }
        if let Some(l) = details.load() {
            for line in stagegate_report::load::lines(&l.load) {
                println!("        {line}");
            }
        }
        if let Some(w) = details.watch() {
            for line in stagegate_report::watch::lines(w) {
                println!("        {line}");
            }
        }
        if let Some(m) = details.migrate() {
            for line in stagegate_report::migrate::lines(m, s.error.as_deref()) {
                println!("        {line}");
            }
        }
        for a in assertions {
            println!(
                "        {} {}",
                stagegate_report::checks::mark(a.passed),
                a.line()
            );
        }
        if s.status != "passed"
            && !s.output_tail.is_empty()
            && s.kind != "load"
            && s.kind != "watch"
        {
            for l in s
                .output_tail
                .lines()
                .rev()
                .take(10)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                println!("        | {l}");
            }
        }
    }
    let logs = plan
        .as_ref()
        .map(|p| state_dir(cli, p).join("logs").join(id.to_string()));
    if let Some(logs) = logs.filter(|l| l.is_dir()) {
        println!("full step logs: {}", logs.display());
    }
    Ok(exit::SUCCESS)
}

pub async fn unlock(cli: &Cli, env: &str, force: bool, reason: Option<&str>) -> CmdResult {
    let plan = load_plan(cli)?;
    check_env(&plan, env)?;
    if reason.is_some_and(|r| r.trim().is_empty()) {
        return Err(Failure::invalid(
            "error: --reason is empty; say why the lock is broken (it is recorded in the audit log)",
        ));
    }
    let store = open_store(cli, &plan).await?;
    let lock = store.lock_info(env).await?;
    if let Some(l) = &lock
        && !force
    {
        if l.host != crate::context::hostname() && !l.lease_expired() {
            let lease = match l.lease_ms {
                Some(_) => format!(
                    "its lease was renewed {} ago, so it looks alive",
                    stagegate_report::lease_silence(l)
                ),
                None => "stagegate cannot see whether that run still goes".to_string(),
            };
            return Err(Failure::new(
                exit::LOCKED,
                format!(
                    "error: environment `{env}` is locked by {} (pid {}) on another host, {}; {lease}.\n  \
                     = help: check on {}, then `stagegate unlock {env} --force --reason \"...\"`",
                    l.holder, l.pid, l.host, l.host
                ),
            ));
        }
        if l.host == crate::context::hostname() && stagegate_engine::session::holder_alive(l) {
            return Err(Failure::new(
                exit::LOCKED,
                format!(
                    "error: environment `{env}` is locked by a run that is still going (pid {}); stop it first (Ctrl-C or `kill {}`), it rolls back and unlocks\n  \
                     = help: if that process is not stagegate, `stagegate unlock {env} --force --reason \"...\"`",
                    l.pid, l.pid
                ),
            ));
        }
    }
    let note = stagegate_store::LockBreak {
        by: crate::context::actor(None),
        reason: reason.map(str::to_string),
        forced: force,
        at: stagegate_store::now_millis(),
    };
    let removed = store.break_lock(env, &note).await?;
    stagegate_engine::session::reap_unfinished(
        &store,
        env,
        &crate::context::hostname(),
        &mut |n| eprintln!("{}", stagegate_report::describe_notice(n)),
    )
    .await?;
    match removed {
        Some(l) => println!(
            "unlocked {env}: removed the lock of {} (pid {}) taken {}{}",
            l.holder,
            l.pid,
            format_time_ms(l.acquired_at),
            if l.lease_expired() {
                format!(
                    "; its lease had not been renewed for {}",
                    stagegate_report::lease_silence(&l)
                )
            } else {
                String::new()
            }
        ),
        None => println!("{env} was not locked"),
    }
    Ok(exit::SUCCESS)
}

/// What the kubernetes driver will do, in one line: `apply k8s/ to namespace web (context
/// staging), wait for deployment/web (5m)`.
fn kube_summary(k: &stagegate_plan::KubeService, scope: &stagegate_plan::Scope) -> String {
    let show = |t: &Option<stagegate_plan::Spanned<stagegate_plan::Template>>, none: &str| {
        t.as_ref()
            .map(|t| scope.render_for_display(&t.value))
            .unwrap_or_else(|| none.to_string())
    };
    let files: Vec<&str> = k.manifests.iter().map(|m| m.value.as_str()).collect();
    let waits = if k.deployments.is_empty() {
        "every Deployment in them".to_string()
    } else {
        k.deployments
            .iter()
            .map(|d| format!("deployment/{}", d.value))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "server-side apply {} to namespace {} (context {}), wait for the rollout of {waits} ({}s)",
        files.join(", "),
        show(&k.namespace, "<the context's>"),
        show(&k.context, "<current>"),
        k.timeout.as_secs()
    )
}
