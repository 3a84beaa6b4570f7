#!/usr/bin/env bash
# Deploy and rollback times of the ssh driver, side by side with the runbook's way (seed
# 000: scp the artifact to each host, ssh in, restart, curl the health endpoint), on the
# same real sshd hosts on loopback (scripts/sshd-hosts.sh) and the same service:
#
#   bash scripts/bench-ssh.sh [HOSTS=3] [ROUNDS=5]
#
# Both sides: HOSTS hosts, one at a time, health checked on each before the next.
# stagegate's figures include its build check, release records, locks and the retire
# step; the shell's include nothing but the copy, the restart and the health poll.
source "$(dirname "$0")/../examples/lib.sh"
n_hosts=${1:-3}
rounds=${2:-5}
sg_build quickstart-demo
work=$(mktemp -d)
trap 'bash scripts/sshd-hosts.sh stop "$work/hosts" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
addresses=()
for i in $(seq "$n_hosts"); do addresses+=("127.0.0.$((i + 1))"); done
bash scripts/sshd-hosts.sh start "$work/hosts" 22122 "${addresses[@]}"
mkdir -p "$work/plan/build"
cp target/debug/quickstart-demo "$work/plan/build/demo"
{
  echo "project: bench"
  echo "environments:"
  echo "  staging:"
  echo "    hosts:"
  for i in $(seq "$n_hosts"); do
    echo "      h$i: { address: 127.0.0.$((i + 1)), port: 22122, identity: $work/hosts/id_ed25519, known_hosts: $work/hosts/known_hosts, dir: $work/disk/h$i }"
  done
  cat <<'YAML'
services:
  web:
    driver: ssh
    artifacts: [build/demo]
    start: DEMO_BIND="$STAGEGATE_HOST_ADDRESS" exec ./build/demo
    env: { DEMO_VERSION: "${{ release.version }}" }
    port: 18300
    batch: 1
    stop_timeout: 2s
    health: { path: /health, interval: 50ms, timeout: 10s }
stages:
  deploy:
    - deploy: web
YAML
} > "$work/plan/stagegate.yml"
sg_plan "$work/plan/stagegate.yml"

ssh_to() { ssh -q -o BatchMode=yes -o UserKnownHostsFile="$work/hosts/known_hosts" -i "$work/hosts/id_ed25519" -p 22122 "$@"; }
scp_to() { scp -q -o BatchMode=yes -o UserKnownHostsFile="$work/hosts/known_hosts" -i "$work/hosts/id_ed25519" -P 22122 "$@"; }
# The runbook's deploy of VERSION to every host, one at a time (its own directory tree,
# port 18301, so the two never meet).
shell_deploy() {
  local v=$1 i a d
  for i in $(seq "$n_hosts"); do
    a=127.0.0.$((i + 1))
    d=$work/shell/h$i
    ssh_to "$a" "mkdir -p $d/releases/$v"
    scp_to "$work/plan/build/demo" "$a:$d/releases/$v/demo"
    ssh_to "$a" "cd $d && { [ -f pid ] && kill \$(cat pid) 2>/dev/null; sleep 0.2; ln -sfn releases/$v current; cd current; DEMO_BIND=$a PORT=18301 DEMO_VERSION=$v setsid ./demo > ../../log 2>&1 < /dev/null & echo \$! > $d/pid; }"
    until curl -fsS "http://$a:18301/health" 2>/dev/null | grep -q "\"$v\""; do sleep 0.05; done
  done
}
# The runbook's rollback: point current back and restart, host by host.
shell_rollback() {
  local v=$1 i a d
  for i in $(seq "$n_hosts"); do
    a=127.0.0.$((i + 1))
    d=$work/shell/h$i
    ssh_to "$a" "cd $d && { kill \$(cat pid) 2>/dev/null; sleep 0.2; ln -sfn releases/$v current; cd current; DEMO_BIND=$a PORT=18301 DEMO_VERSION=$v setsid ./demo > ../../log 2>&1 < /dev/null & echo \$! > $d/pid; }"
    until curl -fsS "http://$a:18301/health" 2>/dev/null | grep -q "\"$v\""; do sleep 0.05; done
  done
}
ms() { date +%s%3N; }

sg deploy staging --release-version 0.0.1 >/dev/null 2>&1
shell_deploy 0.0.1
sd=(); sr=(); hd=(); hr=()
for r in $(seq "$rounds"); do
  t=$(ms); sg deploy staging --release-version "1.$r.0" >/dev/null 2>&1; sd+=($(( $(ms) - t )))
  t=$(ms); sg rollback staging >/dev/null 2>&1; sr+=($(( $(ms) - t )))
  sg deploy staging --release-version "1.$r.1" >/dev/null 2>&1
  t=$(ms); shell_deploy "1.$r.0"; hd+=($(( $(ms) - t )))
  t=$(ms); shell_rollback 0.0.1; hr+=($(( $(ms) - t )))
done
sg stop staging >/dev/null 2>&1 || true
for i in $(seq "$n_hosts"); do kill "$(cat "$work/shell/h$i/pid")" 2>/dev/null || true; done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_sd=$(median "${sd[@]}"); m_sr=$(median "${sr[@]}"); m_hd=$(median "${hd[@]}"); m_hr=$(median "${hr[@]}")
echo "ssh driver, $n_hosts hosts one at a time, median of $rounds rounds (ms):"
printf '  %-10s %10s %10s %8s\n' "" stagegate "scp+ssh" ratio
printf '  %-10s %10s %10s %8s\n' deploy "$m_sd" "$m_hd" "$(awk "BEGIN{printf \"%.2f\", $m_sd/$m_hd}")"
printf '  %-10s %10s %10s %8s\n' rollback "$m_sr" "$m_hr" "$(awk "BEGIN{printf \"%.2f\", $m_sr/$m_hr}")"
echo "  (all rounds, stagegate deploy: ${sd[*]}; rollback: ${sr[*]}; shell deploy: ${hd[*]}; rollback: ${hr[*]})"
