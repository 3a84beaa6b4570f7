//! The five seed runbooks, imported: the output must equal `tests/golden/NNN.yml` (run with
//! `UPDATE_GOLDEN=1` to rewrite them, then review the diff) and must be a valid plan.

use std::path::{Path, PathBuf};

fn seeds() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/seeds");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    v.sort();
    v
}

#[test]
fn seeds_match_their_golden_plans_and_validate() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    let all = seeds();
    assert_eq!(all.len(), 5, "five seeds");
    for seed in all {
        let stem = seed.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&seed).unwrap();
        let out = stagegate_runbook::import(&text).unwrap();
        let golden = seed
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join(format!("golden/{stem}.yml"));
        if update {
            std::fs::write(&golden, &out.yaml).unwrap();
        } else {
            let want = std::fs::read_to_string(&golden).unwrap_or_default();
            if want != out.yaml {
                failures.push(format!(
                    "{stem}: the output differs from {}; rerun with UPDATE_GOLDEN=1 and review the diff",
                    golden.display()
                ));
            }
        }
        let plan_path = std::env::temp_dir().join(format!("stagegate-golden-{stem}.yml"));
        if let Err(d) = stagegate_plan::load_str(&plan_path, &out.yaml) {
            failures.push(format!("{stem}: the plan does not validate:\n{d}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
