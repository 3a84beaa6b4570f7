//! A property test of the plan reader: thousands of mutated plans (the examples' and the
//! docs' real plans, cut, spliced, shuffled, nested deep, sprinkled with hostile bytes) go
//! through `load_str`, the entry point of `stagegate validate`. Every one must come back as
//! a plan or as errors, each with a message; none may panic or overflow the stack. The
//! reader runs on a 2 MiB thread stack (smaller than the main thread's 8 MiB), so a
//! recursion that grows with the input is caught as a crash.
//!
//! Deterministic: a fixed seed per case. `STAGEGATE_MUTATIONS=N` runs N cases instead of
//! the default 600 (CI runs the default).

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real plans: every example's `stagegate.yml` and every plan block of the docs.
fn corpus() -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo().join("examples")).unwrap() {
        let p = e.unwrap().path().join("stagegate.yml");
        if let Ok(t) = std::fs::read_to_string(&p) {
            out.push(t);
        }
    }
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap_or_default();
        let mut block: Option<String> = None;
        for line in text.lines() {
            match &mut block {
                None if line.starts_with("```yaml") => block = Some(String::new()),
                Some(b) if line.starts_with("```") => {
                    if b.starts_with("# stagegate.yml") {
                        out.push(b.clone());
                    }
                    block = None;
                }
                Some(b) => {
                    b.push_str(line);
                    b.push('\n');
                }
                None => {}
            }
        }
    }
    assert!(out.len() >= 10, "the corpus is too small: {}", out.len());
    out
}

const HOSTILE: &[&str] = &[
    "${{",
    "}}",
    "${{ ((((((((",
    "!!!!!!!!",
    "\u{3000}",
    "\u{0}",
    "'",
    "\"",
    "\\",
    "[[[[",
    "{{{{",
    "- - - -",
    ": :",
    "&a",
    "*a",
    "<<: *a",
    "|",
    ">-",
    "\t",
    "\r\n",
    "#",
    "%YAML 1.2",
    "---",
    "...",
    "?",
    "é",
    "\u{1F600}",
    "0x",
    "1e999",
    "-1",
    "99999999999999999999",
];

fn mutate(rng: &mut fastrand::Rng, plan: &str, donor: &str) -> String {
    let mut lines: Vec<String> = plan.lines().map(str::to_string).collect();
    let donor: Vec<&str> = donor.lines().collect();
    for _ in 0..rng.usize(1..=4) {
        let n = lines.len().max(1);
        match rng.u8(0..11) {
            0 if !lines.is_empty() => {
                lines.remove(rng.usize(0..lines.len()));
            }
            1 if !lines.is_empty() => {
                let l = lines[rng.usize(0..lines.len())].clone();
                lines.insert(rng.usize(0..n), l);
            }
            2 if lines.len() > 1 => {
                let (a, b) = (rng.usize(0..lines.len()), rng.usize(0..lines.len()));
                lines.swap(a, b);
            }
            3 if !donor.is_empty() => {
                let l = donor[rng.usize(0..donor.len())].to_string();
                lines.insert(rng.usize(0..n), l);
            }
            4 => {
                // A deep template in a command that is read: `run:` values are templates.
                let depth = rng.usize(1..5000);
                let (open, close) = if rng.bool() { ("(", ")") } else { ("!", "") };
                let t = format!(
                    "${{{{ {}vars.x{} }}}}",
                    open.repeat(depth),
                    close.repeat(depth)
                );
                match lines.iter().position(|l| l.contains("run: ")) {
                    Some(i) => {
                        let at = lines[i].find("run: ").unwrap() + 5;
                        lines[i].truncate(at);
                        lines[i].push_str(&format!("echo {t}"));
                    }
                    None => lines.push(format!("release: {{ version: \"{t}\" }}")),
                }
            }
            9 => {
                // Deep flow collections under a new top-level key.
                let depth = rng.usize(1..5000);
                let (open, close) = if rng.bool() {
                    ("[", "]")
                } else {
                    ("{a: ", "}")
                };
                lines.push(format!(
                    "deep: {}1{}",
                    open.repeat(depth),
                    close.repeat(depth)
                ));
            }
            5 => {
                let depth = rng.usize(1..400);
                for d in 0..depth {
                    lines.push(format!("{}k{d}:", " ".repeat(d)));
                }
            }
            6 if !lines.is_empty() => {
                let i = rng.usize(0..lines.len());
                let h = HOSTILE[rng.usize(0..HOSTILE.len())];
                let l = &mut lines[i];
                let at = (0..=l.len())
                    .filter(|p| l.is_char_boundary(*p))
                    .nth(rng.usize(0..=l.chars().count()))
                    .unwrap_or(0);
                l.insert_str(at, h);
            }
            7 if !lines.is_empty() => {
                let i = rng.usize(0..lines.len());
                let big = "A".repeat(rng.usize(1..100_000));
                lines[i].push_str(&big);
            }
            8 if !lines.is_empty() => {
                let i = rng.usize(0..lines.len());
                let l = &mut lines[i];
                if rng.bool() {
                    l.insert(0, ' ');
                } else if l.starts_with(' ') {
                    l.remove(0);
                }
            }
            _ if !lines.is_empty() => {
                // Cut a line short at a random character.
                let i = rng.usize(0..lines.len());
                let keep = rng.usize(0..=lines[i].chars().count());
                lines[i] = lines[i].chars().take(keep).collect();
            }
            _ => {}
        }
    }
    lines.join("\n")
}

#[test]
fn mutated_plans_never_crash_the_reader() {
    let cases: usize = std::env::var("STAGEGATE_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let corpus = corpus();
    let worker = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || {
            let mut results = (0usize, 0usize);
            for case in 0..cases {
                let mut rng = fastrand::Rng::with_seed(case as u64);
                let plan = &corpus[rng.usize(0..corpus.len())];
                let donor = &corpus[rng.usize(0..corpus.len())];
                let text = mutate(&mut rng, plan, donor);
                let outcome = std::panic::catch_unwind(|| {
                    stagegate_plan::load_str(Path::new("stagegate.yml"), &text)
                });
                match outcome {
                    Err(_) => panic!("case {case} panicked the reader; the plan:\n{text}"),
                    Ok(Ok(_)) => results.0 += 1,
                    Ok(Err(d)) => {
                        assert!(d.error_count() > 0, "case {case}: Err without an error");
                        for e in d.errors() {
                            assert!(!e.message.is_empty(), "case {case}: an empty error");
                        }
                        results.1 += 1;
                    }
                }
            }
            results
        })
        .unwrap();
    let (ok, invalid) = worker
        .join()
        .expect("the reader crashed (a panic or a stack overflow) on a mutated plan");
    eprintln!("{cases} mutated plans: {ok} valid, {invalid} invalid, no crash");
    assert_eq!(ok + invalid, cases);
}
