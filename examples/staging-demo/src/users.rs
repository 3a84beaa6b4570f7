//! The demo's fixed users, their login sessions and their threads, for seed 002's load test.
//!
//! 200 users, `u001`..`u200`: email `u017@demo.test`, password `pass-u017`. Each starts with
//! three threads, `t-u017-1`..`t-u017-3`; threads a user creates are numbered on from 4.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// How many users there are.
pub const USERS: u32 = 200;

/// The email domain of every user.
const DOMAIN: &str = "demo.test";

/// Seed threads per user.
const SEED_THREADS: usize = 3;

/// `u017` for user 17.
pub fn user_id(n: u32) -> String {
    format!("u{n:03}")
}

/// `u017@demo.test` for user 17.
pub fn email(n: u32) -> String {
    format!("{}@{DOMAIN}", user_id(n))
}

/// The user number of an id such as `u017`: exactly `u` and three digits, 1 to 200.
pub fn parse_user_id(id: &str) -> Option<u32> {
    let digits = id.strip_prefix('u')?;
    if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u32 = digits.parse().ok()?;
    (1..=USERS).contains(&n).then_some(n)
}

/// The user whose email and password these are. The email's domain is matched without regard
/// to case, the rest exactly.
pub fn check_credentials(email: &str, password: &str) -> Option<u32> {
    let (local, domain) = email.rsplit_once('@')?;
    if !domain.eq_ignore_ascii_case(DOMAIN) {
        return None;
    }
    let n = parse_user_id(local)?;
    (password.strip_prefix("pass-") == Some(local)).then_some(n)
}

/// The session token a request carries: `Authorization: Bearer …` when present, else the
/// `sid` cookie.
pub fn request_token(headers: &HeaderMap) -> Option<&str> {
    if let Some(auth) = headers.get(header::AUTHORIZATION) {
        return auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix("sid="))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Login sessions: opaque random tokens, one per login, mapped to their user.
pub struct Sessions {
    key: [u8; 32],
    issued: AtomicU64,
    tokens: RwLock<HashMap<String, u32>>,
}

impl Sessions {
    pub fn new() -> Self {
        Self {
            key: random_key(),
            issued: AtomicU64::new(0),
            tokens: RwLock::new(HashMap::new()),
        }
    }

    /// A new token for user `n`.
    pub fn login(&self, n: u32) -> String {
        let count = self.issued.fetch_add(1, Ordering::Relaxed);
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(count.to_le_bytes());
        h.update(format!("{:?}", std::time::SystemTime::now()));
        let token = hex::encode(&h.finalize()[..16]);
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), n);
        token
    }

    /// The user a token belongs to.
    pub fn user(&self, token: &str) -> Option<u32> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .copied()
    }
}

/// 32 bytes from the system's random source, or, failing that, from the clock and the pid.
fn random_key() -> [u8; 32] {
    use std::io::Read as _;
    let mut key = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key));
    if read.is_err() {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        key = Sha256::digest(seed.as_bytes()).into();
    }
    key
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thread {
    pub id: String,
    pub owner: String,
    pub title: String,
}

impl Thread {
    pub fn to_json(&self) -> Value {
        json!({ "id": self.id, "owner": self.owner, "title": self.title })
    }
}

/// Every user's threads, one lock per user so users never wait on each other.
pub struct Threads {
    by_user: Vec<Mutex<Vec<Thread>>>,
}

impl Threads {
    pub fn new() -> Self {
        let by_user = (1..=USERS)
            .map(|n| {
                let uid = user_id(n);
                let titles = [
                    format!("Welcome, {uid}"),
                    format!("{uid}: order history question"),
                    format!("{uid}: shipping address change"),
                ];
                debug_assert_eq!(titles.len(), SEED_THREADS);
                let seeds = titles
                    .into_iter()
                    .enumerate()
                    .map(|(i, title)| Thread {
                        id: format!("t-{uid}-{}", i + 1),
                        owner: uid.clone(),
                        title,
                    })
                    .collect();
                Mutex::new(seeds)
            })
            .collect();
        Self { by_user }
    }

    fn slot(&self, n: u32) -> &Mutex<Vec<Thread>> {
        &self.by_user[(n - 1) as usize]
    }

