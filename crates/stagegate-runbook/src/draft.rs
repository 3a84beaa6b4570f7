//! From the runbook's blocks to a [`Draft`]: stages of items, each with its runbook line,
//! the secrets the runbook names, and every TODO.

use std::collections::{BTreeMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use crate::curl::{self, HttpCheck};
use crate::load::{self, LoadTest};
use crate::markdown::Block;
use crate::secrets;
use crate::shell::{self, Command, Dialect, Piece};
use crate::yaml::slug;

/// The plan being drafted, before it is written as YAML.
#[derive(Debug, Default)]
pub struct Draft {
    pub project: String,
    pub project_line: usize,
    /// Environments besides `staging` that headings name, with the line of the first one.
    pub other_environments: Vec<(String, usize)>,
    pub stages: Vec<Stage>,
    /// Secret names to require, with the line of their first mention.
    pub require: BTreeMap<String, usize>,
    /// Secret names the runbook forbids, with the line of their first mention.
    pub forbid: BTreeMap<String, usize>,
    /// TODOs outside any stage (a section with nothing translatable).
    pub loose: Vec<(usize, String)>,
}

#[derive(Debug, Default)]
pub struct Stage {
    pub name: String,
    pub title: String,
    pub line: usize,
    pub items: Vec<Item>,
}

impl Stage {
    pub fn has_steps(&self) -> bool {
        self.items.iter().any(Item::is_step)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A sub-heading, kept as a comment.
    Heading {
        line: usize,
        text: String,
    },
    Todo {
        line: usize,
        text: String,
    },
    Note {
        line: usize,
        text: String,
    },
    Checklist {
        line: usize,
        items: Vec<(usize, String)>,
        manual: bool,
    },
    Step(Box<Step>),
}

impl Item {
    pub fn is_step(&self) -> bool {
        matches!(self, Item::Step(_) | Item::Checklist { .. })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub line: usize,
    pub name: Option<String>,
    /// The code block's language.
    pub lang: String,
    pub action: Action,
    /// Comments to write with the step: the driver that fits, notes from the runbook.
    pub notes: Vec<(usize, String)>,
    /// A manual procedure (rollback, troubleshooting): written with `when: "false"`.
    pub manual: bool,
    /// The command that undoes the step, with its runbook line: a rollback block that names
    /// this step (see [`Builder::step_block`]).
    pub rollback: Option<(usize, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Run(String),
    Http(HttpCheck),
    Load(LoadTest),
}

/// `kubectl rollout undo deployment/NAME [-n NS]`, a rollback section's usual command.
static ROLLOUT_UNDO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^kubectl\s+rollout\s+undo\s+(?:deployment|deploy|deployments)/([A-Za-z0-9._-]+)")
        .unwrap()
});

/// The namespace a kubectl command names (`-n NS`, `--namespace NS`, `--namespace=NS`).
fn kube_namespace(command: &str) -> Option<&str> {
    let words: Vec<&str> = command.split_whitespace().collect();
    words.iter().enumerate().find_map(|(i, w)| match *w {
        "-n" | "--namespace" => words.get(i + 1).copied(),
        _ => w.strip_prefix("--namespace="),
    })
}

/// A rollback section's `kubectl rollout undo deployment/NAME` (a manual step) also becomes
/// the `rollback:` of the deploy step it undoes: the first step run on deploy that changes
/// that deployment (`kubectl apply`, `kubectl set image`, `kubectl rollout restart`) in the
/// same namespace, and has no rollback yet. The manual step stays where the runbook had it,
/// with a note; a rollout undone that no step changed is left as it was.
fn attach_rollouts_undone(stages: &mut [Stage]) {
    let mut undos: Vec<(usize, String, String, Option<String>)> = Vec::new();
    for st in stages.iter() {
        for i in &st.items {
            if let Item::Step(s) = i
                && s.manual
                && let Action::Run(cmd) = &s.action
                && let Some(m) = ROLLOUT_UNDO.captures(cmd.trim())
            {
                undos.push((
                    s.line,
                    cmd.trim().to_string(),
                    m[1].to_string(),
                    kube_namespace(cmd).map(str::to_string),
                ));
            }
        }
    }
    for (line, cmd, name, ns) in undos {
        let target = stages
            .iter_mut()
            .flat_map(|st| st.items.iter_mut())
            .find_map(|i| match i {
                Item::Step(s) if !s.manual && s.rollback.is_none() => {
                    let Action::Run(run) = &s.action else {
                        return None;
                    };
                    let changes = run.lines().any(|l| {
                        let l = l.trim();
                        (l.starts_with("kubectl apply")
                            || l.starts_with("kubectl set image")
                            || l.starts_with("kubectl rollout restart"))
                            && kube_namespace(l).map(str::to_string) == ns
                            && (l.starts_with("kubectl apply") || l.contains(&name))
                    });
                    changes.then_some(&mut **s)
                }
                _ => None,
            });
        let Some(step) = target else { continue };
        step.rollback = Some((line, cmd));
        let at = step.line;
        if let Some(manual) = stages
            .iter_mut()
            .flat_map(|st| st.items.iter_mut())
            .find_map(|i| match i {
                Item::Step(s) if s.manual && s.line == line => Some(&mut **s),
                _ => None,
            })
        {
            manual.notes.push((line, format!("also the rollback of the deploy step at runbook line {at}, run when a later step fails")));
        }
    }
}

static MANUAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)roll ?back|troubleshoot|incident|issue\b|diagnos|emergency|on-call|hotfix|common issues|known issues")
        .unwrap()
});
static EXPECTED_LEAD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^\s*(expected|should (return|answer|respond))").unwrap());
static PS_ONLY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?im)^\s*\$[A-Za-z_][\w:]*\s*=|\$env:|\b(Get|Set|New|Write|Remove|Invoke)-[A-Z]\w+|^\s*if\s*\(|^\s*\}\s*else|^\s*py\s+-3\b")
        .unwrap()
});

