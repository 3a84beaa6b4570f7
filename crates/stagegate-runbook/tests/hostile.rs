//! Runbook text that looks like YAML, shell or a template stays text in the plan.

use std::path::Path;

const RUNBOOK: &str = r#"# Evil "; rm -rf / # ${{ secrets.X }}

## Checks ${{ secrets.X }}

- [ ] "; rm -rf / #
- [ ] ${{ secrets.X }}: key: [a, {b}] &anchor *alias !tag

```bash
# ${{ secrets.X }} "; rm -rf / #
echo "${{ secrets.X }}" '"; rm -rf / #'
curl -H "X-Evil: ${{ secrets.X }}" 'https://h/${{ env.HOME }}/"; rm -rf / #'
# Expected: HTTP 200, {"detail": "${{ secrets.X }} \" #"}
```
"#;

#[test]
fn hostile_text_is_quoted_and_never_a_template() {
    let out = stagegate_runbook::import(RUNBOOK).unwrap();
    // Were any `${{ secrets.X }}` read as a template, validation would fail: X is undeclared.
    let (plan, _) = stagegate_plan::load_str(Path::new("stagegate.yml"), &out.yaml)
        .unwrap_or_else(|d| panic!("{d}\n{}", out.yaml));
    assert!(plan.secrets.require.is_empty() || !out.yaml.contains("- \"X\""));
    assert!(!out.yaml.contains("\n${{"), "{}", out.yaml);
    assert!(
        out.yaml.contains("${{ '${{' }} secrets.X }}"),
        "{}",
        out.yaml
    );
    assert_eq!(out.summary.checklist_items, 2);
    assert_eq!(out.summary.curl_checks, 1);
    assert_eq!(out.summary.curl_expectations, 1);
    assert_eq!(out.summary.commands, 1);
}

#[test]
fn a_runbook_over_5_mib_is_refused() {
    let big = "x".repeat(stagegate_runbook::MAX_INPUT + 1);
    assert!(matches!(
        stagegate_runbook::import(&big),
        Err(stagegate_runbook::ImportError::TooLarge { .. })
    ));
}

/// A rollback section's `kubectl rollout undo` becomes the rollback of the apply in its
/// namespace, and of nothing in another one.
#[test]
fn a_rollout_undo_rolls_back_the_apply_of_its_namespace_only() {
    let md = "# Shop\n\n## Deploy\n\n```bash\n# Apply\nkubectl apply -f k8s/ -n shop\n```\n\n```bash\n# Apply the other\nkubectl apply -f other/ -n elsewhere\n```\n\n## Rollback Procedure\n\n```bash\n# Undo\nkubectl rollout undo deployment/api -n shop\n```\n\n```bash\n# Undo a stranger\nkubectl rollout undo deployment/api -n nowhere\n```\n";
    let yaml = stagegate_runbook::import(md).unwrap().yaml;
    if let Err(d) = stagegate_plan::load_str(std::path::Path::new("stagegate.yml"), &yaml) {
        panic!("{d}\n{yaml}");
    }
    let rollbacks: Vec<&str> = yaml
        .lines()
        .filter(|l| l.trim_start().starts_with("rollback:"))
        .collect();
    assert_eq!(
        rollbacks,
        ["      rollback: \"kubectl rollout undo deployment/api -n shop\""],
        "{yaml}"
    );
    // The apply in `shop` carries it; the manual steps stay, the stranger with no note.
    let apply = yaml.find("kubectl apply -f k8s/ -n shop").unwrap();
    let other = yaml.find("kubectl apply -f other/").unwrap();
    let rb = yaml.find("rollback: ").unwrap();
    assert!(apply < rb && rb < other, "{yaml}");
    assert_eq!(
        yaml.matches("also the rollback of the deploy step").count(),
        1,
        "{yaml}"
    );
    assert_eq!(yaml.matches("when: \"false\"").count(), 2, "{yaml}");
}
