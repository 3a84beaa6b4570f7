//! The `kubernetes` driver's settings of a service: which manifests to apply, where, and
//! which Deployments to wait on.
//!
//! ```yaml
//! services:
//!   api:
//!     driver: kubernetes
//!     manifests: k8s/staging/        # files or directories beside the plan, YAML
//!     namespace: architect-staging
//!     context: staging               # from the kubeconfig; default: its current context
//!     deployment: architect-api      # default: every Deployment in the manifests
//!     timeout: 5m                    # the rollout wait
//! ```

use std::path::Path;
use std::time::Duration;

use marked_yaml::types::MarkedMappingNode;

use crate::build::template_field;
use crate::diagnostic::{Diagnostic, Span};
use crate::template::Template;
use crate::yaml::{Cx, Spanned};

/// The `kubernetes` driver's keys.
pub(crate) const KUBE_KEYS: &[&str] = &[
    "manifests",
    "namespace",
    "context",
    "kubeconfig",
    "deployment",
    "timeout",
    "keep",
];

/// A service deployed by server-side apply of its manifests to a Kubernetes cluster.
#[derive(Debug, Clone)]
pub struct KubeService {
    /// Files or directories (relative to the plan directory) of YAML manifests, rendered
    /// with the plan's templates before they are applied.
    pub manifests: Vec<Spanned<String>>,
    /// The namespace of objects that name none (default: the context's, else `default`).
    pub namespace: Option<Spanned<Template>>,
    /// The kubeconfig context (default: its current context).
    pub context: Option<Spanned<Template>>,
    /// The kubeconfig file (default: `KUBECONFIG`, else `~/.kube/config`).
    pub kubeconfig: Option<Spanned<Template>>,
    /// The Deployments whose rollout is waited on (default: every one in the manifests).
    pub deployments: Vec<Spanned<String>>,
    /// How long a rollout may take.
    pub timeout: Duration,
    /// How many release records to keep (the current one included).
    pub keep: usize,
}

impl KubeService {
    pub fn templates(&self) -> Vec<&Spanned<Template>> {
        [&self.namespace, &self.context, &self.kubeconfig]
            .into_iter()
            .flatten()
            .collect()
    }
}

pub(crate) fn read_kube(
    cx: &mut Cx,
    m: &MarkedMappingNode,
    what: &str,
    span: &Span,
) -> KubeService {
    let manifests = cx.string_list(m, "manifests", what);
    if manifests.is_empty() && m.get_node("manifests").is_none() {
        cx.error_help(
            format!("{what} has no `manifests`"),
            span.clone(),
            "add `manifests: k8s/` (YAML files or directories beside the plan)",
        );
    }
    for f in &manifests {
        let p = Path::new(&f.value);
        if p.is_absolute() || f.value.split('/').any(|c| c == "..") {
            cx.error_help(
                format!(
                    "manifest `{}` must be a path inside the plan directory",
                    f.value
                ),
                f.span.clone(),
                "manifests are read relative to the plan file",
            );
        } else if !cx.dir.join(p).exists() {
            // A warning, not an error: an earlier step may write it (`kustomize build`).
            cx.diags.push(
                Diagnostic::warning(
                    format!(
                        "manifest `{}` of {what} does not exist (yet): the deploy fails unless an earlier step writes it",
                        f.value
                    ),
                    Some(f.span.clone()),
                )
                .with_help("give a YAML file or a directory of them, relative to the plan file"),
            );
        }
    }
    let keep = cx.uint(m, "keep", what).unwrap_or(5);
    if keep < 2
        && let Some(n) = m.get_node("keep")
    {
        cx.error_help(
            format!("`keep` in {what} must be at least 2"),
            cx.span(n),
            "the previous release's manifests must stay on record for rollback",
        );
    }
    KubeService {
        manifests,
        namespace: template_field(cx, m, "namespace", what),
        context: template_field(cx, m, "context", what),
        kubeconfig: template_field(cx, m, "kubeconfig", what),
        deployments: cx.string_list(m, "deployment", what),
        timeout: cx
            .duration(m, "timeout", what)
            .map(|d| d.value)
            .unwrap_or(Duration::from_secs(300)),
        keep: keep.max(2) as usize,
    }
}

/// A kubernetes service has no address of its own: its health check needs a full `url`.
pub(crate) fn check_health(
    cx: &mut Cx,
    driver: &crate::model::Driver,
    health: Option<&crate::model::HealthCheck>,
    what: &str,
) {
    if let (crate::model::Driver::Kubernetes(_), Some(h)) = (driver, health)
        && let crate::model::HealthTarget::Path(p) = &h.target
    {
        cx.error_help(
            format!("the health check of {what} has a `path`, but a kubernetes service has no address of its own"),
            p.span.clone(),
            "give a full `url:` (the Service's or the Ingress's address)",
        );
    }
}
