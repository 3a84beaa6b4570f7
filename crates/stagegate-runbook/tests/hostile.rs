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
