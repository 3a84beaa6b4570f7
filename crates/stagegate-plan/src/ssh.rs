//! The `ssh` driver's settings: hosts per environment, and a service's release directory,
//! activation and rolling batches.
//!
//! ```yaml
//! environments:
//!   staging:
//!     hosts:
//!       web-1: { address: 10.0.0.11, user: deploy, roles: [web] }
//!       web-2: { address: 10.0.0.12, user: deploy, roles: [web] }
//!
//! services:
//!   api:
//!     driver: ssh
//!     hosts: [web]                 # host names or roles (default: every host)
//!     build: make dist
//!     artifacts: [dist/api]
//!     dir: /srv/api                # releases/ID, a `current` symlink, a lock
//!     unit: api.service            # systemctl restart; or `start:` run by stagegate
//!     port: 8080
//!     batch: 1                     # or "25%": hosts per batch, health-checked per batch
//!     health: { path: /health }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, Node};

use crate::build::{is_name, template_field, template_map};
use crate::diagnostic::{Span, did_you_mean};
use crate::model::{Driver, Environment, Service};
use crate::template::Template;
use crate::yaml::{Cx, Spanned};

/// The `ssh` driver's own keys of a service.
pub(crate) const SSH_KEYS: &[&str] = &[
    "build",
    "artifacts",
    "dir",
    "start",
    "unit",
    "sudo",
    "stop",
    "env",
    "port",
    "hosts",
    "batch",
    "keep",
    "stop_timeout",
];
const HOST_KEYS: &[&str] = &[
    "address",
    "port",
    "user",
    "identity",
    "known_hosts",
    "host_key_check",
    "roles",
    "dir",
    "connect_timeout",
];

/// A service deployed to hosts over SSH.
#[derive(Debug, Clone)]
pub struct SshService {
    /// Run in the plan directory (on this machine) before anything is uploaded.
    pub build: Option<Spanned<Template>>,
    /// Files or directories (relative to the plan directory) uploaded into the release.
    pub artifacts: Vec<Spanned<String>>,
    /// The service's directory on the hosts (a host's `dir` puts it at `HOSTDIR/SERVICE`):
    /// `DIR/releases/ID`, `DIR/current -> releases/ID`, `DIR/.stagegate-lock`.
    pub dir: Option<Spanned<String>>,
    pub activation: Activation,
    pub env: BTreeMap<String, Spanned<Template>>,
    /// Where the service listens on each host: the health check goes to `ADDRESS:PORT`.
    pub port: u16,
    /// Host names or roles; empty: every host of the environment.
    pub hosts: Vec<Spanned<String>>,
    pub batch: Batch,
    /// How many releases stay on the hosts (the current one included).
    pub keep: usize,
    /// How long a stopped service may take before it is killed (`start:` services).
    pub stop_timeout: Duration,
}

/// How a release becomes the running one on a host.
#[derive(Debug, Clone)]
pub enum Activation {
    /// `systemctl restart UNIT` (with `sudo -n` when asked) after `current` switched; the
    /// unit runs `DIR/current/...`.
    Unit { unit: Spanned<String>, sudo: bool },
    /// A long-running command that stagegate starts in the release directory, in the
    /// background with its own process group and log (`service.log`), and stops with TERM
    /// (then KILL after `stop_timeout`), unless a `stop` command is given.
    Command {
        start: Spanned<Template>,
        stop: Option<Spanned<Template>>,
    },
}

/// How many hosts take a release at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Count(usize),
    Percent(u8),
}

impl Batch {
    /// The batch size for `hosts` hosts: at least one.
    pub fn size(&self, hosts: usize) -> usize {
        match *self {
            Batch::Count(n) => n.max(1),
            Batch::Percent(p) => (hosts * p as usize).div_ceil(100).max(1),
        }
    }
}

