//! The `docker` and `compose` drivers' settings of a service.
//!
//! ```yaml
//! services:
//!   erp:
//!     driver: docker
//!     image: erp-hub:${{ release.version }}   # tagged by version (or by `release.sha`)
//!     build: .                                # optional: `docker build` this context first
//!     port: 8000                              # the container's port
//!     host_port: 8000                         # optional: published at this fixed port
//!     env: { BLOB_KEY: "${{ secrets.BLOB_KEY }}" }
//!     health: { path: /health }
//!
//!   trading:
//!     driver: compose
//!     file: docker-compose.staging.yml
//!     images:                                 # compose service -> image, per release
//!       signal_service: trading-signal:${{ release.sha }}
//!     env: { DB_PASSWORD: "${{ secrets.DB_PASSWORD }}" }
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use marked_yaml::types::{MarkedMappingNode, Node};

use crate::build::{template, template_field, template_map};
use crate::diagnostic::{Diagnostic, Span};
use crate::template::Template;
use crate::yaml::{Cx, Spanned};

/// The `docker` driver's own keys of a service.
pub(crate) const DOCKER_KEYS: &[&str] = &[
    "image",
    "build",
    "container",
    "port",
    "host_port",
    "bind",
    "env",
    "args",
    "network",
    "volumes",
    "keep",
    "stop_timeout",
    "timeout",
    "init",
];

/// The `compose` driver's own keys of a service.
pub(crate) const COMPOSE_KEYS: &[&str] = &[
    "file", "project", "images", "env", "services", "keep", "timeout",
];

/// A service run as one container per release on the Docker engine `DOCKER_HOST` names.
#[derive(Debug, Clone)]
pub struct DockerService {
    /// The image the release runs (and the tag a `build` gets).
    pub image: Spanned<Template>,
    /// Build the image from this context before running it.
    pub build: Option<DockerBuild>,
    /// The containers' name; each release's container is `NAME-RELEASE`
    /// (default: `PROJECT-ENVIRONMENT-SERVICE`).
    pub container: Option<Spanned<String>>,
    /// The port the container listens on (its health check goes there).
    pub port: Option<u16>,
    /// Publish the port at this fixed host port. A new release then starts after the old
    /// one stops; without it the port is published at a free loopback port and the new
    /// container starts beside the old one.
    pub host_port: Option<u16>,
    /// The host address a fixed `host_port` is published on.
    pub bind: Option<Spanned<String>>,
    pub env: BTreeMap<String, Spanned<Template>>,
    /// Arguments after the image (the image's command by default).
    pub args: Vec<Spanned<Template>>,
    pub network: Option<Spanned<String>>,
    /// `HOST:CONTAINER[:ro]` or `VOLUME:CONTAINER` mounts.
    pub volumes: Vec<Spanned<String>>,
    /// How many containers to keep (the current one included) for rollback.
    pub keep: usize,
    pub stop_timeout: Duration,
    /// How long the container may take to become healthy (its own HEALTHCHECK).
    pub timeout: Duration,
    /// Run an init process as the container's PID 1 (`--init`), which passes signals on, so
    /// a program without a SIGTERM handler stops at once.
    pub init: bool,
}

#[derive(Debug, Clone)]
pub struct DockerBuild {
    /// The build context, relative to the plan file.
    pub context: Spanned<String>,
    /// The Dockerfile, relative to the plan file (default: `CONTEXT/Dockerfile`).
    pub dockerfile: Option<Spanned<String>>,
}

/// A service that is a Compose project: every release is `up -d` of the compose files
/// with the release's image tags.
#[derive(Debug, Clone)]
pub struct ComposeService {
    /// Compose files, relative to the plan file.
    pub files: Vec<Spanned<String>>,
    /// The Compose project (default: `PROJECT-ENVIRONMENT`).
    pub project: Option<Spanned<Template>>,
    /// Compose service -> the image this release runs there.
    pub images: BTreeMap<String, Spanned<Template>>,
    /// Variables the compose files interpolate (`${DB_PASSWORD}`).
    pub env: BTreeMap<String, Spanned<Template>>,
    /// The compose services waited on (default: every one with a container).
    pub services: Vec<Spanned<String>>,
    pub keep: usize,
    /// How long the containers may take to run and become healthy.
    pub timeout: Duration,
}

