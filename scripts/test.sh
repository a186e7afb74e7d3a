#!/usr/bin/env bash
# Install everything (Debian packages, .venv, storefs with its test extras) and run the whole suite:
# lint, then every test layer (unit, contract, SDK, real FUSE mounts). Exit code 0 only if tests ran
# and all passed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh test || exit 1

.venv/bin/python -m ruff check --select F,E9 storefs tests scripts || exit 1

# Three workers (pytest-xdist): most tests wait on servers, retries and mounts rather than on the CPU,
# so on 2 cores three at a time halve the wall time (~7 min instead of ~16). STOREFS_TEST_WORKERS=0
# runs everything in one process.
# --dist loadgroup: tests marked with one xdist_group share a worker (the SeaweedFS cluster starts once).
.venv/bin/python -m pytest -p no:cacheprovider -n "${STOREFS_TEST_WORKERS:-3}" --dist loadgroup "$@"
rc=$?
if [ $rc -eq 5 ]; then
    echo "pytest collected no tests: that is a failure" >&2
    exit 1
fi
exit $rc
