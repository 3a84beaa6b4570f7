//! The values a run sees: an environment's vars and secrets, the release, and what steps
//! and services produce as they run. Templates render against a [`Scope`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::diagnostic::did_you_mean;
use crate::dotenv::read_dotenv;
use crate::model::{Environment, Plan};
use crate::secret::{MASK, Scrubber, Secret};
use crate::template::{Ref, RenderError, ServiceField, Template};

/// The artifact's identity, recorded with every deployment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Release {
    pub version: String,
    pub sha: String,
}

/// Where a deployed service answers.
#[derive(Debug, Clone, Default)]
pub struct ServiceEndpoint {
    pub url: String,
    pub port: u16,
    pub release: String,
}

/// What the caller adds to a run: command-line overrides and the process environment.
#[derive(Debug, Clone, Default)]
pub struct ScopeOptions {
    pub release_version: Option<String>,
    pub release_sha: Option<String>,
    pub vars: Vec<(String, String)>,
    pub process_env: HashMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct Scope {
    pub project: String,
    pub environment: String,
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, Secret>,
    /// Where each secret's value came from (`environment`, or a dotenv file).
    pub secret_sources: BTreeMap<String, String>,
    pub process_env: HashMap<String, String>,
    pub release: Release,
    pub step_outputs: HashMap<String, BTreeMap<String, String>>,
    pub services: HashMap<String, ServiceEndpoint>,
}

impl Scope {
    /// Builds the scope of `environment`: reads dotenv files, checks required secrets,
    /// renders vars and the release identity. Returns every problem found.
    pub fn prepare(
        plan: &Plan,
        environment: &str,
        opts: ScopeOptions,
    ) -> Result<Scope, Vec<String>> {
        let Some(env) = plan.environment(environment) else {
            let names = plan.environment_names();
            let hint = did_you_mean(environment, names.iter().copied())
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("the plan defines: {}", names.join(", ")));
            return Err(vec![format!("unknown environment `{environment}`: {hint}")]);
        };
        let mut errors = Vec::new();
        let mut scope = Scope {
            project: plan.project.clone(),
            environment: environment.to_string(),
            vars: BTreeMap::new(),
            secrets: BTreeMap::new(),
            secret_sources: BTreeMap::new(),
            process_env: opts.process_env.clone(),
            release: Release {
                version: String::new(),
                sha: String::new(),
            },
            step_outputs: HashMap::new(),
            services: HashMap::new(),
        };
        scope.load_secrets(plan, env, &mut errors);

        // Release identity: the command line wins, then the plan, then git.
        scope.release.sha = opts
            .release_sha
            .clone()
            .or_else(|| {
                render_plain(
                    &scope,
                    plan.release.sha.as_ref().map(|t| &t.value),
                    &mut errors,
                )
            })
            .or_else(|| git(&plan.dir, &["rev-parse", "HEAD"]))
            .unwrap_or_else(|| "unknown".into());
        scope.release.version = opts
            .release_version
            .clone()
            .or_else(|| {
                render_plain(
                    &scope,
                    plan.release.version.as_ref().map(|t| &t.value),
                    &mut errors,
                )
            })
            .or_else(|| git(&plan.dir, &["describe", "--tags", "--always", "--dirty"]))
            .unwrap_or_else(|| "0.0.0-dev".into());