/// Builds the draft from the runbook's blocks.
pub fn build(blocks: &[Block]) -> Draft {
    let mut b = Builder::default();
    // The stage `emit` writes for forbidden secrets: a section of that name is `-2`.
    b.names.insert(crate::emit::FORBID_STAGE.to_string());
    // Stages are the shallowest headings below the title.
    let title_at = blocks
        .iter()
        .position(|bl| matches!(bl, Block::Heading { level: 1, .. }));
    let stage_level = blocks
        .iter()
        .enumerate()
        .filter_map(|(i, bl)| match bl {
            Block::Heading { level, .. } if Some(i) != title_at => Some(*level),
            _ => None,
        })
        .min()
        .unwrap_or(2);
    if let Some(Block::Heading { text, line, .. }) = title_at.map(|i| &blocks[i]) {
        b.draft.project = slug(text);
        b.draft.project_line = *line;
    }
    if b.draft.project.is_empty() {
        b.draft.project = "runbook".into();
    }
    for (i, block) in blocks.iter().enumerate() {
        if Some(i) == title_at {
            continue;
        }
        b.block(block, stage_level);
    }
    b.finish()
}

#[derive(Default)]
struct Builder {
    draft: Draft,
    stage: Option<Stage>,
    stage_manual: bool,
    sub_manual: bool,
    /// Text blocks of the current subsection: where SLO lines are looked for.
    sub_text: Vec<String>,
    /// Index of the first item of the current subsection in the stage.
    sub_start: usize,
    forbid_context: bool,
    expect_next_json: bool,
    names: HashSet<String>,
}

impl Builder {
    fn stage(&mut self) -> &mut Stage {
        self.stage.get_or_insert_with(|| Stage {
            name: "runbook".into(),
            title: "runbook".into(),
            line: 1,
            items: Vec::new(),
        })
    }

    fn manual(&self) -> bool {
        self.stage_manual || self.sub_manual
    }

    fn todo(&mut self, line: usize, text: impl Into<String>) {
        let text = text.into();
        self.stage().items.push(Item::Todo { line, text });
    }

