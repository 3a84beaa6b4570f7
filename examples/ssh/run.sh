#!/usr/bin/env bash
# Seed 000's SSH + systemd deploy against two real sshd servers on loopback:
#   1. 1.3.0 goes to staging-1, then staging-2, health-checked after each (exit 0);
#   2. 1.3.1's health fails on staging-1, the first batch: it is rolled back there and
#      staging-2 is never touched; both serve 1.3.0 (exit 4);
#   3. 1.4.0 deploys, then `stagegate rollback staging` puts both hosts back on 1.3.0.
# Takes about 30 s. Run from anywhere: bash examples/ssh/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build quickstart-demo
hosts=examples/ssh/.hosts
work=/tmp/stagegate-example-ssh
rm -rf "$work" examples/ssh/.stagegate
mkdir -p "$hosts" "$work"
sg_plan examples/ssh/stagegate.yml
trap 'code=$?; bash scripts/sshd-hosts.sh stop "$hosts" >/dev/null 2>&1 || true; exit $code' EXIT
bash scripts/sshd-hosts.sh start "$hosts" 22022 127.0.0.2 127.0.0.3
# The units systemd would have (the stand-in reads the same lines).
for n in 1 2; do
  cat > "$hosts/units-$n/erp.service" <<UNIT
WorkingDirectory=$work/staging-$n/erp/current
EnvironmentFile=$work/staging-$n/erp/current/.stagegate.env
Environment=DEMO_BIND=127.0.0.$((n + 1))
ExecStart=./build/erp-hub
UNIT
done

serves() {
  local want=$1 n got
  for n in 2 3; do
    got=$(curl -fsS "http://127.0.0.$n:18000/health" || echo down)
    case $got in *"\"$want\""*) ;; *) echo "FAILED: 127.0.0.$n serves $got, expected $want" >&2; exit 1 ;; esac
  done
  echo "--- both hosts serve $want"
}

echo "### 1. deploy 1.3.0 to both hosts, one at a time"
sg ERP_VERSION=1.3.0 BLOB_KEY=example-blob-key deploy staging
serves 1.3.0

echo
echo "### 2. deploy 1.3.1, whose health fails: rolled back on staging-1, staging-2 untouched (exit code 4)"
expect_code 4 sg ERP_VERSION=1.3.1 BLOB_KEY=example-blob-key deploy staging --var break=health
serves 1.3.0
[ ! -e "$work/staging-2/erp/releases/1.3.1-d2" ] || { echo "FAILED: staging-2 got 1.3.1" >&2; exit 1; }

echo
echo "### 3. deploy 1.4.0, then roll back by hand"
sg ERP_VERSION=1.4.0 BLOB_KEY=example-blob-key deploy staging
serves 1.4.0
sg BLOB_KEY=example-blob-key rollback staging
serves 1.3.0
sg status staging
sg stop staging
echo
echo "ssh example: all outcomes as expected"
