//! Writing a [`Draft`] as plan YAML, every item with its `# runbook line N` comment.

use std::fmt::Write;

use crate::curl::{Body, HttpCheck, Part};
use crate::draft::{Action, Draft, Item, Step};
use crate::yaml::{block, comment, slug, string, template};
use crate::{Summary, Todo};

/// The stage that holds the `gate: secrets` of the names the runbook forbids.
pub const FORBID_STAGE: &str = "runbook-secrets";

pub fn write(d: &Draft) -> (String, Summary) {
    let mut s = Summary::default();
    let mut y = String::new();
    y.push_str("# stagegate.yml\n");
    y.push_str("# Drafted by `stagegate import` from a Markdown runbook. Each item names its runbook line;\n");
    y.push_str("# `# TODO` marks what was not translated. Review it before deploying with it.\n");
    let _ = writeln!(
        y,
        "project: {}  # runbook line {}",
        string(&d.project),
        d.project_line.max(1)
    );
    if !d.require.is_empty() {
        y.push_str("\nsecrets:\n  require:\n");
        for (name, line) in &d.require {
            let _ = writeln!(y, "    - {}  # runbook line {line}", string(name));
            s.secrets += 1;
        }
    }
    y.push_str("\nenvironments:\n  staging: {}\n");
    for (env, line) in &d.other_environments {
        let _ = writeln!(
            y,
            "  # runbook line {line}: a heading names {env}; its steps are not told apart by environment"
        );
        let _ = writeln!(y, "  {env}: {{}}");
    }
    y.push_str("\nstages:\n");
    if !d.forbid.is_empty() {
        let _ = writeln!(y, "  {FORBID_STAGE}:");
        let first = d.forbid.values().min().copied().unwrap_or(1);
        let _ = writeln!(
            y,
            "    # runbook line {first}: secrets the runbook says never to add"
        );
        y.push_str("    - name: \"secrets the runbook forbids are absent\"\n");
        if !d.other_environments.is_empty() {
            y.push_str("      when: environment.name == 'staging'\n");
        }
        y.push_str("      gate: secrets\n      forbid:\n");
        for (name, line) in &d.forbid {
            let _ = writeln!(y, "        - {}  # runbook line {line}", string(name));
            s.forbidden += 1;
        }
        s.stages += 1;
    }
    let todo = |s: &mut Summary, y: &mut String, indent: &str, line: usize, text: &str| {
        let _ = writeln!(y, "{indent}# TODO (line {line}): {}", comment(text));
        s.todos.push(Todo {
            line,
            message: text.to_string(),
        });
    };
    for stage in &d.stages {
        if !stage.has_steps() {
            let todos: Vec<_> = stage
                .items
                .iter()
                .filter(|i| matches!(i, Item::Todo { .. }))
                .collect();
            if todos.is_empty() {
                continue;
            }
            let _ = writeln!(
                y,
                "  # runbook line {}: \"{}\" has nothing translatable, so no stage",
                stage.line,
                comment(&stage.title)
            );
            for i in todos {
                if let Item::Todo { line, text } = i {
                    todo(&mut s, &mut y, "  ", *line, text);
                }
            }
            continue;
        }
        s.stages += 1;
        let _ = writeln!(
            y,
            "  # runbook line {}: {}",
            stage.line,
            comment(&stage.title)
        );
        let _ = writeln!(y, "  {}:", stage.name);
        for item in &stage.items {
            match item {
                Item::Heading { line, text } => {
                    let _ = writeln!(y, "    # runbook line {line}: {}", comment(text));
                }
                Item::Note { line, text } => {
                    let _ = writeln!(y, "    # runbook line {line}: {}", comment(text));
                }
                Item::Todo { line, text } => todo(&mut s, &mut y, "    ", *line, text),
                Item::Checklist {
                    line,
                    items,
                    manual,
                } => {
                    let _ = writeln!(y, "    # runbook line {line}");
                    y.push_str("    - gate: checklist\n");
                    if *manual {
                        y.push_str(
                            "      when: \"false\"  # a manual procedure: not run on deploy\n",
                        );
                    }
                    y.push_str("      items:\n");
                    let mut seen = std::collections::HashSet::new();
                    for (l, text) in items {
                        let base = match slug(text) {
                            x if x.is_empty() => "item".to_string(),
                            x => x,
                        };
                        let mut id = base.clone();
                        let mut n = 2;
                        while !seen.insert(id.clone()) {
                            id = format!("{base}-{n}");
                            n += 1;
                        }
                        let _ = writeln!(
                            y,
                            "        - {{ id: {id}, text: {} }}  # runbook line {l}",
                            string(text)
                        );
                        s.checklist_items += 1;
                    }
                }
                Item::Step(step) => step_yaml(&mut y, &mut s, step),
            }
        }
    }
    for (line, text) in &d.loose {
        todo(&mut s, &mut y, "  ", *line, text);
    }
    (y, s)
}

