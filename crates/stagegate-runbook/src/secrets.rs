//! Secret names a runbook mentions: `export OPENAI_API_KEY=...`, `JWT_SECRET=<use-secrets-manager>`,
//! `` `STAGING_DEPLOY_KEY` `` in prose; and names it forbids ("Never add `ALPACA_LIVE_API_KEY`").

use std::sync::LazyLock;

use regex::Regex;

static ASSIGN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=("[^"]*"|'[^']*'|\S*)"#).unwrap()
});
static CODE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"`\$?([A-Z][A-Z0-9_]*)`").unwrap());
static BARE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)\b").unwrap());
static FORBIDS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(never|do not|don't|must not)\s+(add|use|set|put|store|commit)\b").unwrap()
});
static CREDENTIAL_URL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"://[^/\s:@]+:[^/\s@]+@").unwrap());

/// Whether a variable name reads as a secret: `*_KEY`, `*_SECRET`, `*_TOKEN`, `*_PASSWORD`.
pub fn is_secret_name(name: &str) -> bool {
    const SUFFIXES: &[&str] = &["KEY", "SECRET", "TOKEN", "PASSWORD", "PASS", "CREDENTIALS"];
    let last = name.rsplit('_').next().unwrap_or(name);
    name.contains('_') && SUFFIXES.contains(&last)
}

/// The secret a shell or dotenv line assigns: `export NAME=value` where the name reads as a
/// secret, the value is a placeholder (`<use-secrets-manager>`, `your-...`) or a URL with a
/// password in it.
pub fn assigned(line: &str) -> Option<String> {
    let c = ASSIGN.captures(line)?;
    let name = c[1].to_string();
    let value = c[2].trim_matches(['"', '\'']);
    let placeholder = (value.starts_with('<') && value.ends_with('>'))
        || value.starts_with("your-")
        || value.to_lowercase().contains("secrets-manager");
    let credential_url = CREDENTIAL_URL.is_match(value);
    let is_secret = is_secret_name(&name) || placeholder || credential_url;
    // `$STAGING_KEY`: the value comes from elsewhere; that name is the secret.
    (is_secret && !value.starts_with('$')).then_some(name)
}

/// Secret names a line of prose mentions in code spans (`` `STAGING_DEPLOY_KEY` ``).
pub fn mentioned(text: &str) -> Vec<String> {
    CODE_NAME
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .filter(|n| is_secret_name(n))
        .collect()
}

/// Shell variables a command reads that are secrets by name (`$STAGING_BLOB_KEY`).
pub fn referenced(command: &str) -> Vec<String> {
    static REF: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\$\{?([A-Z][A-Z0-9_]*)\}?").unwrap());
    REF.captures_iter(command)
        .map(|c| c[1].to_string())
        .filter(|n| is_secret_name(n))
        .collect()
}

/// Whether a sentence forbids what it names ("Never add these secrets to staging").
pub fn forbids(text: &str) -> bool {
    FORBIDS.is_match(text)
}

/// Secret-like names in a line that is under a forbidding sentence, quoted or not.
pub fn names_in(text: &str) -> Vec<String> {
    BARE_NAME
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .filter(|n| is_secret_name(n))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments() {
        assert_eq!(
            assigned(r#"export OPENAI_API_KEY="your-openai-api-key""#).as_deref(),
            Some("OPENAI_API_KEY")
        );
        assert_eq!(
            assigned("JWT_SECRET=<use-secrets-manager>").as_deref(),
            Some("JWT_SECRET")
        );
        assert_eq!(
            assigned(r#"export DATABASE_URL="postgres://user:pass@db:5432/x""#).as_deref(),
            Some("DATABASE_URL")
        );
        assert_eq!(assigned("PORT=8080"), None);
        assert_eq!(assigned("LOG_LEVEL=info"), None);
    }

    #[test]
    fn mentions_references_and_forbidding_sentences() {
        assert_eq!(
            mentioned("- `STAGING_DEPLOY_KEY` or service principal, `PORT`"),
            ["STAGING_DEPLOY_KEY"]
        );
        assert_eq!(
            referenced("-e BLOB_KEY=$STAGING_BLOB_KEY"),
            ["STAGING_BLOB_KEY"]
        );
        assert!(forbids("CRITICAL: Never add these secrets to staging:"));
        assert!(!forbids("Add environment secrets"));
        assert_eq!(
            names_in("❌ `ALPACA_LIVE_API_KEY` (blocked)"),
            ["ALPACA_LIVE_API_KEY"]
        );
    }
}
