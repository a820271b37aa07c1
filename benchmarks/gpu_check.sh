#!/usr/bin/env bash
# The prepared GPU check (benchmarks/gpu_check.py, which says what it runs): every GPU figure in one call of at most
# 8 minutes, written to one JSON file.
#   bash benchmarks/gpu_check.sh [--json FILE] [--commit SHA]   # on a machine with one GPU
#   bash benchmarks/gpu_check.sh --dry-run                      # on a CPU: every step's command parses
# $PYTHON (default: python, else python3) runs it; genvision is imported from this checkout.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$(command -v python || command -v python3)}"
exec "$python" "$here/gpu_check.py" "$@"