    fn block(&mut self, block: &Block, stage_level: u8) {
        if !matches!(block, Block::Text { item: true, .. } | Block::Task { .. })
            && (!matches!(block, Block::Text { .. }) || !self.forbid_context_text(block))
        {
            self.forbid_context = false;
        }
        match block {
            Block::Heading { level, text, line } => {
                self.expect_next_json = false;
                self.end_subsection();
                for env in ["production", "development", "qa", "uat"] {
                    if text
                        .to_lowercase()
                        .split(|c: char| !c.is_alphanumeric())
                        .any(|w| w == env)
                        && !self.draft.other_environments.iter().any(|(e, _)| e == env)
                    {
                        self.draft.other_environments.push((env.to_string(), *line));
                    }
                }
                if *level <= stage_level {
                    self.end_stage();
                    self.stage_manual = MANUAL.is_match(text);
                    self.sub_manual = false;
                    self.stage = Some(Stage {
                        name: self.unique_name(text),
                        title: text.clone(),
                        line: *line,
                        items: Vec::new(),
                    });
                } else {
                    self.sub_manual = MANUAL.is_match(text);
                    let text = text.clone();
                    self.stage().items.push(Item::Heading { line: *line, text });
                }
            }
            Block::Task { text, line } => {
                self.secrets_in_text(text, *line);
                let manual = self.manual();
                let stage = self.stage();
                match stage.items.last_mut() {
                    Some(Item::Checklist { items, .. }) => items.push((*line, text.clone())),
                    _ => {
                        // Text between items of one list (a nested list's parent) does not
                        // split the checklist.
                        let last_check = stage
                            .items
                            .iter()
                            .rposition(|i| matches!(i, Item::Checklist { .. }));
                        let only_notes_since = last_check.is_some_and(|at| {
                            stage.items[at + 1..]
                                .iter()
                                .all(|i| matches!(i, Item::Note { .. }))
                        });
                        if let (Some(at), true) = (last_check, only_notes_since)
                            && let Item::Checklist { items, .. } = &mut stage.items[at]
                        {
                            items.push((*line, text.clone()));
                        } else {
                            stage.items.push(Item::Checklist {
                                line: *line,
                                items: vec![(*line, text.clone())],
                                manual,
                            });
                        }
                    }
                }
            }
            Block::Text { text, line, .. } => {
                self.secrets_in_text(text, *line);
                self.sub_text.push(text.clone());
                let lower = text.to_lowercase();
                self.expect_next_json =
                    lower.contains("expected") && text.trim_end().ends_with(':');
                if let Some(Item::Checklist { .. }) =
                    self.stage.as_ref().and_then(|s| s.items.last())
                {
                    // The parent item of a nested checklist ("Verify:"): a note.
                    self.stage().items.push(Item::Note {
                        line: *line,
                        text: text.clone(),
                    });
                }
            }
            Block::Code {
                lang,
                body,
                line,
                step,
            } => {
                let expect_json = std::mem::take(&mut self.expect_next_json);
                if *step && matches!(lang.as_str(), "bash" | "sh" | "shell") {
                    self.step_block(lang, body, *line);
                } else {
                    self.code(lang, body, *line, expect_json);
                }
            }
        }
    }

    /// A forbidding sentence opens a context: the list after it names forbidden secrets.
    fn forbid_context_text(&mut self, block: &Block) -> bool {
        if let Block::Text { text, .. } = block {
            secrets::forbids(text)
        } else {
            false
        }
    }

    fn secrets_in_text(&mut self, text: &str, line: usize) {
        if secrets::forbids(text) {
            self.forbid_context = true;
            for n in secrets::names_in(text) {
                self.draft.forbid.entry(n).or_insert(line);
            }
            return;
        }
        if self.forbid_context {
            for n in secrets::names_in(text) {
                self.draft.forbid.entry(n).or_insert(line);
            }
            return;
        }
        for n in secrets::mentioned(text) {
            self.draft.require.entry(n).or_insert(line);
        }
    }