    /// User `n`'s threads, oldest first.
    pub fn list(&self, n: u32) -> Vec<Thread> {
        self.slot(n)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A new thread of user `n`'s.
    pub fn create(&self, n: u32, title: &str) -> Thread {
        let mut threads = self.slot(n).lock().unwrap_or_else(|e| e.into_inner());
        let uid = user_id(n);
        let thread = Thread {
            id: format!("t-{uid}-{}", threads.len() + 1),
            owner: uid,
            title: title.to_string(),
        };
        threads.push(thread.clone());
        thread
    }

    /// Thread `id` when it is user `n`'s.
    pub fn get(&self, n: u32, id: &str) -> Option<Thread> {
        let rest = id.strip_prefix("t-")?;
        let (owner, index) = rest.rsplit_once('-')?;
        if parse_user_id(owner) != Some(n) {
            return None;
        }
        let index: usize = index.parse().ok()?;
        let threads = self.slot(n).lock().unwrap_or_else(|e| e.into_inner());
        index
            .checked_sub(1)
            .and_then(|i| threads.get(i))
            .filter(|t| t.id == id)
            .cloned()
    }
}

/// The `leak-threads` fault: the last `GET /api/threads` answer, kept in one slot for all
/// users, and answered again instead of the caller's own on every tenth request.
#[derive(Default)]
pub struct LastResponse {
    calls: AtomicU64,
    slot: Mutex<Option<Value>>,
}

/// One request in this many gets the previous caller's answer.
pub const LEAK_EVERY: u64 = 10;

impl LastResponse {
    /// The answer for this request: the previous one on every tenth call (when there is one),
    /// else what `build` makes, which is then kept for the next caller.
    pub fn answer(&self, build: impl FnOnce() -> Value) -> Value {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        if call % LEAK_EVERY == LEAK_EVERY - 1
            && let Some(previous) = self.slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
        {
            return previous;
        }
        let fresh = build();
        *self.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(fresh.clone());
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn ids_and_emails() {
        assert_eq!(user_id(1), "u001");
        assert_eq!(user_id(200), "u200");
        assert_eq!(email(17), "u017@demo.test");
        assert_eq!(parse_user_id("u017"), Some(17));
        assert_eq!(parse_user_id("u200"), Some(200));
        for bad in ["u000", "u201", "u17", "u0017", "x017", "u+17", "u 17", ""] {
            assert_eq!(parse_user_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn credentials() {
        assert_eq!(check_credentials("u017@demo.test", "pass-u017"), Some(17));
        assert_eq!(check_credentials("u001@DEMO.test", "pass-u001"), Some(1));
        assert_eq!(check_credentials("u017@demo.test", "pass-u018"), None);
        assert_eq!(check_credentials("u017@demo.test", "pass-U017"), None);
        assert_eq!(check_credentials("u017@demo.test", ""), None);
        assert_eq!(check_credentials("u017@other.test", "pass-u017"), None);
        assert_eq!(check_credentials("u201@demo.test", "pass-u201"), None);
        assert_eq!(check_credentials("u017", "pass-u017"), None);
        // Every user logs in with their own password.
        for n in 1..=USERS {
            assert_eq!(
                check_credentials(&email(n), &format!("pass-{}", user_id(n))),
                Some(n)
            );
        }
    }

    #[test]
    fn tokens_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(request_token(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; sid=abc; x=1"),
        );
        assert_eq!(request_token(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(request_token(&h), Some("xyz"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic xyz"));
        assert_eq!(request_token(&h), None);
    }

    #[test]
    fn sessions_are_per_login() {
        let s = Sessions::new();
        let a = s.login(17);
        let b = s.login(17);
        assert_ne!(a, b);
        assert_eq!(s.user(&a), Some(17));
        assert_eq!(s.user(&b), Some(17));
        assert_eq!(s.user("nope"), None);
    }

    #[test]
    fn threads_are_private() {
        let t = Threads::new();
        let mine = t.list(17);
        assert_eq!(mine.len(), 3);
        assert_eq!(mine[0].id, "t-u017-1");
        assert!(mine.iter().all(|x| x.owner == "u017"));
        let new = t.create(17, "hello");
        assert_eq!(new.id, "t-u017-4");
        assert_eq!(t.get(17, "t-u017-4"), Some(new));
        assert_eq!(t.get(17, "t-u017-2").map(|x| x.id), Some("t-u017-2".into()));
        assert_eq!(t.get(18, "t-u017-1"), None);
        assert_eq!(t.get(17, "t-u017-5"), None);
        assert_eq!(t.get(17, "t-u017-0"), None);
        assert_eq!(t.get(17, "t-u017-01"), None);
        assert_eq!(t.list(18).len(), 3);
    }

    #[test]
    fn leak_every_tenth_call() {
        let last = LastResponse::default();
        let mut leaked = Vec::new();
        for call in 0..30u64 {
            let user = call % 2;
            let got = last.answer(|| json!({ "user": user }));
            if got != json!({ "user": user }) {
                leaked.push(call);
            }
        }
        // The 10th, 20th and 30th callers got the previous caller's answer.
        assert_eq!(leaked, vec![9, 19, 29]);
    }
}
