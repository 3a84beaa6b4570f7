#!/usr/bin/env bash
# Starts (or stops) throwaway OpenSSH servers on loopback, one per "host", for the ssh
# driver's example and benchmark:
#
#   bash scripts/sshd-hosts.sh start DIR PORT ADDRESS...   # e.g. 22022 127.0.0.2 127.0.0.3
#   bash scripts/sshd-hosts.sh stop DIR
#
# DIR gets a host key, a client key (DIR/id_ed25519, in DIR/authorized_keys), a
# known_hosts file listing exactly these servers (DIR/known_hosts), one sshd_config per
# host, and DIR/bin/systemctl: the stand-in of examples/ssh/standin-systemctl (systemd
# cannot run here), first on the PATH of every session, with the units of host N in
# DIR/units-N. Needs Debian's openssh-server.
set -euo pipefail
cmd=${1:?usage: sshd-hosts.sh start DIR PORT ADDRESS... | stop DIR}
dir=${2:?DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
case $cmd in
  start)
    port=${3:?PORT}
    shift 3
    [ -x /usr/sbin/sshd ] || { echo "needs sshd: apt-get install openssh-server" >&2; exit 1; }
    mkdir -p "$dir/bin"
    dir=$(cd "$dir" && pwd)
    [ "$(id -u)" = 0 ] && mkdir -p /run/sshd
    [ -f "$dir/host_key" ] || ssh-keygen -q -t ed25519 -N '' -C stagegate-example -f "$dir/host_key"
    [ -f "$dir/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C stagegate-example -f "$dir/id_ed25519"
    cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
    ln -sf "$root/examples/ssh/standin-systemctl" "$dir/bin/systemctl"
    : > "$dir/known_hosts"
    n=0
    for address in "$@"; do
      n=$((n + 1))
      mkdir -p "$dir/units-$n"
      cat > "$dir/sshd_config.$n" <<CONF
ListenAddress $address:$port
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile $dir/sshd.$n.pid
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
LogLevel ERROR
MaxSessions 50
Subsystem sftp /usr/lib/openssh/sftp-server
SetEnv PATH=$dir/bin:/usr/local/bin:/usr/bin:/bin STANDIN_UNITS=$dir/units-$n
CONF
      /usr/sbin/sshd -f "$dir/sshd_config.$n" -E "$dir/sshd.$n.log"
      echo "[$address]:$port $(cut -d' ' -f1,2 "$dir/host_key.pub")" >> "$dir/known_hosts"
    done
    for address in "$@"; do
      for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/$address/$port") 2>/dev/null && break
        sleep 0.05
      done
    done
    ;;
  stop)
    for f in "$dir"/sshd.*.pid; do
      [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    for f in "$dir"/units-*/*.pid; do
      [ -f "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null || true
    done
    ;;
  *) echo "unknown command $cmd" >&2; exit 2 ;;
esac