fn step_yaml(y: &mut String, s: &mut Summary, step: &Step) {
    let _ = writeln!(
        y,
        "    # runbook line {} ({})",
        step.line,
        comment(&step.lang)
    );
    let name = step.name.as_deref().map(template);
    let head = |y: &mut String| {
        match &name {
            Some(n) => {
                let _ = writeln!(y, "    - name: {n}");
            }
            // Without a comment above it, the step is named after its command's first line.
            None => y.push_str("    -\n"),
        }
        if step.manual {
            y.push_str("      when: \"false\"  # a manual procedure (rollback, troubleshooting): not run on deploy\n");
        }
    };
    match &step.action {
        Action::Run(cmd) => {
            head(y);
            let _ = writeln!(y, "      run: {}", block(cmd, 8));
            if let Some((line, rb)) = &step.rollback {
                let _ = writeln!(y, "      # runbook line {line}: the rollback of this step");
                let _ = writeln!(y, "      rollback: {}", block(rb, 8));
            }
            s.commands += 1;
        }
        Action::Http(c) => {
            head(y);
            http_yaml(y, c, "      ");
            s.curl_checks += 1;
            if !c.expect.is_empty() {
                s.curl_expectations += 1;
                y.push_str("      expect:\n");
                if let Some(st) = c.expect.status {
                    let _ = writeln!(y, "        status: {st}");
                }
                if !c.expect.json.is_empty() {
                    y.push_str("        json:\n");
                    for (path, v) in &c.expect.json {
                        let value = match v {
                            serde_json::Value::String(t) => template(t),
                            other => string(&other.to_string()),
                        };
                        let _ = writeln!(y, "          {}: {value}", string(path));
                    }
                }
            }
        }
        Action::Load(t) => {
            head(y);
            s.load_steps += 1;
            let _ = writeln!(y, "      load:  # from {}", t.tool);
            if let Some(v) = t.vus {
                let _ = writeln!(y, "        vus: {v}");
            }
            if let Some(d) = &t.duration {
                let _ = writeln!(y, "        duration: {}", string(d));
            } else if let Some(r) = t.requests {
                let _ = writeln!(y, "        requests: {r}");
            }
            y.push_str("        scenario:\n          - name: request\n");
            let c = HttpCheck {
                method: t.method.clone(),
                url: t.url.clone(),
                headers: t.headers.clone(),
                ..Default::default()
            };
            http_yaml(y, &c, "            ");
            if !t.slo.is_empty() {
                let list: Vec<String> = t.slo.iter().map(|x| string(x)).collect();
                let _ = writeln!(y, "        slo: [{}]", list.join(", "));
            }
        }
    }
    for (line, note) in &step.notes {
        let _ = writeln!(y, "      # runbook line {line}: {}", comment(note));
    }
}

/// Strings in a check are template text already (see `curl::to_template`).
fn http_yaml(y: &mut String, c: &HttpCheck, ind: &str) {
    let _ = writeln!(y, "{ind}http:");
    let _ = writeln!(y, "{ind}  url: {}", string(&c.url));
    if let Some(m) = &c.method {
        let _ = writeln!(y, "{ind}  method: {}", string(m));
    }
    if !c.headers.is_empty() {
        let _ = writeln!(y, "{ind}  headers:");
        for (k, v) in &c.headers {
            let _ = writeln!(y, "{ind}    {}: {}", string(k), string(v));
        }
    }
    if let Some((user, pw)) = &c.basic {
        let _ = writeln!(
            y,
            "{ind}  auth: {{ basic: {{ user: {}, password: {} }} }}",
            string(user),
            string(pw)
        );
    }
    match &c.body {
        Some(Body::Text(t)) => {
            let _ = writeln!(y, "{ind}  body: {}", string(t));
        }
        Some(Body::File(f)) => {
            let _ = writeln!(y, "{ind}  body: {{ file: {} }}", string(f));
        }
        Some(Body::Multipart(parts)) => {
            let _ = writeln!(y, "{ind}  multipart:");
            for (k, p) in parts {
                match p {
                    Part::Text(t) => {
                        let _ = writeln!(y, "{ind}    {}: {}", string(k), string(t));
                    }
                    Part::File(f) => {
                        let _ = writeln!(y, "{ind}    {}: {{ file: {} }}", string(k), string(f));
                    }
                }
            }
        }
        None => {}
    }
    if let Some(f) = &c.save {
        let _ = writeln!(y, "{ind}  save: {}", string(f));
    }
    if c.insecure {
        let _ = writeln!(y, "{ind}  tls: {{ insecure: true }}");
    }
    if c.follow_redirects {
        let _ = writeln!(y, "{ind}  follow_redirects: true");
    }
    if let Some(t) = &c.timeout {
        let _ = writeln!(y, "{ind}  timeout: {}", string(t));
    }
}