    fn unique_name(&mut self, title: &str) -> String {
        let base = match slug(title) {
            s if s.is_empty() => "stage".to_string(),
            s => s,
        };
        let mut name = base.clone();
        let mut n = 2;
        while !self.names.insert(name.clone()) {
            name = format!("{base}-{n}");
            n += 1;
        }
        name
    }

    fn end_subsection(&mut self) {
        let text = std::mem::take(&mut self.sub_text).join("\n");
        let start = self.sub_start;
        if let Some(stage) = self.stage.as_mut() {
            let from = start.min(stage.items.len());
            for item in &mut stage.items[from..] {
                if let Item::Step(step) = item
                    && let Action::Load(t) = &mut step.action
                {
                    for s in load::slo_lines(&text) {
                        if !t.slo.contains(&s) {
                            t.slo.push(s);
                        }
                    }
                }
            }
            self.sub_start = stage.items.len();
        }
    }

    fn end_stage(&mut self) {
        self.end_subsection();
        self.sub_start = 0;
        if let Some(stage) = self.stage.take() {
            self.draft.stages.push(stage);
        }
    }

    fn finish(mut self) -> Draft {
        self.end_stage();
        attach_rollouts_undone(&mut self.draft.stages);
        for name in self.draft.forbid.keys() {
            self.draft.require.remove(name);
        }
        self.draft
    }

    /// A ```` ```bash step ```` block (as `stagegate doc` writes a `run` step): one step, its
    /// name on the first `# ` line, the rest its command as written. Blank lines and comments
    /// in the command do not split it, as they would in another block.
    fn step_block(&mut self, lang: &str, body: &str, line: usize) {
        let (name, command, at) = match body.split_once('\n') {
            Some((first, rest)) if first.starts_with("# ") => {
                (Some(first[2..].trim().to_string()), rest, line + 1)
            }
            _ => (None, body, line),
        };
        let command = command.trim_end_matches('\n');
        if command.trim().is_empty() {
            self.todo(line, "a step block without a command");
            return;
        }
        for n in secrets::referenced(command) {
            self.draft.require.entry(n).or_insert(at);
        }
        let manual = self.manual();
        if let Some(of) = name.as_deref().and_then(|n| n.strip_prefix("rollback: "))
            && let Some(step) = self.run_step_to_roll_back(of)
        {
            step.rollback = Some((at, command.to_string()));
            return;
        }
        self.stage().items.push(Item::Step(Box::new(Step {
            line: at,
            name,
            lang: format!("{lang} step"),
            action: Action::Run(command.to_string()),
            notes: Vec::new(),
            manual,
            rollback: None,
        })));
    }

    /// The first `run` step so far named `name` that is run on deploy and has no rollback
    /// yet: where a `# rollback: NAME` block attaches. Rollbacks come in the order of their
    /// steps (as `stagegate doc` writes them), so two steps of one name each get theirs.
    /// None when there is no such step: the block is then a manual step, as any rollback
    /// section's.
    fn run_step_to_roll_back(&mut self, name: &str) -> Option<&mut Step> {
        self.draft
            .stages
            .iter_mut()
            .chain(self.stage.as_mut())
            .flat_map(|st| st.items.iter_mut())
            .find_map(|i| match i {
                Item::Step(s)
                    if s.name.as_deref() == Some(name)
                        && matches!(s.action, Action::Run(_))
                        && !s.manual
                        && s.rollback.is_none() =>
                {
                    Some(&mut **s)
                }
                _ => None,
            })
    }

