#!/bin/sh
# A stand-in for seed 002's scripts/check_architecture_compliance.py: every service has a
# configuration entry.
set -e
dir=${1:-config}
for svc in netra-backend-staging netra-auth-service netra-frontend-staging; do
  grep -q "$svc" "$dir/services.yaml" || { echo "missing service $svc"; exit 1; }
done
echo "All checks pass"