impl DockerService {
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        std::iter::once(&self.image)
            .chain(self.env.values())
            .chain(self.args.iter())
            .collect()
    }
}

impl ComposeService {
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        self.project
            .iter()
            .chain(self.images.values())
            .chain(self.env.values())
            .collect()
    }
}

/// A name Docker accepts for a container or a Compose project.
pub fn is_docker_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn inside_plan(cx: &mut Cx, p: &Spanned<String>, what: &str, key: &str) {
    let path = Path::new(&p.value);
    if path.is_absolute() || p.value.split('/').any(|c| c == "..") || p.value.is_empty() {
        cx.error_help(
            format!(
                "`{key}` `{}` of {what} must be a path inside the plan directory",
                p.value
            ),
            p.span.clone(),
            "paths are read relative to the plan file",
        );
    }
}

fn port(cx: &mut Cx, m: &MarkedMappingNode, key: &str, what: &str) -> Option<u16> {
    let p = cx.uint(m, key, what)?;
    if (1..=65535).contains(&p) {
        return Some(p as u16);
    }
    let span = cx.span(m.get_node(key)?);
    cx.error_help(
        format!("`{key}` in {what} must be from 1 to 65535, found {p}"),
        span,
        "a TCP port number",
    );
    None
}

fn keep(cx: &mut Cx, m: &MarkedMappingNode, what: &str, default: u64) -> usize {
    let keep = cx.uint(m, "keep", what).unwrap_or(default);
    if keep < 2
        && let Some(n) = m.get_node("keep")
    {
        cx.error_help(
            format!("`keep` in {what} must be at least 2"),
            cx.span(n),
            "the previous release must stay for rollback",
        );
    }
    keep.max(2) as usize
}

fn read_build(cx: &mut Cx, n: &Node, what: &str) -> Option<DockerBuild> {
    let b = match n {
        Node::Mapping(bm) => {
            cx.keys(
                bm,
                &format!("`build` in {what}"),
                &["context", "dockerfile"],
            );
            let context = cx.string(bm, "context", &format!("`build` in {what}"));
            let Some(context) = context else {
                cx.error_help(
                    format!("`build` in {what} has no `context`"),
                    cx.span(n),
                    "write `build: .` or `build: { context: ., dockerfile: Dockerfile }`",
                );
                return None;
            };
            DockerBuild {
                context,
                dockerfile: cx.string(bm, "dockerfile", &format!("`build` in {what}")),
            }
        }
        _ => DockerBuild {
            context: cx.scalar(n, &format!("`build` in {what}"))?,
            dockerfile: None,
        },
    };
    inside_plan(cx, &b.context, what, "build");
    if let Some(d) = &b.dockerfile {
        inside_plan(cx, d, what, "dockerfile");
    }
    Some(b)
}

