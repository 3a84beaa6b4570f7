//! A client for the cluster a kubeconfig context names, and the API's errors in plain words.

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::manifest::Object;

/// A connected cluster: the client, and what to name in messages.
#[derive(Clone)]
pub struct Target {
    pub client: Client,
    pub context: String,
    /// The namespace of objects that name none.
    pub namespace: String,
    pub server: String,
}

/// Reads the kubeconfig (`path`, else `KUBECONFIG`, else `~/.kube/config`) and builds a
/// client for `context` (else its current context).
pub async fn connect(
    path: Option<&Path>,
    context: Option<&str>,
    namespace: Option<&str>,
) -> Result<Target, String> {
    let kc = match path {
        Some(p) => Kubeconfig::read_from(p)
            .map_err(|e| format!("cannot read the kubeconfig {}: {e}", p.display()))?,
        None => Kubeconfig::read().map_err(|e| {
            format!(
                "no kubeconfig: {e} (set KUBECONFIG, put one at ~/.kube/config, or give `kubeconfig:` in the plan)"
            )
        })?,
    };
    let names: Vec<String> = kc.contexts.iter().map(|c| c.name.clone()).collect();
    let context = match context {
        Some(c) => {
            if !names.iter().any(|n| n == c) {
                return Err(format!(
                    "context `{c}` is not in the kubeconfig (its contexts: {})",
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ));
            }
            c.to_string()
        }
        None => kc
            .current_context
            .clone()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                "the kubeconfig has no current context: give `context:` in the plan".to_string()
            })?,
    };
    let opts = KubeConfigOptions {
        context: Some(context.clone()),
        ..Default::default()
    };
    let config = Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| format!("kubeconfig context `{context}`: {e}"))?;
    let server = config.cluster_url.to_string();
    let namespace = namespace
        .map(str::to_string)
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)
        .map_err(|e| format!("cannot make a client for context `{context}` ({server}): {e}"))?;
    Ok(Target {
        client,
        context,
        namespace,
        server: server.trim_end_matches('/').to_string(),
    })
}

impl Target {
    /// An error from applying `o`, in words that say what to do.
    pub fn explain(&self, e: &kube::Error, what: &str, o: &Object) -> String {
        let ns = o.namespace.as_deref().unwrap_or(&self.namespace);
        self.words(e, what, ns)
    }

    /// An error from reading or changing a Deployment in the target namespace.
    pub fn explain_get(&self, e: &kube::Error, what: &str, _name: &str) -> String {
        self.words(e, what, &self.namespace)
    }

    fn words(&self, e: &kube::Error, what: &str, ns: &str) -> String {
        let (ctx, server) = (&self.context, &self.server);
        match e {
            kube::Error::Api(s) => match s.code {
                401 => format!(
                    "the Kubernetes API at {server} refused the credentials of context `{ctx}` (401 Unauthorized): renew the token or certificate in the kubeconfig"
                ),
                403 => format!(
                    "context `{ctx}` is not allowed to {what} in namespace {ns} (403 Forbidden): {}",
                    s.message
                ),
                404 if s.message.contains("namespaces") && s.message.contains(ns) => format!(
                    "namespace `{ns}` does not exist on {server}: create it (kubectl create namespace {ns}) or fix `namespace`"
                ),
                422 => format!(
                    "cannot {what}: the API server says it is invalid: {}",
                    s.message
                ),
                code => format!(
                    "cannot {what}: {} ({code} {})",
                    if s.message.is_empty() {
                        "no message"
                    } else {
                        &s.message
                    },
                    s.reason
                ),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => format!(
                "cannot reach the Kubernetes API at {server} (context `{ctx}`): {}",
                chain(e)
            ),
            other => format!("cannot {what}: {}", chain(other)),
        }
    }
}

/// An error and its causes on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}
