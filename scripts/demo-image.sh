#!/usr/bin/env bash
# Writes a `FROM scratch` build context of the demo service into DIR: the binary as /erp-hub,
# the shared libraries `ldd` names, and a Dockerfile (listening on 0.0.0.0:8000; with
# `healthcheck`, a HEALTHCHECK that runs `/erp-hub probe`). No registry is needed.
#   bash scripts/demo-image.sh DIR [healthcheck]
set -euo pipefail
dir=$1
bin=${DEMO_BIN:-${CARGO_TARGET_DIR:-target}/debug/quickstart-demo}
rm -rf "$dir/rootfs"
mkdir -p "$dir/rootfs"
cp "$bin" "$dir/rootfs/erp-hub"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
  mkdir -p "$dir/rootfs$(dirname "$lib")"
  cp "$lib" "$dir/rootfs$lib"
done
hc=""
if [ "${2:-}" = healthcheck ]; then
  hc='HEALTHCHECK --interval=300ms --timeout=2s --retries=2 CMD ["/erp-hub", "probe"]'
fi
cat > "$dir/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
ENV DEMO_BIND=0.0.0.0 PORT=8000
EXPOSE 8000
$hc
ENTRYPOINT ["/erp-hub"]
DOCKERFILE
