//! A service's manifests: files and directories rendered with the plan's templates into
//! one multi-document YAML text, then parsed into the objects to apply.

use std::path::{Path, PathBuf};

use kube::core::{ApiResource, GroupVersionKind};
use stagegate_plan::{Scope, Spanned, Template};

/// One object to apply.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: String,
    pub name: String,
    /// `None` for cluster-scoped kinds (Namespace, ClusterRole, ...).
    pub namespace: Option<String>,
    pub resource: ApiResource,
    pub body: serde_json::Value,
}

impl Object {
    pub fn label(&self) -> String {
        format!("{}/{}", self.kind, self.name)
    }
}

/// Kinds that live outside namespaces (the common ones; others are taken as namespaced).
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
];

/// The manifest files in the order they are applied: each listed file, and each
/// directory's `.yaml`/`.yml` files sorted by name.
fn files(plan_dir: &Path, manifests: &[Spanned<String>]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for m in manifests {
        let p = plan_dir.join(&m.value);
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(&p)
                .map_err(|e| format!("cannot read {}: {e}", m.value))?
                .flatten()
                .map(|e| e.path())
                .filter(|f| {
                    f.is_file()
                        && matches!(f.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
                })
                .collect();
            entries.sort();
            if entries.is_empty() {
                return Err(format!(
                    "manifest directory `{}` has no .yaml file",
                    m.value
                ));
            }
            out.extend(entries);
        } else if p.is_file() {
            out.push(p);
        } else {
            return Err(format!(
                "manifest `{}` does not exist (plan line {})",
                m.value, m.span.pos.line
            ));
        }
    }
    Ok(out)
}

/// Reads and renders every manifest file into one multi-document text.
pub fn render(
    plan_dir: &Path,
    manifests: &[Spanned<String>],
    scope: &Scope,
) -> Result<String, String> {
    let mut docs = Vec::new();
    for f in files(plan_dir, manifests)? {
        let rel = f.strip_prefix(plan_dir).unwrap_or(&f).display().to_string();
        let text =
            std::fs::read_to_string(&f).map_err(|e| format!("cannot read manifest {rel}: {e}"))?;
        let t = Template::parse(&text).map_err(|e| {
            let line = text[..e.offset.min(text.len())].matches('\n').count() + 1;
            format!("manifest {rel}:{line}: {}", e.message)
        })?;
        let out = scope
            .render(&t)
            .map_err(|e| format!("manifest {rel}: {e}"))?;
        docs.push(out.trim_end().to_string());
    }
    Ok(docs.join("\n---\n") + "\n")
}

/// Parses rendered manifests into objects, giving namespaced ones `namespace` when they
/// name none. An object that names another namespace is an error, as with `kubectl -n`.
pub fn parse(text: &str, namespace: &str) -> Result<Vec<Object>, String> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| format!("the manifests are not valid YAML: {e}"))?;
    let mut out = Vec::new();
    for (i, mut body) in docs.into_iter().enumerate() {
        if body.is_null() {
            continue;
        }
        let n = i + 1;
        let field = |b: &serde_json::Value, p: &str| {
            b.pointer(p).and_then(|v| v.as_str()).map(str::to_string)
        };
        let api_version = field(&body, "/apiVersion")
            .ok_or_else(|| format!("manifest document {n} has no `apiVersion`"))?;
        let kind =
            field(&body, "/kind").ok_or_else(|| format!("manifest document {n} has no `kind`"))?;
        let name = field(&body, "/metadata/name")
            .ok_or_else(|| format!("manifest document {n} ({kind}) has no `metadata.name`"))?;
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), api_version.clone()),
        };
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(&group, &version, &kind));
        let ns = if CLUSTER_SCOPED.contains(&kind.as_str()) {
            None
        } else {
            match field(&body, "/metadata/namespace") {
                Some(own) if own != namespace => {
                    return Err(format!(
                        "{kind}/{name} names namespace `{own}`, but the service deploys to `{namespace}`"
                    ));
                }
                Some(own) => Some(own),
                None => {
                    if let Some(meta) = body.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                        meta.insert("namespace".into(), namespace.into());
                    }
                    Some(namespace.to_string())
                }
            }
        };
        out.push(Object {
            kind,
            name,
            namespace: ns,
            resource,
            body,
        });
    }
    if out.is_empty() {
        return Err("the manifests hold no object".into());
    }
    Ok(out)
}

/// The Deployments to wait on: those the plan names (each must be in the manifests), or
/// every Deployment in them.
pub fn deployments(objects: &[Object], wanted: &[Spanned<String>]) -> Result<Vec<String>, String> {
    let all: Vec<String> = objects
        .iter()
        .filter(|o| o.kind == "Deployment")
        .map(|o| o.name.clone())
        .collect();
    if wanted.is_empty() {
        return Ok(all);
    }
    let mut out = Vec::new();
    for w in wanted {
        if !all.contains(&w.value) {
            return Err(format!(
                "`deployment: {}` (plan line {}) is not a Deployment in the manifests (they have: {})",
                w.value,
                w.span.pos.line,
                if all.is_empty() {
                    "none".to_string()
                } else {
                    all.join(", ")
                }
            ));
        }
        out.push(w.value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_become_objects_in_the_service_namespace() {
        let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: web }\nspec: {}\n---\n# only a comment\n---\napiVersion: v1\nkind: Namespace\nmetadata: { name: web-ns }\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: { name: cfg, namespace: staging }\ndata: { a: \"1\" }\n";
        let objects = parse(text, "staging").unwrap();
        let labels: Vec<String> = objects.iter().map(Object::label).collect();
        assert_eq!(
            labels,
            ["Deployment/web", "Namespace/web-ns", "ConfigMap/cfg"]
        );
        assert_eq!(objects[0].namespace.as_deref(), Some("staging"));
        assert_eq!(objects[0].body["metadata"]["namespace"], "staging");
        assert_eq!(objects[0].resource.plural, "deployments");
        assert_eq!(objects[0].resource.group, "apps");
        assert_eq!(objects[1].namespace, None);
        assert_eq!(objects[2].resource.plural, "configmaps");
    }

    #[test]
    fn another_namespace_or_a_missing_kind_is_an_error() {
        let other = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: cfg, namespace: prod }\n";
        assert!(
            parse(other, "staging")
                .unwrap_err()
                .contains("names namespace `prod`")
        );
        let kindless = "apiVersion: v1\nmetadata: { name: cfg }\n";
        assert!(
            parse(kindless, "staging")
                .unwrap_err()
                .contains("has no `kind`")
        );
    }
}