/// A host of an environment.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub span: Span,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    /// A private key file (`~/` expanded, relative to the plan directory otherwise).
    pub identity: Option<String>,
    /// A known_hosts file to check the host's key against (default: ssh's own files).
    pub known_hosts: Option<String>,
    pub host_key_check: HostKeyCheck,
    pub roles: Vec<String>,
    /// A directory on this host for every ssh service's files: a service's directory is
    /// then `DIR/SERVICE` instead of the service's `dir` (hosts that share a disk).
    pub dir: Option<String>,
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyCheck {
    /// The host's key must be known already (the default).
    Strict,
    /// A host seen for the first time is added to known_hosts; a changed key is refused.
    AcceptNew,
}

impl Environment {
    /// The hosts a service names (names or roles), in the environment's order; all of them
    /// when it names none.
    pub fn hosts_for(&self, wanted: &[Spanned<String>]) -> Vec<&Host> {
        select_hosts(&self.hosts, wanted)
    }
}

/// The hosts that `wanted` (host names or roles) names, in their order; all of them when
/// it names none.
pub fn select_hosts<'a>(hosts: &'a [Host], wanted: &[Spanned<String>]) -> Vec<&'a Host> {
    hosts
        .iter()
        .filter(|h| {
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|w| w.value == h.name || h.roles.contains(&w.value))
        })
        .collect()
}

/// A remote path stagegate may put in a shell command without quoting surprises: absolute,
/// of plain characters, with no `..`.
pub fn plain_remote_dir(dir: &str) -> bool {
    dir.starts_with('/')
        && dir.len() > 1
        && dir
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
        && !dir.split('/').any(|c| c == "..")
}

pub(crate) fn read_ssh(cx: &mut Cx, m: &MarkedMappingNode, what: &str, span: &Span) -> Driver {
    let start = template_field(cx, m, "start", what);
    let unit = cx.string(m, "unit", what);
    let stop = template_field(cx, m, "stop", what);
    let sudo = cx.bool(m, "sudo", what).unwrap_or(false);
    let activation = match (start, unit) {
        (Some(start), None) => Activation::Command { start, stop },
        (None, Some(unit)) => {
            if !unit
                .value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ':'))
                || unit.value.is_empty()
            {
                cx.error_help(
                    format!(
                        "`unit` in {what} is not a systemd unit name: `{}`",
                        unit.value
                    ),
                    unit.span.clone(),
                    "write the unit's name, like `api.service`",
                );
            }
            if let Some(s) = &stop {
                cx.error_help(
                    format!("{what} has both `unit` and `stop`"),
                    s.span.clone(),
                    "a unit is stopped with `systemctl stop UNIT`; remove `stop`",
                );
            }
            Activation::Unit { unit, sudo }
        }
        (Some(s), Some(u)) => {
            cx.error_help(
                format!("{what} has both `start` and `unit`"),
                u.span.clone(),
                "use `unit: NAME` when systemd runs the service, or `start:` to have stagegate run it",
            );
            Activation::Command { start: s, stop }
        }
        (None, None) => {
            cx.error_help(
                format!("{what} has no `unit` or `start`"),
                span.clone(),
                "add `unit: api.service` (systemctl restart after the switch) or `start: ./api` (run by stagegate in the release directory)",
            );
            Activation::Command {
                start: Spanned {
                    value: Template::default(),
                    span: span.clone(),
                },
                stop,
            }
        }
    };
    let dir = cx.string(m, "dir", what);
    if let Some(d) = &dir
        && !plain_remote_dir(&d.value)
    {
        cx.error_help(
            format!(
                "`dir` in {what} must be an absolute path of plain characters, found `{}`",
                d.value
            ),
            d.span.clone(),
            "write a path like `/srv/api`: letters, digits, `/`, `.`, `_` and `-`, no `..`",
        );
    }
    let port = match cx.uint(m, "port", what) {
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(p) => {
            let s = m
                .get_node("port")
                .map(|n| cx.span(n))
                .unwrap_or(span.clone());
            cx.error_help(
                format!("`port` in {what} must be from 1 to 65535, found {p}"),
                s,
                "the port the service listens on, on each host",
            );
            0
        }
        None => {
            if m.get_node("port").is_none() {
                cx.error_help(
                    format!("{what} has no `port`"),
                    span.clone(),
                    "add `port: 8080`: the port the service listens on, on each host (its health check goes there)",
                );
            }
            0
        }
    };
    let keep = cx.uint(m, "keep", what).unwrap_or(3);
    if keep < 2
        && let Some(n) = m.get_node("keep")
    {
        cx.error_help(
            format!("`keep` in {what} must be at least 2"),
            cx.span(n),
            "the previous release must stay on the hosts for rollback",
        );
    }
    let artifacts = cx.string_list(m, "artifacts", what);
    for a in &artifacts {
        if std::path::Path::new(&a.value).is_absolute() || a.value.split('/').any(|c| c == "..") {
            cx.error_help(
                format!(
                    "artifact `{}` must be a path inside the plan directory",
                    a.value
                ),
                a.span.clone(),
                "artifacts are uploaded into the release directory under the same relative path",
            );
        }
    }
    Driver::Ssh(SshService {
        build: template_field(cx, m, "build", what),
        artifacts,
        dir,
        activation,
        env: template_map(cx, m, "env", what),
        port,
        hosts: cx.string_list(m, "hosts", what),
        batch: read_batch(cx, m, what),
        keep: keep.max(2) as usize,
        stop_timeout: cx
            .duration(m, "stop_timeout", what)
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(10)),
    })
}

