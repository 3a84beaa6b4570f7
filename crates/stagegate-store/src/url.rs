//! PostgreSQL URLs as the store shows them: with the password masked.
//!
//! A state URL may carry a password (`postgresql://app:PASSWORD@db/stagegate`, or a
//! `password=` query parameter). The store names its database in errors and the CLI names
//! it in notes; both go through [`redact_url`], so the password never reaches any output.

/// Whether `text` names a PostgreSQL database (`postgres://` or `postgresql://`) rather than
/// a SQLite file.
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `url` with its password, if any, replaced by `***`: in the user-info part
/// (`user:***@host`) and in a `password=` query parameter.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let (head, rest) = url.split_at(scheme_end);
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                None => format!("{userinfo}{host}"),
            }
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{head}{authority}{tail}")
}

/// The password in `url` as written and percent-decoded, for scrubbing messages that might
/// quote it.
pub(crate) fn password_of(url: &str) -> Option<String> {
    let rest = &url[url.find("://")? + 3..];
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let from_userinfo = authority
        .rfind('@')
        .and_then(|at| authority[..at].split_once(':'))
        .map(|(_, p)| p.to_string());
    let from_query = rest.split_once('?').and_then(|(_, q)| {
        q.split('&').find_map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| k.eq_ignore_ascii_case("password"))
                .map(|(_, v)| v.to_string())
        })
    });
    from_userinfo.or(from_query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_everywhere_they_can_be() {
        let cases = [
            (
                "postgresql://app:s3cr%40t@db.internal:5432/stagegate",
                "postgresql://app:***@db.internal:5432/stagegate",
            ),
            ("postgres://app@db/stagegate", "postgres://app@db/stagegate"),
            ("postgres://db/stagegate", "postgres://db/stagegate"),
            (
                "postgresql://app:p:w@x@db/s?sslmode=require&password=hunter2",
                "postgresql://app:***@db/s?sslmode=require&password=***",
            ),
            ("postgresql://app:pw@db", "postgresql://app:***@db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        assert_eq!(
            password_of("postgresql://app:p:w@x@db/s").as_deref(),
            Some("p:w@x")
        );
        assert!(is_postgres_url("postgresql://x/y"));
        assert!(is_postgres_url("POSTGRES://x/y"));
        assert!(!is_postgres_url("/var/lib/stagegate/state.db"));
    }
}
