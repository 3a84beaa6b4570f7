//! PostgreSQL connection strings, read so they can travel to `pg_dump`, `pg_restore` and
//! `psql` in `PG*` environment variables rather than on their command lines.
//!
//! A command line is visible to every user of the machine (`ps`, `/proc/PID/cmdline`); a
//! process's environment only to its owner. So a migration's database URL, a secret, is
//! taken apart here ([`ConnInfo::parse`]) and handed over as `PGHOST`, `PGPORT`,
//! `PGDATABASE`, `PGUSER`, `PGPASSWORD`, ... ([`ConnInfo::env`]).
//!
//! Both forms libpq accepts are read: URIs (`postgresql://user:pass@host:5432/db?sslmode=
//! require`, several `host:port` pairs, `[::1]`, percent-encoding) and `key=value` strings
//! (`host=db user=app password='a b'`); a bare word is a database name. Errors never quote
//! the text: it is secret.

use std::fmt;

/// A connection string, taken apart: libpq's keywords and their values, in order.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnInfo {
    params: Vec<(String, String)>,
}

impl fmt::Debug for ConnInfo {
    /// Names only: the values include the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.params.iter().map(|(k, _)| k.as_str()).collect();
        write!(f, "ConnInfo({})", names.join(", "))
    }
}

/// Why a connection string cannot be used. Never holds any of its text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    #[error("the connection string is empty")]
    Empty,
    #[error(
        "the connection URI has a malformed percent-encoding (`%` must be followed by two hex digits)"
    )]
    PercentEncoding,
    #[error("the connection URI has an IPv6 host without its closing `]`")]
    Ipv6,
    #[error("the connection URI has a query parameter without `=`")]
    QueryParameter,
    #[error("the connection string has a `key=value` pair without `=`, or an unclosed quote")]
    KeyValue,
    /// A keyword libpq knows but reads from no environment variable.
    #[error(
        "the connection parameter `{0}` cannot be passed in a PG* environment variable, so stagegate cannot pass it on; leave it out"
    )]
    NoVariable(&'static str),
    /// A keyword libpq does not know (not named: it may be a piece of the password).
    #[error("the connection string has a parameter libpq does not know")]
    Unknown,
}

