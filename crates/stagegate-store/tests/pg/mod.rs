//! A real PostgreSQL for integration tests (`mod pg;`): Debian's server binaries
//! (`/usr/lib/postgresql/VERSION/bin`), a cluster of its own in a temporary directory,
//! listening on 127.0.0.1 at a free port and on a socket in that directory, stopped on drop.
//!
//! PostgreSQL refuses to run as root. Run as root (CI), the directory is handed to the
//! `postgres` user and `initdb` and `postgres` run as that user (`setpriv`, which execs
//! rather than forks, so the child we hold is the server itself); run as anyone else, they
//! run as that user.
//!
//! Local connections (the socket) trust the superuser `postgres`: the harness sets up and
//! inspects databases that way. TCP connections need a password (scram-sha-256): what
//! stagegate gets is a URL with a role's password, as a real staging database would have.
//!
//! (A copy of `crates/stagegate-cli/tests/pg/mod.rs`, with [`shared`] and [`fresh_database`]
//! added: the store's tests share one cluster, a database each.)
//!
//! Tests that use it do not skip when PostgreSQL is missing: `Postgres::start` panics and
//! says how to install it.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long `start` waits for the server to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Postgres {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

/// A database owned by a role of its own, with the URL that role connects with.
pub struct Database {
    pub name: String,
    pub role: String,
    pub password: String,
    /// `postgresql://ROLE:PASSWORD@127.0.0.1:PORT/NAME`.
    pub url: String,
}

impl Postgres {
    /// Initializes a cluster in a temporary directory and starts it on a free port.
    /// Panics when the server binaries are missing or it does not start within 60 s.
    pub fn start() -> Postgres {
        let bin = server_bin().unwrap_or_else(|| {
            panic!("the PostgreSQL server is not installed: apt-get install postgresql (CI's .ci/run installs it)")
        });
        let dir = tempfile::tempdir().expect("a temp dir for PostgreSQL");
        let owner = server_user();
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(dir.path(), Some(uid), Some(gid))
                .expect("the temp dir is handed to the postgres user");
        }
        let data = dir.path().join("data");
        let init = as_server_user(owner, &bin.join("initdb"))
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .args(["--username=postgres", "--encoding=UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            .arg("-D")
            .arg(&data)
            .stdin(Stdio::null())
            .output()
            .expect("initdb runs");
        assert!(
            init.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&init.stdout),
            String::from_utf8_lossy(&init.stderr)
        );
        // The port is free when picked, but another process may take it first: then the
        // server exits at once, and a new port is tried.
        let mut last_log = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = spawn(owner, &bin, dir.path(), &data, port);
            match wait_until_ready(dir.path(), port, &mut child) {
                Ok(()) => return Postgres { port, dir, child },
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_log = log_tail(dir.path());
                    if !last_log.contains("already in use") {
                        panic!("PostgreSQL did not start: {why}\n--- postgres.log ---\n{last_log}");
                    }
                }
            }
        }
        panic!("PostgreSQL found no free port in 3 tries\n--- postgres.log ---\n{last_log}");
    }

    /// The directory of the server's socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates role `name` with a random password and a database `name` it owns.
    pub fn database(&self, name: &str) -> Database {
        let password = format!("pw-{}-{}", name, fastrand_token());
        self.superuser(
            "postgres",
            &format!("CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'"),
        );
        // Not in a transaction block: a statement of its own.
        self.superuser(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" OWNER \"{name}\""),
        );
        Database {
            name: name.to_string(),
            role: name.to_string(),
            url: format!(
                "postgresql://{name}:{password}@127.0.0.1:{}/{name}",
                self.port
            ),
            password,
        }
    }

    /// Runs `sql` in database `db` as the superuser, over the socket; returns its rows
    /// (`psql -At`: one line each, columns split by `|`). Panics when psql fails.
    pub fn superuser(&self, db: &str, sql: &str) -> String {
        let out = self.psql_as_superuser(db, sql);
        assert!(
            out.status.success(),
            "psql failed on {sql:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Like [`Postgres::superuser`] as `db`'s owner, for SQL that creates objects the owner
    /// should own.
    pub fn as_owner(&self, db: &Database, sql: &str) -> String {
        self.superuser(&db.name, &format!("SET ROLE \"{}\"; {sql}", db.role))
    }

    fn psql_as_superuser(&self, db: &str, sql: &str) -> std::process::Output {
        Command::new("psql")
            .args(["-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-c", sql])
            .env_remove("PGPASSWORD")
            .env_remove("PGDATABASE")
            .stdin(Stdio::null())
            .output()
            .expect("psql runs (apt-get install postgresql-client)")
    }

    /// The end of the server's log, for failure messages.
    pub fn log(&self) -> String {
        log_tail(self.dir.path())
    }
}

impl Drop for Postgres {
    /// An immediate shutdown (SIGQUIT): the data is thrown away with the directory.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGQUIT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory of `initdb` and `postgres`: Debian's newest version, else one on PATH.
fn server_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("initdb").exists() && d.join("postgres").exists())
}

/// The `postgres` user's uid and gid when we are root (the server must not run as root).
fn server_user() -> Option<(nix::unistd::Uid, nix::unistd::Gid)> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .expect("a `postgres` user exists (Debian's postgresql package makes it)");
    Some((user.uid, user.gid))
}

/// `program`, run as the server's user when we are root (`setpriv` execs it in place).
fn as_server_user(owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>, program: &Path) -> Command {
    match owner {
        Some((uid, gid)) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--init-groups")
                .arg("--")
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn spawn(
    owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    bin: &Path,
    dir: &Path,
    data: &Path,
    port: u16,
) -> Child {
    let log = std::fs::File::create(dir.join("postgres.log")).expect("postgres.log opens");
    if let Some((uid, gid)) = owner {
        let _ = nix::unistd::chown(&dir.join("postgres.log"), Some(uid), Some(gid));
    }
    as_server_user(owner, &bin.join("postgres"))
        .arg("-D")
        .arg(data)
        .args(["-c", "listen_addresses=127.0.0.1", "-p", &port.to_string()])
        .arg("-c")
        .arg(format!("unix_socket_directories={}", dir.display()))
        // A test cluster: durability is not the point.
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("the log's handle is cloned"))
        .stderr(log)
        .spawn()
        .expect("postgres starts")
}

/// Waits until the server answers a query over its socket.
fn wait_until_ready(dir: &Path, port: u16, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited ({status}) before it was ready"));
        }
        let ok = Command::new("psql")
            .args(["-X", "-q", "-At", "-h"])
            .arg(dir)
            .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
            .args(["-c", "SELECT 1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("it did not answer within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Sixteen random hex digits, for passwords.
fn fastrand_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}

/// One cluster for the whole test binary, started on first use. A watcher process stops it
/// (and removes its directory) once this process has exited: statics are never dropped.
pub fn shared() -> &'static Postgres {
    static SHARED: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    SHARED.get_or_init(|| {
        let pg = Postgres::start();
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; kill -QUIT {server} 2>/dev/null; sleep 2; rm -rf '{dir}'",
            me = std::process::id(),
            server = pg.child.id(),
            dir = pg.dir.path().display(),
        );
        // Never waited for: it outlives this process on purpose.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the cluster's watcher starts");
        pg
    })
}

/// A fresh database (and role) in the shared cluster, named uniquely in this process.
pub fn fresh_database(prefix: &str) -> Database {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    shared().database(&format!("{prefix}_{n}"))
}
