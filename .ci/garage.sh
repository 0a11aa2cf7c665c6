#!/usr/bin/env bash
# Ensures the Garage binary the S3 tests run against is present and prints its path.
# It lives in a cache dir outside the clone (GARAGE_CACHE, default /var/tmp/garage-2.5.0), like
# the build cache; when missing it is built from crates.io (3 to 9 minutes on 2 cores), so a
# run without the cache passes too.
set -euo pipefail
version=2.5.0
root="${GARAGE_CACHE:-/var/tmp/garage-$version}"
bin="$root/bin/garage"
if ! [[ -x "$bin" ]] || ! "$bin" --version 2>/dev/null | grep -q "$version"; then
    echo "== building Garage $version into $root (once; cached outside the clone)" >&2
    # Its own target dir, so the build neither touches nor is touched by mxmedia's.
    CARGO_TARGET_DIR="$root/build" cargo install garage --version "$version" --locked \
        --no-default-features --features sqlite,bundled-libs --root "$root" >&2
    rm -rf "$root/build"
fi
echo "$bin"
