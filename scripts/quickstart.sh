#!/usr/bin/env bash
# Quick start: install storefs, then mount the built-in `local` remote (a directory bucket, no account
# needed), copy files in and out, list them, check they are intact, and unmount.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"

mnt=$(mktemp -d /tmp/storefs-demo-mnt.XXXXXX)
out=$(mktemp -d /tmp/storefs-demo-out.XXXXXX)
cleanup() {   # on any exit: never fails itself, and keeps the script's own exit status
    local status=$?
    set +e
    if mountpoint -q "$mnt"; then
        storefs unmount "$mnt" >/dev/null 2>&1 || fusermount -uz "$mnt" 2>/dev/null
    fi
    rmdir "$mnt" 2>/dev/null
    rm -rf "$out"
    exit "$status"
}
trap cleanup EXIT

echo "== storefs mount local:demo $mnt"
storefs mount local:demo "$mnt"
echo "== copying storefs's own source in (replacing what an earlier run left)"
rm -rf "$mnt/storefs-demo"
mkdir -p "$mnt/storefs-demo"
cp -r storefs README.md "$mnt/storefs-demo/"
head -c 20000000 /dev/urandom > "$out/random.bin"
cp "$out/random.bin" "$mnt/storefs-demo/random.bin"
echo "== ls -l $mnt/storefs-demo"
ls -l "$mnt/storefs-demo"
echo "== copying it back out and comparing"
cp -r "$mnt/storefs-demo" "$out/back"
diff -r storefs "$out/back/storefs"
cmp "$out/random.bin" "$out/back/random.bin"
echo "== storefs unmount $mnt (uploads finish first)"
storefs unmount "$mnt"
echo "== after unmount, the bucket still holds it:"
storefs ls -l local:demo/storefs-demo
echo "OK: files went in, came back out byte-identical, and stayed in the bucket after unmount."
