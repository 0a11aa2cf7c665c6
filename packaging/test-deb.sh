#!/usr/bin/env bash
# Builds the .deb and tests it for real on this machine (as root): contents, install, the
# installed binary run as the service user with the packaged env file, remove, purge.
# Without a running systemd the service is not started by the package; the binary is then run
# the way the unit runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root"; exit 1; }
target="${CARGO_TARGET_DIR:-target}"
# The package depends on adduser; a minimal machine may lack it.
command -v adduser >/dev/null || { apt-get update -qq && apt-get install -y -qq adduser >/dev/null; }
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version 3.8.0
cargo deb --locked --output "$target/debian/" ${DEB_NO_BUILD:+--no-build} >/dev/null
deb=$(ls -t "$target"/debian/mxmedia_*.deb | head -1)
echo "built $deb"
passed=0; failed=0
check() { if "$@" >/dev/null 2>&1; then passed=$((passed + 1)); else echo "FAIL: $*"; failed=$((failed + 1)); fi; }

contents=$(dpkg-deb -c "$deb")
for path in ./usr/bin/mxmedia ./usr/lib/systemd/system/mxmedia.service ./etc/mxmedia/config.toml ./etc/default/mxmedia; do
    check grep -q " $path\$" <<<"$contents"
done
check grep -qx "/etc/mxmedia/config.toml" <(dpkg-deb -f "$deb" Conffiles 2>/dev/null; dpkg-deb -I "$deb" conffiles)

pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; dpkg --purge mxmedia >/dev/null 2>&1 || true; }
trap cleanup EXIT

dpkg -i "$deb" >/dev/null
check test -x /usr/bin/mxmedia
check getent passwd mxmedia
check test "$(stat -c %U:%a /var/lib/mxmedia)" = "mxmedia:750"
check test "$(stat -c %U:%G:%a /etc/default/mxmedia)" = "root:mxmedia:640"
# Installing twice (an upgrade to the same version) must be harmless.
dpkg -i "$deb" >/dev/null
check test "$(getent passwd mxmedia | wc -l)" = 1

# Run the installed binary as the unit does: service user, packaged env file, state directory.
port=18099
set -a; . /etc/default/mxmedia; set +a
MXMEDIA_DATA_DIR=/var/lib/mxmedia MXMEDIA_LISTEN=127.0.0.1:$port MXMEDIA_STORE__MIN_FREE_SPACE=0 \
    setpriv --reuid mxmedia --regid mxmedia --clear-groups /usr/bin/mxmedia serve >/tmp/mxmedia-deb.log 2>&1 &
pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/_mxmedia/health" >/dev/null && break; sleep 0.1; done
check curl -sf "http://127.0.0.1:$port/_mxmedia/health"
token=$(cat /var/lib/mxmedia/dev-token)
id=$(curl -sf -H "Authorization: Bearer $token" --data-binary 'from the package' \
     "http://127.0.0.1:$port/_matrix/media/v3/upload" | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/')
check test "$(curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$port/_matrix/client/v1/media/download/localhost/$id")" = "from the package"
check test "$(stat -c %U /var/lib/mxmedia/db)" = mxmedia
kill "$pid"; wait "$pid" || true; pid=""
check /usr/bin/mxmedia check-config >/dev/null
if command -v systemd-analyze >/dev/null; then
    check systemd-analyze verify /usr/lib/systemd/system/mxmedia.service
    systemd-analyze security --offline=yes /usr/lib/systemd/system/mxmedia.service 2>/dev/null | tail -1
fi

# Remove keeps data and config; purge deletes them and the user.
dpkg -r mxmedia >/dev/null
check test ! -e /usr/bin/mxmedia
check test -d /var/lib/mxmedia/db
check test -e /etc/default/mxmedia
dpkg --purge mxmedia >/dev/null
check test ! -e /var/lib/mxmedia
check test ! -e /etc/default/mxmedia
check bash -c '! getent passwd mxmedia'

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