pub(crate) fn read_docker(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    span: &Span,
) -> DockerService {
    let image = template_field(cx, m, "image", what).unwrap_or_else(|| {
        if m.get_node("image").is_none() {
            cx.error_help(
                format!("{what} has no `image`"),
                span.clone(),
                "add `image: NAME:${{ release.version }}`: the image each release runs (with `build: .` stagegate builds it)",
            );
        }
        Spanned {
            value: Template::default(),
            span: span.clone(),
        }
    });
    let build = m.get_node("build").and_then(|n| read_build(cx, n, what));
    let container = cx.string(m, "container", what);
    if let Some(c) = &container
        && !is_docker_name(&c.value)
    {
        cx.error_help(
            format!(
                "`container` in {what} is not a container name: `{}`",
                c.value
            ),
            c.span.clone(),
            "use letters, digits, `_`, `.` and `-`, starting with a letter or digit",
        );
    }
    let args = match m.get_node("args") {
        None => Vec::new(),
        Some(_) => cx
            .string_list(m, "args", what)
            .into_iter()
            .filter_map(|s| template(cx, s))
            .collect(),
    };
    let host_port = port(cx, m, "host_port", what);
    let port = port(cx, m, "port", what);
    if host_port.is_some() && port.is_none() && m.get_node("port").is_none() {
        cx.error_help(
            format!("{what} has a `host_port` but no `port`"),
            span.clone(),
            "add `port: 8000`: the port inside the container that `host_port` publishes",
        );
    }
    let bind = cx.string(m, "bind", what);
    if let Some(b) = &bind
        && b.value.parse::<std::net::IpAddr>().is_err()
    {
        cx.error_help(
            format!(
                "`bind` in {what} must be an IP address, found `{}`",
                b.value
            ),
            b.span.clone(),
            "write `0.0.0.0` (every interface) or `127.0.0.1`",
        );
    }
    let volumes = cx.string_list(m, "volumes", what);
    for v in &volumes {
        if !v.value.contains(':') || v.value.starts_with('-') {
            cx.error_help(
                format!("volume `{}` of {what} is not `SOURCE:TARGET`", v.value),
                v.span.clone(),
                "write `data:/var/lib/app` or `/srv/conf:/etc/app:ro`",
            );
        }
    }
    let network = cx.string(m, "network", what);
    if let Some(n) = &network
        && !is_docker_name(&n.value)
    {
        cx.error_help(
            format!("`network` in {what} is not a network name: `{}`", n.value),
            n.span.clone(),
            "name a Docker network: letters, digits, `_`, `.` and `-`",
        );
    }
    DockerService {
        image,
        build,
        container,
        port,
        host_port,
        bind,
        env: template_map(cx, m, "env", what),
        args,
        network,
        volumes,
        keep: keep(cx, m, what, 3),
        stop_timeout: cx
            .duration(m, "stop_timeout", what)
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(10)),
        timeout: cx
            .duration(m, "timeout", what)
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(120)),
        init: cx.bool(m, "init", what).unwrap_or(true),
    }
}

pub(crate) fn read_compose(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    span: &Span,
) -> ComposeService {
    let files = cx.string_list(m, "file", what);
    if files.is_empty() && m.get_node("file").is_none() {
        cx.error_help(
            format!("{what} has no `file`"),
            span.clone(),
            "add `file: docker-compose.staging.yml` (one or more compose files beside the plan)",
        );
    }
    for f in &files {
        inside_plan(cx, f, what, "file");
        if !f.value.is_empty() && !cx.dir.join(&f.value).is_file() {
            // A warning, not an error: an earlier step may write it.
            cx.diags.push(
                Diagnostic::warning(
                    format!(
                        "compose file `{}` of {what} does not exist (yet): the deploy fails unless an earlier step writes it",
                        f.value
                    ),
                    Some(f.span.clone()),
                )
                .with_help("give the compose file's path relative to the plan file"),
            );
        }
    }
    let images = template_map(cx, m, "images", what);
    for (k, v) in &images {
        if !is_docker_name(k) {
            cx.error_help(
                format!("`{k}` in `images` of {what} is not a compose service name"),
                v.span.clone(),
                "the keys of `images` are the services of the compose file",
            );
        }
    }
    ComposeService {
        files,
        project: template_field(cx, m, "project", what),
        images,
        env: template_map(cx, m, "env", what),
        services: cx.string_list(m, "services", what),
        keep: keep(cx, m, what, 5),
        timeout: cx
            .duration(m, "timeout", what)
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(120)),
    }
}

/// A docker service needs a `port` for a health check by `path`; a compose service has no
/// address of its own, so its health check needs a full `url`.
pub(crate) fn check_health(
    cx: &mut Cx,
    driver: &crate::model::Driver,
    health: Option<&crate::model::HealthCheck>,
    what: &str,
) {
    let Some(h) = health else { return };
    let crate::model::HealthTarget::Path(p) = &h.target else {
        return;
    };
    match driver {
        crate::model::Driver::Docker(d) if d.port.is_none() => cx.error_help(
            format!("the health check of {what} has a `path`, but the service has no `port`"),
            p.span.clone(),
            "add `port: 8000` (the port inside the container), or give the health check a full `url:`",
        ),
        crate::model::Driver::Compose(_) => cx.error_help(
            format!(
                "the health check of {what} has a `path`, but a compose service has no address of its own"
            ),
            p.span.clone(),
            "give a full `url:` (the published port of the compose service to check)",
        ),
        _ => {}
    }
}