/// libpq's keywords and the environment variable each is read from.
const VARIABLES: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("passfile", "PGPASSFILE"),
    ("service", "PGSERVICE"),
    ("options", "PGOPTIONS"),
    ("application_name", "PGAPPNAME"),
    ("client_encoding", "PGCLIENTENCODING"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("sslmode", "PGSSLMODE"),
    ("requiressl", "PGREQUIRESSL"),
    ("sslcompression", "PGSSLCOMPRESSION"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcertmode", "PGSSLCERTMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("sslsni", "PGSSLSNI"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
    ("requirepeer", "PGREQUIREPEER"),
    ("require_auth", "PGREQUIREAUTH"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("gssencmode", "PGGSSENCMODE"),
    ("krbsrvname", "PGKRBSRVNAME"),
    ("gsslib", "PGGSSLIB"),
    ("gssdelegation", "PGGSSDELEGATION"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("load_balance_hosts", "PGLOADBALANCEHOSTS"),
];

/// libpq keywords with no environment variable.
const NO_VARIABLE: &[&str] = &[
    "fallback_application_name",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "tcp_user_timeout",
    "sslpassword",
    "sslkeylogfile",
    "replication",
];

impl ConnInfo {
    /// Reads a URI (`postgresql://` or `postgres://`), a `key=value` string, or a bare
    /// database name.
    pub fn parse(text: &str) -> Result<ConnInfo, ConnInfoError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(ConnInfoError::Empty);
        }
        let params = if let Some(rest) = t
            .strip_prefix("postgresql://")
            .or_else(|| t.strip_prefix("postgres://"))
        {
            parse_uri(rest)?
        } else if t.contains('=') {
            parse_key_value(t)?
        } else {
            vec![("dbname".to_string(), t.to_string())]
        };
        for (k, _) in &params {
            if !VARIABLES.iter().any(|(name, _)| name == k) {
                return Err(match NO_VARIABLE.iter().find(|n| **n == k) {
                    Some(n) => ConnInfoError::NoVariable(n),
                    None => ConnInfoError::Unknown,
                });
            }
        }
        Ok(ConnInfo { params })
    }

    /// The `PG*` variables that carry the connection, for a child's environment. A
    /// keyword given twice keeps its last value, as libpq does.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        for (k, v) in &self.params {
            let Some((_, var)) = VARIABLES.iter().find(|(name, _)| name == k) else {
                continue;
            };
            out.retain(|(o, _)| o != var);
            out.push((var, v.clone()));
        }
        out
    }

    /// The password, if the string holds one: masked in output from then on.
    pub fn password(&self) -> Option<&str> {
        self.get("password").filter(|p| !p.is_empty())
    }

    /// The last value of a keyword.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `[user[:password]@][host[:port][,...]][/dbname][?k=v&...]`, after the scheme.
fn parse_uri(rest: &str) -> Result<Vec<(String, String)>, ConnInfoError> {
    let mut params = Vec::new();
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (before_query, None),
    };
    // The user part ends at the last `@`: a password may hold an unencoded `@`.
    let hosts = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.push(("user".into(), decode(user)?));
            }
            if let Some(p) = password {
                params.push(("password".into(), decode(p)?));
            }
            hosts
        }
        None => authority,
    };
    if !hosts.is_empty() {
        let mut host_list = Vec::new();
        let mut port_list = Vec::new();
        for spec in hosts.split(',') {
            let (host, port) = if let Some(v6) = spec.strip_prefix('[') {
                let (addr, after) = v6.split_once(']').ok_or(ConnInfoError::Ipv6)?;
                (addr, after.strip_prefix(':'))
            } else {
                match spec.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (spec, None),
                }
            };
            host_list.push(decode(host)?);
            port_list.push(decode(port.unwrap_or(""))?);
        }
        if host_list.iter().any(|h| !h.is_empty()) {
            params.push(("host".into(), host_list.join(",")));
        }
        if port_list.iter().any(|p| !p.is_empty()) {
            params.push(("port".into(), port_list.join(",")));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        params.push(("dbname".into(), decode(db)?));
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair.split_once('=').ok_or(ConnInfoError::QueryParameter)?;
        let k = decode(k)?;
        // libpq's URI alias for `sslmode=require`.
        if k == "ssl" && v == "true" {
            params.push(("sslmode".into(), "require".into()));
            continue;
        }
        params.push((k, decode(v)?));
    }
    Ok(params)
}

fn decode(s: &str) -> Result<String, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(ConnInfoError::PercentEncoding)?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ConnInfoError::PercentEncoding)
}

