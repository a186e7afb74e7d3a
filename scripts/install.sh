#!/usr/bin/env bash
# Install everything storefs needs on a Debian machine, idempotently: Debian's FUSE packages and rsync
# (as root, only if missing), a virtual environment in .venv, and storefs itself (with test extras when
# called as `install.sh test`). Sourced or run by quickstart.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need=()
for pkg in fuse3 libfuse2 rsync; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${1:-}" = "test" ]; then
    for pkg in diffutils restic util-linux duplicity; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
fi
if [ "${1:-}" = "bench" ]; then  # the peers and tools scripts/bench_peers.py measures against
    for pkg in s3fs fio util-linux; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "storefs needs these Debian packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
        exit 1
    fi
    echo "installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
target=.
[ "${1:-}" = "test" ] && target='.[test]'
[ "${1:-}" = "bench" ] && target='.[test,bench]'
pip_log=$(mktemp /tmp/storefs-pip.XXXXXX.log)
if ! .venv/bin/python -m pip install -e "$target" >"$pip_log" 2>&1; then
    tail -30 "$pip_log" >&2
    echo "pip install failed; full log: $pip_log" >&2
    exit 1
fi
rm -f "$pip_log"
.venv/bin/python -c "import storefs, fuse" || { echo "storefs did not install" >&2; exit 1; }

# storefs on the standard PATH, so that mount(8) (an fstab line of type fuse.storefs), systemd units
# and cron jobs find it without this checkout's .venv: a link to this checkout's command, as root
# (otherwise the README says how to add it by hand).
if [ "$(id -u)" = 0 ] && [ -d /usr/local/bin ]; then
    ln -sfn "$PWD/.venv/bin/storefs" /usr/local/bin/storefs
fi
