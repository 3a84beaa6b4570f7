#!/usr/bin/env bash
# A real Prometheus for examples and manual tests, scraping services on loopback every second.
#
#   bash scripts/prometheus.sh start DIR PORT TARGET...
#       Writes DIR/prometheus.yml (scrape and evaluation interval 1s, scrape timeout 900ms;
#       job `demo` scrapes the TARGETs, `127.0.0.1:18080` for example, and job `self` this
#       Prometheus), starts Prometheus on 127.0.0.1:PORT in the background with its data in
#       DIR/data, its output in DIR/prometheus.log and its pid in DIR/prometheus.pid, and
#       returns once http://127.0.0.1:PORT/-/ready answers 200 and the first scrape is in
#       (`up{job="self"}`, some 5 s after the start: Prometheus syncs targets every 5 s), at
#       most 30 s; otherwise it stops it, shows the log's tail and exits 1.
#   bash scripts/prometheus.sh stop DIR
#       Stops the Prometheus started with DIR (SIGTERM, then SIGKILL after 10 s) and waits
#       until it is gone.
#
# For example, with the staging demo producing errors after 3 s:
#
#   dir=$(mktemp -d)
#   bash scripts/prometheus.sh start "$dir" 19090 127.0.0.1:18080
#   PORT=18080 DEMO_FAULT=errors-after ./target/debug/staging-demo &
#   curl -s 'http://127.0.0.1:19090/api/v1/query' --data-urlencode 'query=http_requests_total'
#   bash scripts/prometheus.sh stop "$dir"
#
# Needs `prometheus` on PATH (Debian's package, 2.42 or later) and curl.
set -euo pipefail

usage() {
  echo "usage: bash scripts/prometheus.sh start DIR PORT TARGET... | stop DIR" >&2
  exit 2
}

die() {
  echo "prometheus.sh: $*" >&2
  exit 1
}

# Whether the process with pid $1 still runs (a zombie, exited but not reaped, does not).
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  [ "${stat:0:1}" != Z ]
}

start() {
  [ $# -ge 3 ] || usage
  local dir=$1 port=$2
  shift 2
  case $port in
    '' | *[!0-9]*) die "PORT must be a number, not \`$port\`" ;;
  esac
  command -v prometheus >/dev/null ||
    die "prometheus is not installed: install Debian's prometheus package: apt-get install prometheus"
  command -v curl >/dev/null || die "curl is not installed: apt-get install curl"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/prometheus.pid" ] && alive "$(cat "$dir/prometheus.pid")"; then
    die "a Prometheus started with $dir still runs (pid $(cat "$dir/prometheus.pid")): stop it first"
  fi

  local targets="" t
  for t in "$@"; do
    targets+="${targets:+, }'$t'"
  done
  cat >"$dir/prometheus.yml" <<EOF
# Written by scripts/prometheus.sh.
global:
  scrape_interval: 1s
  evaluation_interval: 1s
  scrape_timeout: 900ms
scrape_configs:
  - job_name: demo
    static_configs:
      - targets: [$targets]
  - job_name: self
    static_configs:
      - targets: ['127.0.0.1:$port']
EOF

  prometheus \
    --config.file="$dir/prometheus.yml" \
    --storage.tsdb.path="$dir/data" \
    --web.listen-address="127.0.0.1:$port" \
    --storage.tsdb.retention.time=1h \
    --log.level=warn \
    >"$dir/prometheus.log" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$dir/prometheus.pid"

  local deadline=$((SECONDS + 30)) code
  while :; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/-/ready" || true)
    if [ "$code" = 200 ]; then
      # Ready comes ~5 s before the first scrape (targets sync every 5 s): wait for it too,
      # so a service started now is scraped from its first second on.
      if curl -s --max-time 1 "http://127.0.0.1:$port/api/v1/query" \
        --data-urlencode 'query=up{job="self"}' | grep -q '"result":\[{'; then
        echo "prometheus: ready and scraping on http://127.0.0.1:$port (pid $pid, job demo: $*)"
        return 0
      fi
    fi
    if ! alive "$pid"; then
      echo "prometheus.sh: Prometheus exited before it was ready; the end of $dir/prometheus.log:" >&2
      tail -n 20 "$dir/prometheus.log" >&2 || true
      rm -f "$dir/prometheus.pid"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "prometheus.sh: Prometheus on 127.0.0.1:$port was not ready and scraping within 30 s (/-/ready: ${code:-no answer}); the end of $dir/prometheus.log:" >&2
      tail -n 20 "$dir/prometheus.log" >&2 || true
      stop "$dir"
      exit 1
    fi
    sleep 0.2
  done
}

stop() {
  [ $# -eq 1 ] || usage
  local dir=$1 pid
  [ -f "$dir/prometheus.pid" ] || die "no $dir/prometheus.pid: nothing started with $dir"
  pid=$(cat "$dir/prometheus.pid")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for i in $(seq 100); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      echo "prometheus.sh: pid $pid ignored SIGTERM for 10 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      for i in $(seq 50); do
        alive "$pid" || break
        sleep 0.1
      done
      ! alive "$pid" || die "pid $pid survived SIGKILL"
    fi
  fi
  rm -f "$dir/prometheus.pid"
  echo "prometheus: stopped (pid $pid)"
}

case ${1:-} in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  *) usage ;;
esac
