#!/usr/bin/env bash
# Seed 000's Docker deploy against this machine's Docker engine:
#   1. 1.3.0 is built, started as container erp-hub-1.3.0-d1 on port 18100 (exit 0);
#   2. 1.3.1 fails its health check: its container is stopped, 1.3.0's starts again (exit 4);
#   3. 1.4.0 deploys, then `stagegate rollback staging` starts 1.3.0's container again.
# Takes about 20 s. Run from anywhere: bash examples/docker/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build quickstart-demo
sg_plan examples/docker/stagegate.yml
cleanup() {
  local ids
  ids=$(docker ps -aq --filter name=erp-hub-) || true
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  docker rmi -f erp-hub:1.3.0 erp-hub:1.3.1 erp-hub:1.4.0 >/dev/null 2>&1 || true
}
cleanup
trap 'code=$?; cleanup; exit $code' EXIT
rm -rf examples/docker/.stagegate
bash scripts/demo-image.sh examples/docker/.image

serves() {
  local got
  got=$(curl -fsS "http://127.0.0.1:18100/health" || echo down)
  case $got in *"\"$1\""*) echo "--- port 18100 serves $1" ;; *) echo "FAILED: port 18100 serves $got, expected $1" >&2; exit 1 ;; esac
}

echo "### 1. deploy 1.3.0"
sg ERP_VERSION=1.3.0 BLOB_KEY=example-blob-key deploy staging
serves 1.3.0

echo
echo "### 2. deploy 1.3.1, whose health fails: back on 1.3.0's container (exit code 4)"
expect_code 4 sg ERP_VERSION=1.3.1 BLOB_KEY=example-blob-key deploy staging --var break=health
serves 1.3.0
docker ps -a --filter name=erp-hub- --format '{{.Names}} {{.Status}}'

echo
echo "### 3. deploy 1.4.0, then roll back by hand"
sg ERP_VERSION=1.4.0 BLOB_KEY=example-blob-key deploy staging
serves 1.4.0
sg BLOB_KEY=example-blob-key rollback staging
serves 1.3.0
sg status staging
sg stop staging
echo
echo "docker example: all outcomes as expected"