fn read_batch(cx: &mut Cx, m: &MarkedMappingNode, what: &str) -> Batch {
    let Some(s) = cx.string(m, "batch", what) else {
        return Batch::Count(1);
    };
    let v = s.value.trim();
    let parsed = match v.strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| (1..=100).contains(p))
            .map(Batch::Percent),
        None => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .map(Batch::Count),
    };
    parsed.unwrap_or_else(|| {
        cx.error_help(
            format!("`batch` in {what} must be a host count or a percentage, found `{v}`"),
            s.span.clone(),
            "write `batch: 1` (one host at a time) or `batch: \"25%\"`",
        );
        Batch::Count(1)
    })
}

/// Reads an environment's `hosts:` (a mapping of names to an address or a mapping).
pub(crate) fn read_hosts(cx: &mut Cx, n: &Node, env: &str) -> Vec<Host> {
    let what = format!("`hosts` in environment `{env}`");
    let Some(m) = cx.mapping(n, &what) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in m.iter() {
        let name = k.as_str().to_string();
        let span = cx.key_span(k);
        let hwhat = format!("host `{name}` of environment `{env}`");
        if !is_name(&name) {
            cx.error_help(
                format!("`{name}` is not a valid host name in {what}"),
                span.clone(),
                "use letters, digits, `-` and `_` (the address goes under `address:`)",
            );
        }
        let mut host = Host {
            name: name.clone(),
            span: span.clone(),
            address: String::new(),
            port: 22,
            user: None,
            identity: None,
            known_hosts: None,
            host_key_check: HostKeyCheck::Strict,
            roles: Vec::new(),
            dir: None,
            connect_timeout: Duration::from_secs(10),
        };
        if let Node::Scalar(s) = v {
            host.address = s.as_str().to_string();
        } else if let Some(hm) = cx.mapping(v, &hwhat) {
            cx.keys(hm, &hwhat, HOST_KEYS);
            match cx.string(hm, "address", &hwhat) {
                Some(a) => host.address = a.value,
                None => cx.error_help(
                    format!("{hwhat} has no `address`"),
                    span.clone(),
                    "add `address: 10.0.0.11` (an IP address or a DNS name)",
                ),
            }
            if let Some(p) = cx.uint(hm, "port", &hwhat) {
                match u16::try_from(p) {
                    Ok(p) if p > 0 => host.port = p,
                    _ => {
                        let s = hm
                            .get_node("port")
                            .map(|n| cx.span(n))
                            .unwrap_or(span.clone());
                        cx.error(format!("`port` in {hwhat} must be from 1 to 65535"), s);
                    }
                }
            }
            host.user = cx.string(hm, "user", &hwhat).map(|s| s.value);
            host.identity = cx.string(hm, "identity", &hwhat).map(|s| s.value);
            host.known_hosts = cx.string(hm, "known_hosts", &hwhat).map(|s| s.value);
            if let Some(c) = cx.string(hm, "host_key_check", &hwhat) {
                host.host_key_check = match c.value.as_str() {
                    "strict" => HostKeyCheck::Strict,
                    "accept-new" => HostKeyCheck::AcceptNew,
                    other => {
                        cx.error_help(
                            format!("`host_key_check` in {hwhat} must be `strict` or `accept-new`, found `{other}`"),
                            c.span.clone(),
                            "`strict` (the default) refuses a host whose key is not in known_hosts",
                        );
                        HostKeyCheck::Strict
                    }
                };
            }
            host.roles = cx
                .string_list(hm, "roles", &hwhat)
                .into_iter()
                .map(|s| s.value)
                .collect();
            if let Some(d) = cx.string(hm, "dir", &hwhat) {
                if !plain_remote_dir(&d.value) {
                    cx.error_help(
                        format!("`dir` in {hwhat} must be an absolute path of plain characters, found `{}`", d.value),
                        d.span.clone(),
                        "write a path like `/srv/api`: letters, digits, `/`, `.`, `_` and `-`, no `..`",
                    );
                }
                host.dir = Some(d.value);
            }
            if let Some(t) = cx.duration(hm, "connect_timeout", &hwhat) {
                host.connect_timeout = t.value;
            }
        }
        let a = &host.address;
        if !a.is_empty()
            && (a.starts_with('-')
                || !a
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_')))
        {
            cx.error_help(
                format!("the address of {hwhat} is not a host name or IP address: `{a}`"),
                span.clone(),
                "write an IP address or a DNS name; the user goes under `user:`, the port under `port:`",
            );
        }
        out.push(host);
    }
    out
}

/// Every `ssh` service has hosts in every environment, names only hosts or roles that
/// exist, and has a directory on each of them.
pub(crate) fn check_hosts(cx: &mut Cx, services: &[Service], environments: &[Environment]) {
    for svc in services {
        let Driver::Ssh(s) = &svc.driver else {
            continue;
        };
        for env in environments {
            if env.hosts.is_empty() {
                cx.error_help(
                    format!(
                        "service `{}` is deployed over ssh but environment `{}` has no `hosts`",
                        svc.name, env.name
                    ),
                    env.span.clone(),
                    "add `hosts: { web-1: { address: 10.0.0.11, user: deploy } }` to the environment",
                );
                continue;
            }
            for w in &s.hosts {
                let known = env
                    .hosts
                    .iter()
                    .any(|h| h.name == w.value || h.roles.contains(&w.value));
                if !known {
                    let names: Vec<&str> = env
                        .hosts
                        .iter()
                        .map(|h| h.name.as_str())
                        .chain(
                            env.hosts
                                .iter()
                                .flat_map(|h| h.roles.iter().map(String::as_str)),
                        )
                        .collect();
                    let help = did_you_mean(&w.value, names.iter().copied())
                        .map(|x| format!("did you mean `{x}`?"))
                        .unwrap_or_else(|| {
                            format!("hosts and roles of `{}`: {}", env.name, names.join(", "))
                        });
                    cx.error_help(
                        format!(
                            "service `{}` names `{}`, which is neither a host nor a role in environment `{}`",
                            svc.name, w.value, env.name
                        ),
                        w.span.clone(),
                        help,
                    );
                }
            }
            if s.dir.is_none() {
                for h in env.hosts_for(&s.hosts) {
                    if h.dir.is_none() {
                        cx.error_help(
                            format!(
                                "service `{}` has no `dir`, and host `{}` of environment `{}` has none either",
                                svc.name, h.name, env.name
                            ),
                            svc.span.clone(),
                            "add `dir: /srv/NAME` to the service: releases go to DIR/releases, with a `current` symlink",
                        );
                    }
                }
            }
        }
    }
}

impl SshService {
    /// The service's directory on `host`.
    pub fn dir_on(&self, service: &str, host: &Host) -> Option<String> {
        match &host.dir {
            Some(d) => Some(format!("{}/{service}", d.trim_end_matches('/'))),
            None => self
                .dir
                .as_ref()
                .map(|d| d.value.trim_end_matches('/').to_string()),
        }
    }
}
