#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine and runs them.
#   bash scripts/test.sh            # full suite (unit + integration with real peers)
#   bash scripts/test.sh -m "not slow"   # the fast set, in seconds
set -euo pipefail
cd "$(dirname "$0")/.."

# Real peers: dcmtk (storescu/echoscu/storescp), dicom3tools (dciodvfy), Orthanc (the PACS),
# plastimatch (independent RTSTRUCT reader), PostgreSQL (multi-worker test), Chromium (the
# dashboard in a real headless browser, driven by Playwright without downloading a browser),
# systemd's tools (the units checked with systemd-analyze verify), and mricron-data (a real
# tumour-free T1 head, Colin 27: the MR engine must find no lesion in it).
peers="dcmtk dicom3tools orthanc plastimatch postgresql chromium systemd mricron-data"
missing=""
for bin in storescu dciodvfy Orthanc plastimatch chromium systemd-analyze; do
  command -v "$bin" >/dev/null 2>&1 || missing=yes
done
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=yes
[ -f /usr/share/mricron/templates/ch2.nii.gz ] || missing=yes
if [ -n "$missing" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $peers >/dev/null
fi

# Python: a private venv; torch pinned to the CPU wheel first so nothing pulls a CUDA build.
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q torch==2.13.0
.venv/bin/pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/lint-imports
# Type hints are checked, not just written ([tool.mypy] in pyproject.toml); errors fail the run.
.venv/bin/mypy
exec .venv/bin/pytest "$@"