/// `key = value` pairs separated by blanks; a value may be single-quoted, and `\` escapes
/// the next character (in or out of quotes).
fn parse_key_value(text: &str) -> Result<Vec<(String, String)>, ConnInfoError> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    let mut params = Vec::new();
    let skip_blanks = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_blanks(&mut i);
        if i >= chars.len() {
            break;
        }
        let mut key = String::new();
        while i < chars.len() && chars[i] != '=' && !chars[i].is_whitespace() {
            key.push(chars[i]);
            i += 1;
        }
        skip_blanks(&mut i);
        if chars.get(i) != Some(&'=') || key.is_empty() {
            return Err(ConnInfoError::KeyValue);
        }
        i += 1;
        skip_blanks(&mut i);
        let mut value = String::new();
        if chars.get(i) == Some(&'\'') {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(ConnInfoError::KeyValue),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        value.push(*chars.get(i + 1).ok_or(ConnInfoError::KeyValue)?);
                        i += 2;
                    }
                    Some(c) => {
                        value.push(*c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].is_whitespace() {
                if chars[i] == '\\' {
                    value.push(*chars.get(i + 1).ok_or(ConnInfoError::KeyValue)?);
                    i += 2;
                } else {
                    value.push(chars[i]);
                    i += 1;
                }
            }
        }
        params.push((key, value));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(text: &str) -> Vec<(&'static str, String)> {
        ConnInfo::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .env()
    }

    fn pairs(list: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
        list.iter().map(|(k, v)| (*k, v.to_string())).collect()
    }

    #[test]
    fn uris_become_pg_variables() {
        assert_eq!(
            env(
                "postgresql://app:s%40cr%3At@db.internal:6432/erp?sslmode=require&application_name=stagegate"
            ),
            pairs(&[
                ("PGUSER", "app"),
                ("PGPASSWORD", "s@cr:t"),
                ("PGHOST", "db.internal"),
                ("PGPORT", "6432"),
                ("PGDATABASE", "erp"),
                ("PGSSLMODE", "require"),
                ("PGAPPNAME", "stagegate"),
            ])
        );
        // An unencoded `@` in the password: the user part ends at the last one.
        assert_eq!(
            ConnInfo::parse("postgres://u:p@ss@h/d").unwrap().password(),
            Some("p@ss")
        );
        assert_eq!(
            env("postgres://[::1]:5433,other/db"),
            pairs(&[
                ("PGHOST", "::1,other"),
                ("PGPORT", "5433,"),
                ("PGDATABASE", "db")
            ])
        );
        // The socket directory, percent-encoded, and the default host.
        assert_eq!(
            env("postgresql://%2Fvar%2Frun%2Fpostgresql/app"),
            pairs(&[("PGHOST", "/var/run/postgresql"), ("PGDATABASE", "app")])
        );
        assert_eq!(env("postgresql:///app"), pairs(&[("PGDATABASE", "app")]));
        assert_eq!(
            env("postgres://h/d?ssl=true"),
            pairs(&[
                ("PGHOST", "h"),
                ("PGDATABASE", "d"),
                ("PGSSLMODE", "require")
            ])
        );
    }

    #[test]
    fn key_value_strings_and_bare_names() {
        assert_eq!(
            env(
                r"host=db port = 5432 dbname=erp user=app password='it\'s a secret' options=-c\ x=1"
            ),
            pairs(&[
                ("PGHOST", "db"),
                ("PGPORT", "5432"),
                ("PGDATABASE", "erp"),
                ("PGUSER", "app"),
                ("PGPASSWORD", "it's a secret"),
                ("PGOPTIONS", "-c x=1"),
            ])
        );
        assert_eq!(env("erp"), pairs(&[("PGDATABASE", "erp")]));
        // The last value wins, as in libpq.
        assert_eq!(env("dbname=a dbname=b"), pairs(&[("PGDATABASE", "b")]));
    }

    #[test]
    fn errors_never_quote_the_text() {
        let secret = "hunter2";
        for (text, want) in [
            ("", ConnInfoError::Empty),
            (
                "postgres://u:hunter2%zz@h/d",
                ConnInfoError::PercentEncoding,
            ),
            ("postgres://u:hunter2@[::1/d", ConnInfoError::Ipv6),
            ("postgres://h/d?hunter2", ConnInfoError::QueryParameter),
            ("host=h password='hunter2", ConnInfoError::KeyValue),
            ("host=h hunter2", ConnInfoError::KeyValue),
            (
                "host=h keepalives=1 password=hunter2",
                ConnInfoError::NoVariable("keepalives"),
            ),
            ("host=h hunter2=x", ConnInfoError::Unknown),
        ] {
            let e = ConnInfo::parse(text).unwrap_err();
            assert_eq!(e, want, "{text}");
            assert!(!e.to_string().contains(secret), "{e}");
        }
        let c = ConnInfo::parse("postgres://u:hunter2@h/d").unwrap();
        assert!(!format!("{c:?}").contains(secret));
    }
}
