//! Plan -> `render` (stagegate doc) -> `import` -> plan: every step of the original comes
//! back, in order, with its name, `run` steps with their command and `rollback:` as
//! written, load steps with their SLOs.
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
        rollback: Option<String>,
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
                rollback: s
                    .rollback
                    .as_ref()
                    .map(|r| r.value.written().trim_end().to_string()),
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

fn imported(plan: &Plan) -> Vec<Seen> {
    let mut out = Vec::new();
    for stage in &plan.stages {
        // The gate of the secrets the runbook forbids is extra, by design.
        if stage.name == stagegate_runbook::emit::FORBID_STAGE {
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
                rollback: s
                    .rollback
                    .as_ref()
                    .map(|r| text(&r.value).trim_end().to_string()),
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

/// What the examples do not have: rollbacks, two steps of one name, a command with blank
/// lines, comments and a fence in it, a secret exported by hand, a deploy, `when:`.
const TRICKY: &str = r##"project: "tricky `name` *here*"
environments:
  staging: {}
services:
  web:
    driver: local
    start: ./web
stages:
  deploy:
    - id: migrate
      name: "Migrate: the database"
      run: ./bin/migrate up
      rollback: |
        ./bin/migrate down 1

        # and tell someone
        echo rolled back
    - id: twice-a
      name: twice
      run: echo a
      rollback: echo undo a
    - id: twice-b
      name: twice
      run: echo b
      rollback: echo undo b
    - id: notes
      name: "# not a heading"
      when: ${{ environment.name == 'staging' }}
      run: |
        export STAGING_API_TOKEN="your-token"

        # a comment line
        cat > notes.md <<'EOF'
        ````text
        released ${{ release.version }}
        ````
        EOF
    - deploy: web
"##;

#[test]
fn every_step_survives_doc_then_import() {
    let all = plans();
    assert!(all.len() >= 10, "the examples and golden plans: {all:?}");
    let tricky = std::env::temp_dir().join("stagegate-round-trip-tricky.yml");
    let mut failures = Vec::new();
    for path in all.into_iter().chain([tricky.clone()]) {
        let loaded = if path == tricky {
            stagegate_plan::load_str(&path, TRICKY)
        } else {
            stagegate_plan::load_file(&path)
        };
        let (plan, _) =
            loaded.unwrap_or_else(|d| panic!("{} does not validate:\n{d}", path.display()));
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
        let got = imported(&back);
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
