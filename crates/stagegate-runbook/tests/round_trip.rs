//! Plan -> `render` (stagegate doc) -> `import` -> plan: every step of the original comes
//! back, in order, with its name, and `run` steps with their command as written.
//!
//! The plans: every `examples/*/stagegate.yml` (the README quickstart among them) and the
//! golden drafts `tests/golden/*.yml`, which are valid plans too.

use std::path::{Path, PathBuf};

use stagegate_plan::{GateKind, Plan, StepKind, Template};
use stagegate_runbook::DocOptions;

fn plans() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = Vec::new();
    for e in std::fs::read_dir(root.join("../../examples")).unwrap() {
        let p = e.unwrap().path().join("stagegate.yml");
        if p.is_file() {
            v.push(p);
        }
    }
    for e in std::fs::read_dir(root.join("tests/golden")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yml") {
            v.push(p);
        }
    }
    v.sort();
    v
}

/// What a reader of the runbook sees of a step: its kind and name (or a checklist's
/// items), and a `run` step's command.
#[derive(Debug, PartialEq)]
enum Seen {
    Run {
        name: String,
        command: String,
    },
    Http(String),
    /// A load step's name and SLO thresholds.
    Load(String, Vec<String>),
    /// A checklist item: a `gate: checklist` item, or a step told as `- [ ] NAME`.
    Item(String),
}

/// Text as it reads: templates written back, so `${{ '${{' }} vars.x }}` (how the
/// importer keeps the runbook's `${{`) and `${{ vars.x }}` compare equal.
fn text(t: &Template) -> String {
    t.render(&mut |r| Ok(format!("${{{{ {r} }}}}")))
        .unwrap_or_else(|_| t.written())
}

fn literal(s: &str) -> String {
    Template::parse(s).map(|t| text(&t)).unwrap_or(s.into())
}

fn slo(l: &stagegate_plan::LoadSpec) -> Vec<String> {
    l.slo.iter().map(|t| t.value.text.clone()).collect()
}

fn original(plan: &Plan) -> Vec<Seen> {
    let mut out = Vec::new();
    for (_, s) in plan.steps() {
        let name = s.name.split_whitespace().collect::<Vec<_>>().join(" ");
        match &s.kind {
            StepKind::Run { command } => out.push(Seen::Run {
                name,
                command: command.value.written().trim_end().to_string(),
            }),
            StepKind::Check(c) if c.kind() == "http" => out.push(Seen::Http(name)),
            StepKind::Gate(g) if matches!(g.kind, GateKind::Checklist(_)) => {
                if let GateKind::Checklist(c) = &g.kind {
                    out.extend(c.items.iter().map(|i| Seen::Item(i.text.clone())));
                }
            }
            StepKind::Load(l) => {
                // A load step `hey` can say comes back as a load step; others as an item.
                out.push(Seen::Load(name, slo(l)));
            }
            _ => out.push(Seen::Item(name)),
        }
    }
    out
}

/// `with_rollbacks`: the original has `rollback:` commands, so the draft's last stage is
/// the runbook's "Rollback procedures" section.
fn imported(plan: &Plan, with_rollbacks: bool) -> Vec<Seen> {
    let mut out = Vec::new();
    let last = plan.stages.len().saturating_sub(1);
    for (i, stage) in plan.stages.iter().enumerate() {
        // The rollback section's steps and the forbidden-secrets gate are extra, by design.
        if (with_rollbacks && i == last) || stage.name == stagegate_runbook::emit::FORBID_STAGE {
            continue;
        }
        for s in &stage.steps {
            step(&mut out, s);
        }
    }
    out
}

fn step(out: &mut Vec<Seen>, s: &stagegate_plan::Step) {
    {
        let name = literal(&s.name);
        match &s.kind {
            StepKind::Run { command } => out.push(Seen::Run {
                name,
                command: text(&command.value).trim_end().to_string(),
            }),
            StepKind::Check(c) if c.kind() == "http" => out.push(Seen::Http(name)),
            StepKind::Load(l) => out.push(Seen::Load(name, slo(l))),
            StepKind::Gate(g) => {
                if let GateKind::Checklist(c) = &g.kind {
                    out.extend(c.items.iter().map(|i| Seen::Item(i.text.clone())));
                }
            }
            other => panic!("the importer made a {} step", other.name()),
        }
    }
}

#[test]
fn every_step_survives_doc_then_import() {
    let all = plans();
    assert!(all.len() >= 10, "the examples and golden plans: {all:?}");
    let mut failures = Vec::new();
    for path in all {
        let (plan, _) = stagegate_plan::load_file(&path)
            .unwrap_or_else(|d| panic!("{} does not validate:\n{d}", path.display()));
        let md = stagegate_runbook::render(
            &plan,
            &DocOptions {
                command: "stagegate doc".into(),
                plan_file: "stagegate.yml".into(),
                ..Default::default()
            },
        )
        .unwrap();
        let again = stagegate_runbook::render(
            &plan,
            &DocOptions {
                command: "stagegate doc".into(),
                plan_file: "stagegate.yml".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(md, again, "{}: not deterministic", path.display());
        let draft = stagegate_runbook::import(&md).unwrap();
        let draft_path = path.with_file_name("imported-from-doc.yml");
        let back = match stagegate_plan::load_str(&draft_path, &draft.yaml) {
            Ok((p, _)) => p,
            Err(d) => {
                failures.push(format!(
                    "{}: the imported runbook does not validate:\n{d}\n--- runbook:\n{md}\n--- draft:\n{}",
                    path.display(),
                    draft.yaml
                ));
                continue;
            }
        };
        let want = original(&plan);
        let got = imported(&back, plan.steps().any(|(_, s)| s.rollback.is_some()));
        // A load step that `hey` cannot say is told as a `- [ ] NAME` item.
        let want: Vec<Seen> = want
            .into_iter()
            .zip(0..)
            .map(|(w, i)| match (w, got.get(i)) {
                (Seen::Load(n, _), Some(Seen::Item(m))) if *m == n => Seen::Item(n),
                (w, _) => w,
            })
            .collect();
        if want != got {
            failures.push(format!(
                "{}: steps differ\n want: {want:#?}\n  got: {got:#?}\n--- runbook:\n{md}\n--- draft:\n{}",
                path.display(),
                draft.yaml
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
