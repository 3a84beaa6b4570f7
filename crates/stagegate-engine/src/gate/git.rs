//! `gate: git`: the branch, a clean tree, HEAD pushed, a release tag, HEAD in a branch.
//!
//! Runs the `git` command in the repository, so the user's configuration applies. Nothing is
//! fetched: "pushed" compares with the upstream's remote-tracking branch as the last fetch
//! or push left it.

use std::path::{Path, PathBuf};

use stagegate_plan::gate::GitGate;
use tokio::process::Command;

use super::{Check, Findings};
use crate::step::StepCtx;

/// How many dirty files a finding lists.
const LIST_MAX: usize = 20;

struct GitOut {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn git(dir: &Path, args: &[&str]) -> Result<GitOut, String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                "git is not installed (or not on PATH)".to_string()
            } else {
                format!("cannot run git: {e}")
            }
        })?;
    Ok(GitOut {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).trim_end().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

pub(crate) async fn evaluate(g: &GitGate, ctx: &StepCtx<'_>) -> Findings {
    let mut f = Findings::default();
    let dir = match &g.repo {
        Some(r) => ctx.plan.dir.join(&r.value),
        None => ctx.plan.dir.clone(),
    };
    let top = match git(&dir, &["rev-parse", "--show-toplevel"]).await {
        Ok(o) if o.code == 0 => PathBuf::from(o.stdout),
        Ok(o) => {
            f.checks.push(Check::fail(
                "repository",
                format!("{} is not in a git repository: {}", dir.display(), o.stderr),
            ));
            f.help = Some("point `repo` at the repository's directory".into());
            return f;
        }
        Err(e) => {
            f.checks.push(Check::fail("repository", e));
            return f;
        }
    };
    let head = match git(&top, &["rev-parse", "HEAD"]).await {
        Ok(o) if o.code == 0 => o.stdout,
        _ => {
            f.checks.push(Check::fail(
                "repository",
                format!("the repository at {} has no commit yet", top.display()),
            ));
            return f;
        }
    };
    let short = head.chars().take(7).collect::<String>();
    f.outputs.insert("commit".into(), head.clone());
    let branch = git(&top, &["symbolic-ref", "--quiet", "--short", "HEAD"])
        .await
        .ok()
        .filter(|o| o.code == 0)
        .map(|o| o.stdout);
    if let Some(b) = &branch {
        f.outputs.insert("branch".into(), b.clone());
    }
    let mut help = Vec::new();

    if !g.branch.is_empty() {
        let allowed = g
            .branch
            .iter()
            .map(|b| b.value.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let matches = |name: &str| g.branch.iter().any(|b| b.value.matches(name));
        match &branch {
            Some(b) if matches(b) => f.checks.push(Check::pass(
                "branch",
                format!("on branch {b} (allowed: {allowed})"),
            )),
            Some(b) => {
                f.checks.push(Check::fail(
                    "branch",
                    format!("on branch {b}, which is not one of {allowed}"),
                ));
                help.push(format!("deploy from {allowed}"));
            }
            None => {
                // A detached HEAD (as CI checks out): the branches whose tip is HEAD count.
                let at_head = branches_at_head(&top).await;
                match at_head.iter().find(|b| matches(b)) {
                    Some(b) => f.checks.push(Check::pass(
                        "branch",
                        format!("HEAD {short} is detached at the tip of {b} (allowed: {allowed})"),
                    )),
                    None => {
                        f.checks.push(Check::fail(
                            "branch",
                            format!(
                                "HEAD {short} is detached and no allowed branch ({allowed}) points at it{}",
                                if at_head.is_empty() {
                                    String::new()
                                } else {
                                    format!(" (branches at HEAD: {})", at_head.join(", "))
                                }
                            ),
                        ));
                        help.push(format!("check out one of {allowed}"));
                    }
                }
            }
        }
    }

    if g.clean {
        match git(&top, &["status", "--porcelain", "-uall"]).await {
            Ok(o) if o.code == 0 => {
                let state = std::fs::canonicalize(ctx.state_dir)
                    .unwrap_or_else(|_| ctx.state_dir.to_path_buf());
                let dirty: Vec<String> = o
                    .stdout
                    .lines()
                    .filter(|l| l.len() > 3)
                    .filter(|l| {
                        // stagegate's own state (logs, the store) is not the release's business.
                        let path = l[3..].rsplit(" -> ").next().unwrap_or("").trim_matches('"');
                        !top.join(path).starts_with(&state)
                    })
                    .map(str::to_string)
                    .collect();
                if dirty.is_empty() {
                    f.checks
                        .push(Check::pass("clean", "the working tree is clean"));
                } else {
                    let mut findings: Vec<String> = dirty.iter().take(LIST_MAX).cloned().collect();
                    if dirty.len() > LIST_MAX {
                        findings.push(format!("… and {} more", dirty.len() - LIST_MAX));
                    }
                    f.checks.push(
                        Check::fail(
                            "clean",
                            format!("the working tree has {} uncommitted change(s)", dirty.len()),
                        )
                        .with_findings(findings),
                    );
                    help.push("commit or stash the changes (`git status` lists them)".into());
                }
            }
            Ok(o) => f.checks.push(Check::fail(
                "clean",
                format!("git status failed: {}", o.stderr),
            )),
            Err(e) => f.checks.push(Check::fail("clean", e)),
        }
    }

    if g.pushed {
        let upstream = git(
            &top,
            &["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}"],
        )
        .await
        .ok()
        .filter(|o| o.code == 0)
        .map(|o| o.stdout);
        match (&branch, upstream) {
            (None, _) => f.checks.push(Check::pass(
                "pushed",
                format!("HEAD {short} is detached, so it has no upstream to compare with"),
            )),
            (Some(b), None) => f.checks.push(Check::pass(
                "pushed",
                format!("branch {b} has no upstream; nothing to compare with"),
            )),
            (Some(b), Some(up)) => match git(&top, &["rev-list", "--count", "@{u}..HEAD"]).await {
                Ok(o) if o.code == 0 => {
                    let ahead: u64 = o.stdout.trim().parse().unwrap_or(0);
                    if ahead == 0 {
                        f.checks.push(Check::pass(
                            "pushed",
                            format!("HEAD {short} is pushed to {up}"),
                        ));
                    } else {
                        f.checks.push(Check::fail(
                            "pushed",
                            format!("{b} has {ahead} commit(s) not pushed to {up}"),
                        ));
                        help.push(format!("push {b} (`git push`)"));
                    }
                }
                Ok(o) => f.checks.push(Check::fail(
                    "pushed",
                    format!("cannot compare with {up}: {}", o.stderr),
                )),
                Err(e) => f.checks.push(Check::fail("pushed", e)),
            },
        }
    }

    if let Some(pattern) = &g.tag {
        let tags: Vec<String> = git(&top, &["tag", "--points-at", "HEAD"])
            .await
            .ok()
            .filter(|o| o.code == 0)
            .map(|o| o.stdout.lines().map(str::to_string).collect())
            .unwrap_or_default();
        match tags.iter().find(|t| pattern.value.matches(t)) {
            Some(t) => {
                f.outputs.insert("tag".into(), t.clone());
                f.checks.push(Check::pass(
                    "tag",
                    format!("tag {t} at HEAD matches {}", pattern.value),
                ));
            }
            None => {
                f.checks.push(Check::fail(
                    "tag",
                    format!(
                        "no tag at HEAD {short} matches {} (tags at HEAD: {})",
                        pattern.value,
                        if tags.is_empty() {
                            "none".into()
                        } else {
                            tags.join(", ")
                        }
                    ),
                ));
                help.push(format!(
                    "tag the release (`git tag {}` with a version) and push the tag",
                    pattern.value
                ));
            }
        }
    }

    if let Some(target) = &g.ancestor_of {
        let name = target.value.as_str();
        let exists = git(
            &top,
            &[
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{name}^{{commit}}"),
            ],
        )
        .await
        .is_ok_and(|o| o.code == 0);
        if !exists {
            f.checks.push(Check::fail(
                "ancestor_of",
                format!("branch {name} does not exist in this repository"),
            ));
            help.push(format!(
                "fetch {name} (`git fetch origin {name}`) or fix `ancestor_of`"
            ));
        } else {
            match git(&top, &["merge-base", "--is-ancestor", "HEAD", name]).await {
                Ok(o) if o.code == 0 => f.checks.push(Check::pass(
                    "ancestor_of",
                    format!("HEAD {short} is in {name}"),
                )),
                Ok(o) if o.code == 1 => {
                    f.checks.push(Check::fail(
                        "ancestor_of",
                        format!("HEAD {short} is not in {name}"),
                    ));
                    help.push(format!("merge the release into {name} first"));
                }
                Ok(o) => f.checks.push(Check::fail(
                    "ancestor_of",
                    format!("git merge-base failed: {}", o.stderr),
                )),
                Err(e) => f.checks.push(Check::fail("ancestor_of", e)),
            }
        }
    }
    if !help.is_empty() {
        f.help = Some(help.join("; "));
    }
    f
}

/// Branch names whose tip is HEAD, local and remote-tracking (without the remote's name).
async fn branches_at_head(top: &Path) -> Vec<String> {
    let Ok(o) = git(
        top,
        &[
            "for-each-ref",
            "--points-at",
            "HEAD",
            "--format=%(refname)",
            "refs/heads",
            "refs/remotes",
        ],
    )
    .await
    else {
        return Vec::new();
    };
    let mut names: Vec<String> = o
        .stdout
        .lines()
        .filter_map(|r| {
            if let Some(b) = r.strip_prefix("refs/heads/") {
                Some(b.to_string())
            } else {
                let rest = r.strip_prefix("refs/remotes/")?;
                let (_, b) = rest.split_once('/')?;
                (b != "HEAD").then(|| b.to_string())
            }
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
