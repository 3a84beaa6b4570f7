//! Real OpenSSH servers for integration tests (`mod sshd;`): Debian's `sshd`, one process
//! per "host", each on its own loopback address (127.0.0.2, 127.0.0.3, ...) at a free port,
//! with a throwaway host key, a throwaway client key in `authorized_keys` and a known_hosts
//! file that lists exactly these hosts. Stopped on drop.
//!
//! The hosts share this machine's filesystem, so each test gives every host a directory of
//! its own (a host's `dir:` in the plan). Tests that use it do not skip when sshd is
//! missing: `Hosts::start` panics and says how to install it.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    pub name: String,
    pub address: String,
    pub port: u16,
    child: Option<Child>,
    config: PathBuf,
}

pub struct Hosts {
    pub dir: tempfile::TempDir,
    pub hosts: Vec<Sshd>,
    /// The client's private key.
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    pub user: String,
}

fn sshd_bin() -> PathBuf {
    for p in ["/usr/sbin/sshd", "/usr/local/sbin/sshd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("sshd is not installed: apt-get install openssh-server (CI's .ci/run installs it)")
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "stagegate-test",
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen runs (apt-get install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port(address: &str) -> u16 {
    TcpListener::bind((address, 0))
        .expect("a free port on the loopback address")
        .local_addr()
        .unwrap()
        .port()
}

impl Hosts {
    /// Starts `n` hosts named `web-1`..`web-N` on 127.0.0.2.. .
    pub fn start(n: usize) -> Hosts {
        Self::start_with(n, false)
    }

    /// With `systemctl`, each host's sessions find the stand-in systemctl of
    /// `examples/ssh/standin-systemctl` first on their PATH (systemd cannot run here), with
    /// its units in [`Hosts::units`].
    pub fn start_with(n: usize, systemctl: bool) -> Hosts {
        let bin = sshd_bin();
        let dir = tempfile::tempdir().expect("a temp dir for sshd");
        let d = dir.path();
        if nix::unistd::geteuid().is_root() {
            // sshd's privilege separation directory.
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let host_key = d.join("host_key");
        keygen(&host_key);
        let identity = d.join("id_ed25519");
        keygen(&identity);
        std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys")).unwrap();
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        let host_pub = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into());
        let mut known = String::new();
        let mut hosts = Vec::new();
        let bin_dir = d.join("bin");
        if systemctl {
            std::fs::create_dir_all(&bin_dir).unwrap();
            let standin = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/ssh/standin-systemctl")
                .canonicalize()
                .expect("examples/ssh/standin-systemctl exists");
            std::os::unix::fs::symlink(standin, bin_dir.join("systemctl")).unwrap();
        }
        for i in 0..n {
            let address = format!("127.0.0.{}", i + 2);
            let port = free_port(&address);
            let config = d.join(format!("sshd_config.{}", i + 1));
            let set_env = if systemctl {
                let units = d.join(format!("units-{}", i + 1));
                std::fs::create_dir_all(&units).unwrap();
                format!(
                    "SetEnv PATH={}:/usr/local/bin:/usr/bin:/bin STANDIN_UNITS={}\n",
                    bin_dir.display(),
                    units.display()
                )
            } else {
                String::new()
            };
            std::fs::write(
                &config,
                format!(
                    "ListenAddress {address}:{port}\nHostKey {hk}\nAuthorizedKeysFile {ak}\nPidFile {pid}\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPrintMotd no\nLogLevel ERROR\nMaxSessions 50\nMaxStartups 50\nAcceptEnv LANG\n{set_env}",
                    hk = host_key.display(),
                    ak = d.join("authorized_keys").display(),
                    pid = d.join(format!("sshd.{}.pid", i + 1)).display(),
                ),
            )
            .unwrap();
            known.push_str(&format!("[{address}]:{port} {host_pub}\n"));
            let mut s = Sshd {
                name: format!("web-{}", i + 1),
                address,
                port,
                child: None,
                config,
            };
            s.start(&bin);
            hosts.push(s);
        }
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, known).unwrap();
        Hosts {
            dir,
            hosts,
            identity,
            known_hosts,
            user,
        }
    }

    /// The stand-in systemctl's unit directory of a host.
    pub fn units(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("units-{}", i + 1))
    }

    /// A host's own directory (its `dir:` in a plan).
    pub fn host_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join("disk").join(&self.hosts[i].name)
    }

    /// The plan's `hosts:` mapping for an environment, indented for `environments.ENV`.
    pub fn yaml(&self, extra: &str) -> String {
        let mut out = String::from("    hosts:\n");
        for (i, h) in self.hosts.iter().enumerate() {
            out.push_str(&format!(
                "      {}: {{ address: {}, port: {}, user: {}, identity: {}, known_hosts: {}, dir: {}, roles: [web]{extra} }}\n",
                h.name,
                h.address,
                h.port,
                self.user,
                self.identity.display(),
                self.known_hosts.display(),
                self.host_dir(i).display(),
            ));
        }
        out
    }

    pub fn stop(&mut self, i: usize) {
        self.hosts[i].stop();
    }

    pub fn restart(&mut self, i: usize) {
        let bin = sshd_bin();
        self.hosts[i].start(&bin);
    }
}

impl Sshd {
    fn start(&mut self, bin: &Path) {
        let child = Command::new(bin)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sshd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect((self.address.as_str(), self.port)).is_err() {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let mut err = String::new();
                if let Some(mut e) = c.stderr.take() {
                    use std::io::Read;
                    let _ = e.read_to_string(&mut err);
                }
                panic!("sshd for {} exited ({status}): {err}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "sshd for {} did not listen in 20 s",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // The services the tests started on the "hosts" run in this machine's process
        // table: stop them with their process groups.
        for i in 0..self.hosts.len() {
            let root = self.host_dir(i);
            kill_services(&root);
            kill_units(&self.units(i));
            self.hosts[i].stop();
        }
    }
}

fn kill_services(root: &Path) {
    let Ok(services) = std::fs::read_dir(root) else {
        return;
    };
    for s in services.flatten() {
        let Ok(releases) = std::fs::read_dir(s.path().join("releases")) else {
            continue;
        };
        for r in releases.flatten() {
            if let Ok(pid) = std::fs::read_to_string(r.path().join("service.pid"))
                && let Ok(pid) = pid.trim().parse::<i32>()
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(-pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn kill_units(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "pid")
            && let Ok(pid) = std::fs::read_to_string(e.path())
            && let Ok(pid) = pid.trim().parse::<i32>()
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(-pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