    fn code(&mut self, lang: &str, body: &str, line: usize, expect_json: bool) {
        let dialect = match lang {
            "bash" | "sh" | "shell" | "zsh" | "console" | "shell-session" | "" => Dialect::Sh,
            "powershell" | "ps1" | "pwsh" | "ps" => Dialect::PowerShell,
            "json" if expect_json => {
                return self.attach_json(body, line);
            }
            other => {
                let n = body.lines().count();
                if expect_json && body.trim_start().starts_with('{') {
                    return self.attach_json(body, line);
                }
                self.todo(
                    line,
                    format!("a {other} block ({n} lines) is not translated"),
                );
                return;
            }
        };
        let body = if lang == "console" {
            console_commands(body)
        } else {
            body.to_string()
        };
        let pieces = shell::split(&body, line, dialect);
        let commands: Vec<&Command> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Command(c) => Some(c),
                _ => None,
            })
            .collect();
        let prose = pieces
            .iter()
            .filter(|p| matches!(p, Piece::Prose { .. } | Piece::Json { .. }))
            .count();
        if lang.is_empty() && (commands.is_empty() || prose > 0) {
            if expect_json && body.trim_start().starts_with('{') {
                return self.attach_json(&body, line);
            }
            let first = body
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            self.todo(
                line,
                format!(
                    "a block without a language ({} lines) is not a shell block: {}",
                    body.lines().count(),
                    shorten(first)
                ),
            );
            return;
        }
        for c in &commands {
            for l in c.text.lines() {
                if let Some(n) = secrets::assigned(l) {
                    self.draft.require.entry(n).or_insert(c.line);
                }
            }
            for n in secrets::referenced(&c.text) {
                self.draft.require.entry(n).or_insert(c.line);
            }
        }
        if !commands.is_empty()
            && prose == 0
            && commands.iter().all(|c| is_plain_assignment(&c.text))
        {
            let found: Vec<String> = commands
                .iter()
                .filter_map(|c| secrets::assigned(&c.text))
                .collect();
            let secrets = if found.is_empty() {
                String::new()
            } else {
                format!("; its secrets are required: {}", found.join(", "))
            };
            self.todo(
                line,
                format!("{} settings (`NAME=value`) are a dotenv file, not commands: write them to a file such as `.env.staging`{secrets}", commands.len()),
            );
            return;
        }
        if commands.is_empty() {
            let comments: Vec<&str> = pieces
                .iter()
                .filter_map(|p| match p {
                    Piece::Comment { text, .. } => Some(text.as_str()),
                    _ => None,
                })
                .filter(|t| !t.is_empty())
                .take(3)
                .collect();
            self.todo(
                line,
                format!(
                    "manual steps, written as comments: {}",
                    shorten(&comments.join("; "))
                ),
            );
            return;
        }
        self.pieces(pieces, lang, dialect);
    }

    fn attach_json(&mut self, body: &str, line: usize) {
        let fields = curl::json_fields(body);
        let manual = self.manual();
        let stage = self.stage();
        let last = stage.items.iter_mut().rev().find_map(|i| match i {
            Item::Step(s) => Some(&mut **s),
            _ => None,
        });
        match last {
            Some(Step {
                action: Action::Http(c),
                notes,
                ..
            }) if !fields.is_empty() => {
                c.expect.json.extend(fields);
                notes.push((
                    line,
                    "the expected JSON answer is the block at this line".into(),
                ));
            }
            _ => {
                let _ = manual;
                self.todo(
                    line,
                    "an expected JSON answer with no curl check before it is not translated",
                );
            }
        }
    }

    fn pieces(&mut self, pieces: Vec<Piece>, lang: &str, dialect: Dialect) {
        let mut group: Vec<(usize, String)> = Vec::new();
        // The index (in the stage) of the last step this block produced.
        let mut last: Option<usize> = None;
        let mut expecting = false;
        let mut after_command = false;
        if dialect == Dialect::PowerShell
            && let Some(line) = pieces.iter().find_map(|p| match p {
                Piece::Command(c) if !PS_ONLY.is_match(&c.text) => Some(c.line),
                _ => None,
            })
        {
            self.stage().items.push(Item::Note {
                    line,
                    text: "a powershell block: commands that read as sh too are kept; check they run under `sh -c`".into(),
                });
        }
        for piece in pieces {
            let was_after_command =
                std::mem::replace(&mut after_command, matches!(piece, Piece::Command(_)));
            match piece {
                Piece::Comment { line, text } => {
                    if !text.is_empty() {
                        group.push((line, text));
                    }
                }
                Piece::Blank => {
                    expecting = self.flush(&mut group, last) || expecting && group.is_empty();
                }
                Piece::Command(c) => {
                    let mut name = None;
                    if !group.is_empty() {
                        if EXPECTED_LEAD.is_match(&group[0].1) {
                            self.flush(&mut group, last);
                        } else {
                            name = Some(
                                group
                                    .drain(..)
                                    .map(|(_, t)| t.trim_end_matches(':').to_string())
                                    .collect::<Vec<_>>()
                                    .join("; "),
                            );
                        }
                    }
                    expecting = false;
                    let merge = was_after_command && name.is_none();
                    last = self
                        .command(c, name, lang, dialect, merge.then_some(last).flatten())
                        .or(last);
                }
                Piece::Json { line, text } => {
                    let was_expecting = !group.is_empty() && EXPECTED_LEAD.is_match(&group[0].1);
                    self.flush(&mut group, last);
                    if expecting || was_expecting {
                        self.attach_json(&text, line);
                    } else {
                        self.todo(
                            line,
                            format!(
                                "a JSON value in a shell block is not translated: {}",
                                shorten(&text)
                            ),
                        );
                    }
                }
                Piece::Prose { line, text } => {
                    self.flush(&mut group, last);
                    self.todo(line, format!("not a shell command: {}", shorten(&text)));
                }
            }
        }
        self.flush(&mut group, last);
    }

    /// Comments after a command: an expectation for it, or notes. True for an "Expected".
    fn flush(&mut self, group: &mut Vec<(usize, String)>, last: Option<usize>) -> bool {
        if group.is_empty() {
            return false;
        }
        let lines = std::mem::take(group);
        let expected = EXPECTED_LEAD.is_match(&lines[0].1);
        let joined = lines
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let stage = self.stage();
        let step = last.and_then(|i| match stage.items.get_mut(i) {
            Some(Item::Step(s)) => Some(s),
            _ => None,
        });
        match step {
            Some(step) => {
                if expected && let Action::Http(c) = &mut step.action {
                    let e = curl::parse_expected(&joined);
                    if e.status.is_some() {
                        c.expect.status = e.status;
                    }
                    c.expect.json.extend(e.json);
                }
                if let Action::Load(t) = &mut step.action {
                    for s in load::slo_lines(&joined) {
                        if !t.slo.contains(&s) {
                            t.slo.push(s);
                        }
                    }
                }
                for (l, t) in lines {
                    step.notes.push((l, t));
                }
            }
            None => {
                for (line, text) in lines {
                    stage.items.push(Item::Note { line, text });
                }
            }
        }
        expected
    }

    /// Adds the step for one command; returns its index in the stage.
    /// `merge_into`: the previous step, when this command follows it with no blank line or
    /// comment between: commands of one paragraph are one `run` step, so a `cd` holds.
    fn command(
        &mut self,
        c: Command,
        name: Option<String>,
        lang: &str,
        dialect: Dialect,
        merge_into: Option<usize>,
    ) -> Option<usize> {
        let manual = self.manual();
        if dialect == Dialect::PowerShell && PS_ONLY.is_match(&c.text) {
            self.todo(
                c.line,
                format!(
                    "PowerShell, not translated: {}",
                    shorten(c.text.lines().next().unwrap_or(""))
                ),
            );
            return None;
        }
        let text = if dialect == Dialect::PowerShell {
            c.text.replace("`\n", "\\\n")
        } else {
            c.text.clone()
        };
        let mut notes = Vec::new();
        // `export OPENAI_API_KEY="your-key"` sets a secret by hand: the plan requires it
        // instead (see `secrets.require`), so no step would do anything useful.
        if !text.contains('\n')
            && text.starts_with("export ")
            && let Some(secret) = secrets::assigned(&text)
        {
            self.stage().items.push(Item::Note {
                line: c.line,
                text: format!("`{secret}` is set by hand here: the plan requires it under `secrets` (export it or put it in `.env.staging`)"),
            });
            return None;
        }
        let name = name.or(c.trailing.clone());
        let words = shell::words(&text);
        let program = c.program();
        let action = if program == "curl" && !shell::is_compound(&text) {
            match curl::parse(&words) {
                Some(check) => {
                    for t in &check.todos {
                        notes.push((c.line, format!("TODO: {t}")));
                    }
                    Action::Http(check)
                }
                None => Action::Run(text.clone()),
            }
        } else if matches!(program, "hey" | "ab" | "wrk") && !shell::is_compound(&text) {
            match load::parse(&words) {
                Some(t) => {
                    for todo in &t.todos {
                        notes.push((c.line, format!("TODO: {todo}")));
                    }
                    Action::Load(t)
                }
                None => Action::Run(text.clone()),
            }
        } else {
            if let Some(d) = driver_note(program, &text, c.heredoc.as_deref()) {
                notes.push((c.line, d));
            }
            Action::Run(text.clone())
        };
        // TODOs inside a step count like the others: they are in the notes and the summary.
        let todo_notes: Vec<(usize, String)> = notes
            .iter()
            .filter(|(_, n)| n.starts_with("TODO: "))
            .map(|(l, n)| (*l, n.trim_start_matches("TODO: ").to_string()))
            .collect();
        let stage = self.stage();
        let last_item = stage.items.len().checked_sub(1);
        if let (Action::Run(more), Some(at)) = (&action, merge_into)
            && last_item == Some(at)
            && let Some(Item::Step(prev)) = stage.items.get_mut(at)
            && let Action::Run(cmd) = &mut prev.action
        {
            cmd.push('\n');
            cmd.push_str(more);
            for (l, n) in notes {
                if !prev.notes.iter().any(|(_, m)| *m == n) {
                    prev.notes.push((l, n));
                }
            }
            return Some(at);
        }
        stage.items.push(Item::Step(Box::new(Step {
            line: c.line,
            name,
            lang: if lang.is_empty() {
                "no language".into()
            } else {
                lang.to_string()
            },
            action,
            notes: notes
                .into_iter()
                .filter(|(_, n)| !n.starts_with("TODO: "))
                .collect(),
            manual,
            rollback: None,
        })));
        let at = stage.items.len() - 1;
        for (l, t) in todo_notes {
            stage.items.push(Item::Todo { line: l, text: t });
        }
        Some(at)
    }
}

