#!/usr/bin/env bash
# Start continuous distillation from report START: ./continuous_diag_distillation.sh START [OUTPUT_DIR]
# A thin wrapper over `diag-distill start`; see README_diag_distillation.md.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  echo "usage: $0 START [OUTPUT_DIR]"
  echo "  START       first report number, e.g. 10001"
  echo "  OUTPUT_DIR  where results go (default: OUTPUT_DIR of configs/system_config.py)"
  [ $# -ge 1 ] && exit 0 || exit 2
fi
cd "$root"
make --no-print-directory venv >/dev/null
args=(start "$1")
[ $# -ge 2 ] && args+=(--output-dir "$2")
exec "$root/.venv/bin/diag-distill" "${args[@]}"
