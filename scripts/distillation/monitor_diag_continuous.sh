#!/usr/bin/env bash
# Watch the running distillation job: ./monitor_diag_continuous.sh [--once] [--help]
# A thin wrapper over `diag-distill monitor` (refreshes every 10 s).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
case "${1:-}" in
  -h|--help)
    echo "usage: $0 [--once] [--help]"
    echo "  --once   print one snapshot and exit"
    echo "  --help   show this help"
    echo "Refreshes every 10 s; press Ctrl-C to quit. Other options: diag-distill monitor --help"
    exit 0 ;;
esac
cd "$root"
make --no-print-directory venv >/dev/null
exec "$root/.venv/bin/diag-distill" monitor "$@"
