#!/usr/bin/env bash
# Seed 003's compose deployment against this machine's Docker engine:
#   1. commit a1b2c3d's images are built, and deployed by SHA (exit 0);
#   2. commit e4f5a6b's gateway fails its HEALTHCHECK: the stack goes back to a1b2c3d's
#      images (exit 4);
#   3. `stagegate status` shows the containers; `stagegate stop` stops the stack.
# Takes about 30 s. Run from anywhere: bash examples/compose/run.sh
source "$(dirname "$0")/../lib.sh"
sg_build quickstart-demo
sg_plan examples/compose/stagegate.yml
project=trading-platform-staging
cleanup() {
  local ids
  ids=$(docker ps -aq --filter "label=com.docker.compose.project=$project") || true
  [ -z "$ids" ] || docker rm -f $ids >/dev/null 2>&1 || true
  docker network rm "${project}_default" >/dev/null 2>&1 || true
}
cleanup
trap 'code=$?; cleanup; exit $code' EXIT
rm -rf examples/compose/.stagegate
bash scripts/demo-image.sh examples/compose/.image healthcheck
for sha in a1b2c3d e4f5a6b; do
  for svc in signal_service execution_gateway; do
    docker build -q --label "org.opencontainers.image.revision=$sha" \
      -t "trading-platform-$svc:$sha" examples/compose/.image >/dev/null
  done
done

serves() {
  local port got
  for port in 18001 18002; do
    got=$(curl -fsS "http://127.0.0.1:$port/health" || echo down)
    case $got in *"\"$1\""*) ;; *) echo "FAILED: port $port serves $got, expected $1" >&2; exit 1 ;; esac
  done
  echo "--- both services serve $1"
}

echo "### 1. deploy commit a1b2c3d"
sg SHA=a1b2c3d ALPACA_PAPER_API_KEY=example-paper-key deploy staging
serves a1b2c3d

echo
echo "### 2. deploy commit e4f5a6b, whose gateway fails its HEALTHCHECK: back to a1b2c3d (exit code 4)"
expect_code 4 sg SHA=e4f5a6b ALPACA_PAPER_API_KEY=example-paper-key deploy staging --var break=health
serves a1b2c3d
docker ps --filter "label=com.docker.compose.project=$project" --format '{{.Names}} {{.Image}} {{.Status}}'

echo
echo "### 3. status, then stop"
sg status staging
sg stop staging
echo
echo "compose example: all outcomes as expected"
