//! A virtual user's cookie jar: what the server set, sent back on the user's next requests.
//!
//! Every request of a run goes to one origin, so domain and path attributes are not
//! matched: a cookie is kept until the server replaces it or expires it with `Max-Age=0`
//! (or a non-positive `Max-Age`) or an empty value.

use http::HeaderMap;
use http::header::{HeaderValue, SET_COOKIE};

#[derive(Debug, Clone, Default)]
pub struct CookieJar {
    cookies: Vec<(String, String)>,
    /// The `Cookie` header for the current cookies, rebuilt when they change.
    header: Option<HeaderValue>,
}

impl CookieJar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the `Set-Cookie` headers of a response.
    pub fn store(&mut self, headers: &HeaderMap) {
        let mut changed = false;
        for v in headers.get_all(SET_COOKIE) {
            let Ok(text) = v.to_str() else { continue };
            let mut attrs = text.split(';');
            let Some((name, value)) = attrs.next().and_then(|nv| nv.split_once('=')) else {
                continue;
            };
            let (name, value) = (name.trim(), value.trim().trim_matches('"'));
            if name.is_empty() {
                continue;
            }
            let expired = value.is_empty()
                || attrs.any(|a| {
                    let a = a.trim();
                    a.len() > 8
                        && a[..8].eq_ignore_ascii_case("max-age=")
                        && a[8..].trim().parse::<i64>().is_ok_and(|n| n <= 0)
                });
            self.cookies.retain(|(n, _)| n != name);
            if !expired {
                self.cookies.push((name.to_string(), value.to_string()));
            }
            changed = true;
        }
        if changed {
            self.header = if self.cookies.is_empty() {
                None
            } else {
                let line = self
                    .cookies
                    .iter()
                    .map(|(n, v)| format!("{n}={v}"))
                    .collect::<Vec<_>>()
                    .join("; ");
                HeaderValue::from_str(&line).ok()
            };
        }
    }

    /// The `Cookie` header to send, if any.
    pub fn header(&self) -> Option<&HeaderValue> {
        self.header.as_ref()
    }

    #[cfg(test)]
    fn get(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(SET_COOKIE, HeaderValue::from_str(l).unwrap());
        }
        h
    }

    #[test]
    fn stores_replaces_and_expires_cookies() {
        let mut jar = CookieJar::new();
        jar.store(&set(&["session=abc; Path=/; HttpOnly", "theme=dark"]));
        assert_eq!(jar.header().unwrap(), "session=abc; theme=dark");
        jar.store(&set(&["session=def"]));
        assert_eq!(jar.get("session"), Some("def"));
        jar.store(&set(&["theme=x; Max-Age=0"]));
        assert_eq!(jar.header().unwrap(), "session=def");
        jar.store(&set(&["session=; Max-Age=-1"]));
        assert!(jar.header().is_none() && jar.is_empty());
    }
}