/// The driver that would run this command as a service, when one fits.
fn driver_note(program: &str, text: &str, heredoc: Option<&str>) -> Option<String> {
    if program == "kubectl" || program == "helm" {
        if text.contains("rollout undo") {
            return Some("driver: kubernetes; with a kubernetes service stagegate rolls the deployment back by itself (docs/drivers-kubernetes.md)".into());
        }
        return Some(
            "driver: kubernetes would run this as a service (docs/drivers-kubernetes.md)".into(),
        );
    }
    if program.starts_with("docker") {
        return Some("driver: docker would run this as a service (docs/drivers-docker.md)".into());
    }
    if matches!(program, "ssh" | "scp" | "rsync") {
        let host = heredoc
            .unwrap_or(text)
            .split_whitespace()
            .find(|w| w.contains('@'))
            .map(|h| format!(" on {h}"))
            .unwrap_or_default();
        return Some(format!(
            "driver: ssh would run this{host} (docs/drivers.md)"
        ));
    }
    None
}

fn is_plain_assignment(text: &str) -> bool {
    static PLAIN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^[A-Z][A-Z0-9_]*=\S*$").unwrap());
    PLAIN.is_match(text.trim())
}

/// A console transcript's commands: `$ ` lines; the output becomes comments.
fn console_commands(body: &str) -> String {
    body.lines()
        .map(|l| match l.strip_prefix("$ ") {
            Some(cmd) => cmd.to_string(),
            None if l.trim().is_empty() => String::new(),
            None => format!("# {l}"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn shorten(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 100 {
        format!("{}...", one.chars().take(100).collect::<String>())
    } else {
        one
    }
}