        // Vars: the environment's over the plan's, over the command line's; vars may use vars.
        let mut templates: BTreeMap<String, Template> = plan
            .vars
            .iter()
            .map(|(k, v)| (k.clone(), v.value.clone()))
            .collect();
        for (k, v) in &env.vars {
            templates.insert(k.clone(), v.value.clone());
        }
        for (k, v) in &opts.vars {
            templates.insert(k.clone(), Template::literal(v));
        }
        for name in templates.keys() {
            match render_var(&scope, &templates, name, 0) {
                Ok(v) => {
                    scope.vars.insert(name.clone(), v);
                }
                Err(e) => errors.push(format!("vars.{name}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(scope)
        } else {
            Err(errors)
        }
    }

    fn load_secrets(&mut self, plan: &Plan, env: &Environment, errors: &mut Vec<String>) {
        let dotenv_path: Option<PathBuf> =
            match env.secrets.dotenv.as_ref().or(plan.secrets.dotenv.as_ref()) {
                Some(p) => {
                    let path = plan.dir.join(&p.value);
                    if !path.exists() {
                        errors.push(format!(
                            "{}:{}: dotenv file `{}` does not exist; create it or remove `dotenv`",
                            p.span.path().display(),
                            p.span.pos.line,
                            p.value
                        ));
                        None
                    } else {
                        Some(path)
                    }
                }
                None => Some(plan.dir.join(format!(".env.{}", env.name))).filter(|p| p.exists()),
            };
        let mut from_file: HashMap<String, String> = HashMap::new();
        let mut file_name = String::new();
        if let Some(path) = dotenv_path {
            file_name = path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            match read_dotenv(&path) {
                Ok(entries) => from_file.extend(entries.into_iter().map(|e| (e.key, e.value))),
                Err(e) => errors.push(e),
            }
        }
        let required = plan
            .secrets
            .require
            .iter()
            .chain(&env.secrets.require)
            .map(|s| s.value.clone());
        let optional = plan
            .secrets
            .optional
            .iter()
            .chain(&env.secrets.optional)
            .map(|s| s.value.clone());
        let mut missing = Vec::new();
        for (name, is_required) in required
            .map(|n| (n, true))
            .chain(optional.map(|n| (n, false)))
        {
            if self.secrets.contains_key(&name) {
                continue;
            }
            if let Some(v) = self.process_env.get(&name).filter(|v| !v.is_empty()) {
                self.secrets.insert(name.clone(), Secret::new(v.clone()));
                self.secret_sources.insert(name, "environment".into());
            } else if let Some(v) = from_file.get(&name).filter(|v| !v.is_empty()) {
                self.secrets.insert(name.clone(), Secret::new(v.clone()));
                self.secret_sources.insert(name, file_name.clone());
            } else if is_required {
                missing.push(name);
            }
        }
        if !missing.is_empty() {
            let file = env
                .secrets
                .dotenv
                .as_ref()
                .or(plan.secrets.dotenv.as_ref())
                .map(|d| d.value.clone())
                .unwrap_or_else(|| format!(".env.{}", env.name));
            let them = if missing.len() > 1 { "them" } else { "it" };
            errors.push(format!(
                "environment `{}` requires secret{} {} with no value: export {them} or put {them} in `{file}`",
                env.name,
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", "),
            ));
        }
    }

    /// The value of a reference, or why there is none.
    pub fn resolve(&self, r: &Ref) -> Result<String, RenderError> {
        match r {
            Ref::Var(n) => self
                .vars
                .get(n)
                .cloned()
                .ok_or_else(|| RenderError::UndefinedVar(n.clone())),
            Ref::Secret(n) => self
                .secrets
                .get(n)
                .map(|s| s.expose().to_string())
                .ok_or_else(|| RenderError::SecretUnset {
                    name: n.clone(),
                    environment: self.environment.clone(),
                }),
            Ref::Env(n) => self
                .process_env
                .get(n)
                .cloned()
                .ok_or_else(|| RenderError::EnvUnset(n.clone())),
            Ref::ReleaseVersion => Ok(self.release.version.clone()),
            Ref::ReleaseSha => Ok(self.release.sha.clone()),
            Ref::EnvironmentName => Ok(self.environment.clone()),
            Ref::Project => Ok(self.project.clone()),
            // Filled in per virtual user by the load generator.
            Ref::Vu(n) => Ok(format!("${{{{ vu.{n} }}}}")),
            Ref::StepOutput { step, name } => match self.step_outputs.get(step) {
                None => Err(RenderError::StepNotRun(step.clone())),
                Some(o) => o.get(name).cloned().ok_or_else(|| {
                    let known: Vec<&str> = o.keys().map(String::as_str).collect();
                    RenderError::NoSuchOutput {
                        step: step.clone(),
                        name: name.clone(),
                        written: if known.is_empty() {
                            "nothing".to_string()
                        } else {
                            known.join(", ")
                        },
                    }
                }),
            },
            Ref::Service { name, field } => match self.services.get(name) {
                None => Err(RenderError::ServiceNotRunning(name.clone())),
                Some(s) => Ok(match field {
                    ServiceField::Url => s.url.clone(),
                    ServiceField::Port => s.port.to_string(),
                    ServiceField::Release => s.release.clone(),
                }),
            },
        }
    }

    pub fn render(&self, t: &Template) -> Result<String, RenderError> {
        t.render(&mut |r| self.resolve(r))
    }

    /// Renders a command for `sh -c`: each value travels in an environment variable, so
    /// it can never become shell syntax (see [`crate::shell`]).
    pub fn render_shell(&self, t: &Template) -> Result<crate::ShellScript, RenderError> {
        crate::shell::render_shell(t, &mut |r| self.resolve(r))
    }

    /// Renders for display: secrets appear as the mask and unknown runtime values as `<…>`.
    pub fn render_for_display(&self, t: &Template) -> String {
        let out = t.render(&mut |r| match r {
            Ref::Secret(_) => Ok(MASK.to_string()),
            Ref::StepOutput { .. } | Ref::Service { .. } => {
                self.resolve(r).or_else(|_| Ok(format!("<{r}>")))
            }
            Ref::Env(_) => self.resolve(r).or_else(|_| Ok(format!("<{r} unset>"))),
            other => self.resolve(other),
        });
        self.scrubber()
            .scrub(&out.unwrap_or_else(|e| format!("<{e}>")))
    }

    /// Replaces every secret value in `text` with its `${{ secrets.NAME }}` reference, so the
    /// text can be stored and rendered again later with the secrets read anew.
    pub fn seal(&self, text: &str) -> String {
        let mut pairs: Vec<(&str, &Secret)> =
            self.secrets.iter().map(|(k, v)| (k.as_str(), v)).collect();
        pairs.retain(|(_, v)| !v.expose().is_empty());
        // Longest values first, so a secret that contains another is sealed whole.
        pairs.sort_by_key(|(_, v)| std::cmp::Reverse(v.expose().len()));
        let mut out = text.to_string();
        for (name, value) in pairs {
            out = out.replace(value.expose(), &format!("${{{{ secrets.{name} }}}}"));
        }
        out
    }

    pub fn scrubber(&self) -> Scrubber {
        Scrubber::new(self.secrets.values())
    }
}

fn render_plain(scope: &Scope, t: Option<&Template>, errors: &mut Vec<String>) -> Option<String> {
    let t = t?;
    match scope.render(t) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        Ok(_) => None,
        Err(e) => {
            errors.push(format!("release: {e}"));
            None
        }
    }
}

fn render_var(
    scope: &Scope,
    templates: &BTreeMap<String, Template>,
    name: &str,
    depth: usize,
) -> Result<String, String> {
    if depth > 16 {
        return Err(format!(
            "vars refer to each other in a cycle through `{name}`"
        ));
    }
    let t = templates
        .get(name)
        .ok_or_else(|| format!("`vars.{name}` is not defined"))?;
    t.render(&mut |r| match r {
        Ref::Var(n) => render_var(scope, templates, n, depth + 1).map_err(RenderError::Other),
        other => scope.resolve(other),
    })
    .map_err(String::from)
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}
