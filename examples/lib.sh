# Shared by the examples' run.sh scripts (sourced, not run):
#
#   source "$(dirname "$0")/../lib.sh"   # strict mode, cd to the repository
#   sg_build [PACKAGE...]                # cargo build stagegate (and the packages named)
#   sg_plan examples/NAME/stagegate.yml  # the plan `sg` runs
#   sg ARGS...                           # stagegate -f PLAN ARGS
#   sg_clean_env                         # from now on, `sg` runs with a clean environment
#   expect_code WANT COMMAND...          # fail the script unless COMMAND exits with WANT
#   id=$(last_id ENV)                    # the newest deployment of ENV
#   stop_on_exit ENV                     # stop ENV's services when the script ends, even on failure
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SG_TARGET=${CARGO_TARGET_DIR:-target}
case $SG_TARGET in /*) ;; *) SG_TARGET="$PWD/$SG_TARGET" ;; esac
SG_BIN="$SG_TARGET/debug/stagegate"
SG_PLAN=stagegate.yml
SG_CLEAN=0
SG_STOP=()

sg_build() {
  local p args=(-p stagegate-cli)
  for p in "$@"; do args+=(-p "$p"); done
  cargo build -q "${args[@]}"
}

sg_plan() { SG_PLAN=$1; }

# With `sg_clean_env`, only PATH, HOME, CI=true, STAGEGATE_ACTOR=ci and the leading NAME=value
# words of a call are set, so the machine's own variables (an AWS key, DRY_RUN) play no part.
sg_clean_env() { SG_CLEAN=1; }

# `sg [NAME=value...] ARGS...`: stagegate with the plan of `sg_plan`; leading NAME=value words
# are set for that call only.
sg() {
  local vars=()
  while [ $# -gt 0 ] && [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*= ]]; do
    vars+=("$1")
    shift
  done
  if [ "$SG_CLEAN" = 1 ]; then
    env -i PATH="$PATH" HOME="${HOME:-/tmp}" CI=true STAGEGATE_ACTOR=ci ${vars[@]+"${vars[@]}"} \
      "$SG_BIN" -f "$SG_PLAN" "$@"
  else
    env ${vars[@]+"${vars[@]}"} "$SG_BIN" -f "$SG_PLAN" "$@"
  fi
}

expect_code() {
  local want=$1 got=0
  shift
  "$@" || got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAILED: expected exit code $want, got $got: $*" >&2
    exit 1
  fi
}

last_id() {
  local id
  id=$(sg history "$1" -n 1 --json | grep -Eo '"id": *[0-9]+' | grep -Eo '[0-9]+$' | head -n 1) || true
  if [ -z "$id" ]; then
    echo "no deployment of $1 is recorded" >&2
    return 1
  fi
  echo "$id"
}

stop_on_exit() {
  SG_STOP+=("$SG_PLAN" "$1")
  trap _sg_stop_all EXIT
}

_sg_stop_all() {
  local code=$? i
  for ((i = 0; i < ${#SG_STOP[@]}; i += 2)); do
    "$SG_BIN" -f "${SG_STOP[i]}" stop "${SG_STOP[i + 1]}" >/dev/null 2>&1 || true
  done
  exit "$code"
}
