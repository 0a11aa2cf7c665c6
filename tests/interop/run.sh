#!/usr/bin/env bash
# mxmedia interop suite: mxmedia beside real Synapse homeservers, behind a real nginx, driven by a
# real client library (matrix-nio). Installs what it needs, builds everything in a temp dir on
# loopback, runs tests/interop/scenarios.py, stops every process it started.
#
#   bash tests/interop/run.sh
#
# Environment:
#   MXMEDIA_BIN          mxmedia binary to test (default: cargo build --release, honouring CARGO_TARGET_DIR)
#   INTEROP_CACHE        where the Python venv is kept between runs (default /var/tmp/mxmedia-interop)
#   INTEROP_PYTHON       Python (>= 3.10) to create the venv with (default python3)
#   INTEROP_SCENARIOS    comma-separated scenario names to run (default: all)
#   INTEROP_KEEP=1       keep the temp dir (configs, logs, data) even when everything passed
#
# The last line printed is `N passed, M failed`; the exit status is non-zero on any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CACHE="${INTEROP_CACHE:-/var/tmp/mxmedia-interop}"
VENV="$CACHE/venv"
STARTED=$SECONDS

TOKEN_CACHE_SECS=2
MAX_UPLOAD_SIZE=$((8 * 1024 * 1024))    # mxmedia's limit, in bytes

WORK=""
PROCS=()          # "name pid", in start order
SUMMARY=""        # "passed failed" once the scenarios ran
SETUP_STEP="start"
ADDED_POLICY=""   # a policy-rc.d this script put in place for apt-get, to remove

say() { printf '[interop %4ds] %s\n' "$((SECONDS - STARTED))" "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
step() { SETUP_STEP="$*"; say "$*"; }

# ---------------------------------------------------------------------------------------------
# Stop everything we started (by PID), report, print the closing line.

stop_all() {
    local i name pid deadline
    for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do
        read -r name pid <<<"${PROCS[i]}"
        kill -TERM "$pid" 2>/dev/null || true
    done
    deadline=$((SECONDS + 15))
    for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do
        read -r name pid <<<"${PROCS[i]}"
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            say "$name (pid $pid) ignored SIGTERM; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    PROCS=()
}

dump_logs() {
    local f
    [[ -n "$WORK" && -d "$WORK/logs" ]] || return 0
    say "logs are in $WORK/logs (kept)"
    for f in "$WORK"/logs/*.log; do
        [[ -s "$f" ]] || continue
        printf -- '----- tail of %s\n' "$f"
        tail -n 25 "$f" | cut -c1-400
    done
    printf -- '-----\n'
}

on_exit() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    stop_all
    [[ -n "$ADDED_POLICY" ]] && rm -f "$ADDED_POLICY"
    local passed=0 failed=0
    if [[ -n "$SUMMARY" ]]; then
        read -r passed failed <<<"$SUMMARY"
    fi
    if ((rc != 0 || failed != 0)); then
        if [[ -z "$SUMMARY" ]]; then
            echo "FAIL setup: failed during: $SETUP_STEP"
            failed=1
        fi
        dump_logs
        ((rc != 0)) || rc=1
    elif [[ -n "$WORK" && "${INTEROP_KEEP:-0}" != 1 ]]; then
        rm -rf "$WORK"
    elif [[ -n "$WORK" ]]; then
        say "kept $WORK"
    fi
    say "done in $((SECONDS - STARTED))s"
    echo "$passed passed, $failed failed"
    exit "$rc"
}
trap on_exit EXIT
trap 'SETUP_STEP="$SETUP_STEP (interrupted by SIGINT)"; exit 130' INT
trap 'SETUP_STEP="$SETUP_STEP (interrupted by SIGTERM)"; exit 143' TERM

start() {  # start NAME LOGFILE CMD...: run in the background, remember its PID
    local name=$1 log=$2
    shift 2
    "$@" >"$log" 2>&1 </dev/null &
    PROCS+=("$name $!")
    say "started $name (pid $!), log $log"
}

pid_of() {
    local entry name pid
    for entry in "${PROCS[@]}"; do
        read -r name pid <<<"$entry"
        [[ "$name" == "$1" ]] && { echo "$pid"; return; }
    done
}

wait_http() {  # wait_http NAME URL [harness options]: poll until it answers, or fail with its log
    local name=$1 url=$2
    shift 2
    if ! "$PY" "$HERE/harness.py" wait-http "$url" --name "$name" --pid "$(pid_of "$name")" --cafile "$WORK/tls/ca.crt" "$@"; then
        die "$name did not come up (log: $WORK/logs/$name.log)"
    fi
}

# ---------------------------------------------------------------------------------------------
# 1. System packages.

step "checking system packages"
missing=()
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
PYTHON="${INTEROP_PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || missing+=(python3)
if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then missing+=(python3-venv); fi
if ((${#missing[@]})); then
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # Keep the package scripts from starting a system-wide nginx: this suite runs its own.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        ADDED_POLICY=/usr/sbin/policy-rc.d   # removed by on_exit, whatever happens
    fi
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
    if [[ -n "$ADDED_POLICY" ]]; then rm -f "$ADDED_POLICY"; ADDED_POLICY=""; fi
fi
command -v nginx >/dev/null 2>&1 || die "nginx is not installed"

# ---------------------------------------------------------------------------------------------
# 2. Python venv with Synapse and matrix-nio, cached between runs.

step "preparing the Python venv in $VENV"
mkdir -p "$CACHE"
want_stamp="$(sha256sum "$HERE/requirements.txt" | cut -c1-64) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
exec 9>"$CACHE/.lock"
flock -w 900 9 || die "another run holds $CACHE/.lock"
venv_ok() {
    [[ -f "$VENV/.interop-stamp" && "$(cat "$VENV/.interop-stamp")" == "$want_stamp" ]] &&
        "$VENV/bin/python" -c 'import synapse, synapse.synapse_rust, nio, aiohttp, signedjson' >/dev/null 2>&1
}
if venv_ok; then
    say "reusing the cached venv"
else
    say "creating the venv (installing Synapse takes a few minutes)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements.txt"
    echo "$want_stamp" >"$VENV/.interop-stamp"
    venv_ok || die "the fresh venv cannot import synapse and nio"
fi
# synadm, an admin tool speaking Synapse's admin API, in a venv of its own (its pins are not Synapse's).
SYNADM_VENV="$CACHE/synadm-venv"
synadm_stamp="$(sha256sum "$HERE/requirements-synadm.txt" | cut -c1-64) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
if [[ -f "$SYNADM_VENV/.interop-stamp" && "$(cat "$SYNADM_VENV/.interop-stamp")" == "$synadm_stamp" ]] &&
    "$SYNADM_VENV/bin/synadm" --version >/dev/null 2>&1; then
    say "reusing the cached synadm venv"
else
    say "creating the synadm venv"
    rm -rf "$SYNADM_VENV"
    "$PYTHON" -m venv "$SYNADM_VENV"
    "$SYNADM_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$HERE/requirements-synadm.txt"
    echo "$synadm_stamp" >"$SYNADM_VENV/.interop-stamp"
    "$SYNADM_VENV/bin/synadm" --version >/dev/null || die "the fresh synadm venv cannot run synadm"
fi
flock -u 9
PY="$VENV/bin/python"
"$PY" -c 'import sys, synapse, nio; from importlib.metadata import version as v; print("[interop] python", sys.version.split()[0], "synapse", v("matrix-synapse"), "matrix-nio", v("matrix-nio"))'

# PostgreSQL, for the import scenario's second source (Synapse's database ported to it).
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
if [[ ! -x "$PG_BIN/initdb" ]]; then
    step "installing postgresql with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        ADDED_POLICY=/usr/sbin/policy-rc.d
    fi
    apt-get install -y -q --no-install-recommends postgresql >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends postgresql; }
    if [[ -n "$ADDED_POLICY" ]]; then rm -f "$ADDED_POLICY"; ADDED_POLICY=""; fi
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
fi
[[ -x "$PG_BIN/initdb" ]] || die "PostgreSQL is not installed"

# ---------------------------------------------------------------------------------------------
# 3. The mxmedia binary.

step "locating the mxmedia binary"
if [[ -n "${MXMEDIA_BIN:-}" ]]; then
    BIN="$MXMEDIA_BIN"
else
    say "MXMEDIA_BIN unset: cargo build --release --bin mxmedia"
    (cd "$ROOT" && cargo build --release --bin mxmedia)
    target="${CARGO_TARGET_DIR:-target}"
    [[ "$target" == /* ]] || target="$ROOT/$target"
    BIN="$target/release/mxmedia"
fi
[[ -x "$BIN" ]] || die "no executable mxmedia at $BIN"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mxmedia-interop.XXXXXX")"
mkdir -p "$WORK"/{bin,logs,tls,nginx/tmp,hs1,hs2,mxmedia/data}
# A copy, so a rebuild of the original during the run changes nothing.
cp "$BIN" "$WORK/bin/mxmedia"
say "testing $("$WORK/bin/mxmedia" --version) from $BIN; work dir $WORK"

step "starting PostgreSQL on loopback"
# Its own cluster in the work dir, run as the postgres user (it refuses root); the work dir is
# traversable so that user reaches its directory, and nothing else in it.
PG_PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$WORK/pg"
AS_PG=()
if [[ $(id -u) == 0 ]]; then
    chmod 711 "$WORK"
    chown postgres: "$WORK/pg"
    AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
fi
"${AS_PG[@]}" "$PG_BIN/initdb" -D "$WORK/pg/data" -U synapse -A trust -E UTF8 --locale=C >"$WORK/logs/initdb.log" 2>&1 ||
    die "initdb failed: $(tail -n 5 "$WORK/logs/initdb.log")"
start postgres "$WORK/logs/postgres.log" "${AS_PG[@]}" "$PG_BIN/postgres" -D "$WORK/pg/data" \
    -h 127.0.0.1 -p "$PG_PORT" -k "$WORK/pg" -c fsync=off
for _ in $(seq 100); do
    "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U synapse && break
    sleep 0.1
done
"$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U synapse || die "PostgreSQL did not come up (log: $WORK/logs/postgres.log)"
"$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U synapse -E UTF8 --locale=C -T template0 synapse ||
    die "createdb failed"

# ---------------------------------------------------------------------------------------------
# 4. Addresses, certificates.

step "choosing loopback addresses"
read -r HS1_IP HS2_IP < <("$PY" "$HERE/harness.py" pick-addrs) || die "no free loopback addresses"
HS1_NAME="$HS1_IP:8448"
HS2_NAME="$HS2_IP:8448"
say "hs1 = $HS1_NAME (Synapse $HS1_IP:8008, mxmedia $HS1_IP:8090), hs2 = $HS2_NAME (Synapse $HS2_IP:8008)"

step "making a throwaway CA and certificates"
(
    cd "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout ca.key -out ca.crt -subj "/CN=mxmedia interop CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    for hs in hs1:"$HS1_IP" hs2:"$HS2_IP"; do
        name=${hs%%:*} ip=${hs#*:}
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$name.key" -out "$name.csr" -subj "/CN=$ip" 2>/dev/null
        printf '%s\n' "subjectAltName=IP:$ip" "basicConstraints=critical,CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth,clientAuth" \
            "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid" >"$name.ext"
        openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
            -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    done
)

# ---------------------------------------------------------------------------------------------
# 5. Synapse configs.

step "writing Synapse configs"
# Synapse's default ip_range_blacklist minus 127.0.0.0/8 and ::1/128: it refuses to federate with
# loopback addresses otherwise.
IP_BLACKLIST='["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24",
  "169.254.0.0/16", "192.88.99.0/24", "198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24",
  "203.0.113.0/24", "224.0.0.0/4", "fe80::/10", "fc00::/7", "2001:db8::/32", "ff00::/8", "fec0::/10"]'
secret() { "$PY" -c 'import secrets; print(secrets.token_hex(24))'; }
write_synapse_config() {  # NAME IP MEDIA_REPO(true|false)
    local name=$1 ip=$2 media_repo=$3 dir="$WORK/$1"
    cat >"$dir/homeserver.yaml" <<EOF
server_name: "$ip:8448"
public_baseurl: "https://$ip:8448/"
pid_file: "$dir/homeserver.pid"
report_stats: false
listeners:
  - port: 8008
    bind_addresses: ["$ip"]
    type: http
    tls: false
    x_forwarded: true
    resources:
      - names: [client, federation]
        compress: false
database:
  name: sqlite3
  args:
    database: "$dir/homeserver.db"
media_store_path: "$dir/media_store"
enable_media_repo: $media_repo
signing_key_path: "$dir/signing.key"
registration_shared_secret: "$(secret)"
macaroon_secret_key: "$(secret)"
form_secret: "$(secret)"
enable_registration: false
enable_registration_without_verification: false
allow_guest_access: true
presence:
  enabled: false
trusted_key_servers: []
suppress_key_server_warning: true
federation_custom_ca_list: ["$WORK/tls/ca.crt"]
federation_verify_certificates: true
ip_range_blacklist: $IP_BLACKLIST
federation:
  destination_min_retry_interval: 1s
  destination_max_retry_interval: 5s
  max_short_retry_delay: 1s
  max_long_retry_delay: 5s
rc_federation:
  window_size: 1000
  sleep_limit: 1000
  sleep_delay: 10
  reject_limit: 1000
  concurrent: 100
rc_login:
  address: {per_second: 1000, burst_count: 1000}
  account: {per_second: 1000, burst_count: 1000}
  failed_attempts: {per_second: 1000, burst_count: 1000}
rc_registration: {per_second: 1000, burst_count: 1000}
rc_message: {per_second: 1000, burst_count: 1000}
EOF
}
write_synapse_config hs1 "$HS1_IP" false   # hs1's media is mxmedia's job
# An application service on hs1 (a bridge), whose token mxmedia must treat as Synapse would.
AS_TOKEN="$(secret)"
cat >"$WORK/hs1/appservice.yaml" <<EOF
id: interop_bridge
url: null
as_token: "$AS_TOKEN"
hs_token: "$(secret)"
sender_localpart: bridgebot
rate_limited: false
namespaces:
  users: [{exclusive: true, regex: "@bridge_.*"}]
  aliases: []
  rooms: []
EOF
echo "app_service_config_files: [\"$WORK/hs1/appservice.yaml\"]" >>"$WORK/hs1/homeserver.yaml"
write_synapse_config hs2 "$HS2_IP" true    # hs2 keeps Synapse's media repo (remote media, later)
"$PY" - "$WORK/hs1/signing.key" "$WORK/hs2/signing.key" <<'EOF'
import sys
from signedjson.key import generate_signing_key, write_signing_keys
for path in sys.argv[1:]:
    with open(path, "w") as f:
        write_signing_keys(f, [generate_signing_key("a_interop")])
EOF
shared_secret() { sed -n 's/^registration_shared_secret: "\(.*\)"$/\1/p' "$WORK/$1/homeserver.yaml"; }

# ---------------------------------------------------------------------------------------------
# 6. nginx config: hs1's media locations come from assets/nginx-media.conf.template.

step "writing the nginx config"
TEMPLATE="$ROOT/assets/nginx-media.conf.template"
[[ -f "$TEMPLATE" ]] || die "missing $TEMPLATE"
sed -e "s|\${MEDIA_UPSTREAM}|http://$HS1_IP:8090|g" \
    -e "s|\${HOMESERVER_UPSTREAM}|http://$HS1_IP:8008|g" \
    "$TEMPLATE" >"$WORK/nginx/hs1-locations.conf"
if grep -n '\${' "$WORK/nginx/hs1-locations.conf" | grep -v '^[0-9]*:#'; then
    die "placeholders left unreplaced in $WORK/nginx/hs1-locations.conf"
fi
N="$WORK/nginx"
# hs2 keeps Synapse's media repo until the import scenario moves it to a second mxmedia: the
# route-hs2-media script swaps hs2's locations for the template's and reloads nginx.
sed -e "s|\${MEDIA_UPSTREAM}|http://$HS2_IP:8090|g" \
    -e "s|\${HOMESERVER_UPSTREAM}|http://$HS2_IP:8008|g" \
    "$TEMPLATE" >"$N/hs2-mxmedia-locations.conf"
cat >"$N/hs2-synapse-locations.conf" <<EOF
location /_matrix {
    proxy_pass http://$HS2_IP:8008;
    proxy_set_header Host \$host;
    proxy_set_header X-Forwarded-For \$remote_addr;
    client_max_body_size 50M;
}
EOF
cp "$N/hs2-synapse-locations.conf" "$N/hs2-locations.conf"
{
    [[ $(id -u) == 0 ]] && echo "user root;   # workers must reach the private temp dirs"
    cat <<EOF
worker_processes 1;
pid $N/nginx.pid;
error_log $WORK/logs/nginx-error.log notice;
events { worker_connections 512; }
http {
    default_type application/octet-stream;
    log_format interop '\$remote_addr "\$request" \$status \$body_bytes_sent upstream=\$upstream_addr upstream_status=\$upstream_status time=\$request_time';
    access_log $WORK/logs/nginx-access.log interop;
    client_body_temp_path $N/tmp/body;
    proxy_temp_path $N/tmp/proxy;
    fastcgi_temp_path $N/tmp/fastcgi;
    uwsgi_temp_path $N/tmp/uwsgi;
    scgi_temp_path $N/tmp/scgi;
    ssl_protocols TLSv1.2 TLSv1.3;

    server {   # hs1: media to mxmedia, the rest to Synapse
        listen $HS1_IP:8448 ssl;
        server_name $HS1_IP;
        ssl_certificate $WORK/tls/hs1.crt;
        ssl_certificate_key $WORK/tls/hs1.key;
        include $N/hs1-locations.conf;
    }
    server {   # hs2: all to Synapse, its own media repo included
        listen $HS2_IP:8448 ssl;
        server_name $HS2_IP;
        ssl_certificate $WORK/tls/hs2.crt;
        ssl_certificate_key $WORK/tls/hs2.key;
        include $N/hs2-locations.conf;
    }
}
EOF
} >"$N/nginx.conf"
NGINX=(nginx -p "$N" -c "$N/nginx.conf" -e "$WORK/logs/nginx-error.log")
"${NGINX[@]}" -t -q || die "nginx rejects $N/nginx.conf"
cat >"$WORK/bin/route-hs2-media" <<EOF
#!/bin/sh
# route-hs2-media mxmedia|synapse: where nginx sends hs2's media paths.
set -e
cp "$N/hs2-\$1-locations.conf" "$N/hs2-locations.conf"
exec ${NGINX[*]} -s reload
EOF
chmod +x "$WORK/bin/route-hs2-media"

# ---------------------------------------------------------------------------------------------
# 7. mxmedia config: as an admin would, environment variables only.

LOOPBACK_ALLOWED_DENYLIST='["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12",
  "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
  "224.0.0.0/4", "240.0.0.0/4", "fc00::/7", "fe80::/10", "ff00::/8"]'
MX_ENV=(
    MXMEDIA_SERVER_NAME="$HS1_NAME"
    MXMEDIA_LISTEN="$HS1_IP:8090"
    MXMEDIA_DATA_DIR="$WORK/mxmedia/data"
    MXMEDIA_AUTH__HOMESERVER_URL="http://$HS1_IP:8008"
    MXMEDIA_AUTH__TOKEN_CACHE_SECS="$TOKEN_CACHE_SECS"
    MXMEDIA_MEDIA__MAX_UPLOAD_SIZE="$MAX_UPLOAD_SIZE"
    MXMEDIA_STORE__MIN_FREE_SPACE=64MiB
    MXMEDIA_WORKERS=2
    MXMEDIA_LOG=info
    # mxmedia signs and verifies federation requests as hs1, with hs1's own key file.
    MXMEDIA_FEDERATION__SIGNING_KEY_PATH="$WORK/hs1/signing.key"
    MXMEDIA_FEDERATION__CA_FILE="$WORK/tls/ca.crt"
    # The default denylist without loopback, where hs2 lives in this suite.
    MXMEDIA_FEDERATION__IP_RANGE_DENYLIST="$LOOPBACK_ALLOWED_DENYLIST"
    # The doctor scenarios' user, so `mxmedia doctor --token` may remove its test upload.
    MXMEDIA_AUTH__ADMINS="[\"@doctor-admin:$HS1_NAME\"]"
    NO_COLOR=1
)
# Nothing from the caller's environment or /etc/mxmedia leaks in: an empty config file, and every
# inherited MXMEDIA_* variable unset.
: >"$WORK/mxmedia/config.toml"
UNSET=()
while read -r var; do UNSET+=(-u "$var"); done < <(compgen -e | grep '^MXMEDIA_' || true)
MXMEDIA=(env "${UNSET[@]}" "${MX_ENV[@]}" "$WORK/bin/mxmedia" --config "$WORK/mxmedia/config.toml")
# The same environment for commands the scenarios run (`doctor`): `mxmedia-env [VAR=value…] CMD…`.
{
    echo '#!/usr/bin/env bash'
    printf 'exec env'
    printf ' %q' "${UNSET[@]}" "${MX_ENV[@]}"
    printf ' "$@"\n'
} >"$WORK/bin/mxmedia-env"
chmod +x "$WORK/bin/mxmedia-env"
# A second mxmedia, for hs2, empty until the import scenario moves hs2's media into it.
mkdir -p "$WORK/mxmedia2/data"
: >"$WORK/mxmedia2/config.toml"
MX2_ENV=(
    MXMEDIA_SERVER_NAME="$HS2_NAME"
    MXMEDIA_LISTEN="$HS2_IP:8090"
    MXMEDIA_DATA_DIR="$WORK/mxmedia2/data"
    MXMEDIA_AUTH__HOMESERVER_URL="http://$HS2_IP:8008"
    MXMEDIA_AUTH__TOKEN_CACHE_SECS="$TOKEN_CACHE_SECS"
    MXMEDIA_STORE__MIN_FREE_SPACE=64MiB
    MXMEDIA_WORKERS=1
    MXMEDIA_LOG=info
    MXMEDIA_FEDERATION__SIGNING_KEY_PATH="$WORK/hs2/signing.key"
    MXMEDIA_FEDERATION__CA_FILE="$WORK/tls/ca.crt"
    MXMEDIA_FEDERATION__IP_RANGE_DENYLIST="$LOOPBACK_ALLOWED_DENYLIST"
    NO_COLOR=1
)
MXMEDIA2=(env "${UNSET[@]}" "${MX2_ENV[@]}" "$WORK/bin/mxmedia" --config "$WORK/mxmedia2/config.toml")
{
    echo '#!/bin/sh'
    echo '# mxmedia as configured for hs2, e.g. `mxmedia2 import synapse ...`'
    printf 'exec'
    printf ' %q' "${MXMEDIA2[@]}"
    printf ' "$@"\n'
} >"$WORK/bin/mxmedia2"
chmod +x "$WORK/bin/mxmedia2"
"${MXMEDIA[@]}" check-config >"$WORK/logs/mxmedia-check-config.txt" 2>&1 ||
    die "mxmedia check-config failed: $(cat "$WORK/logs/mxmedia-check-config.txt")"

# ---------------------------------------------------------------------------------------------
# 8. Start everything, wait until each answers.

step "starting Synapse hs1 and hs2, mxmedia, nginx"
start hs1 "$WORK/logs/hs1.log" "$PY" -m synapse.app.homeserver -c "$WORK/hs1/homeserver.yaml"
start hs2 "$WORK/logs/hs2.log" "$PY" -m synapse.app.homeserver -c "$WORK/hs2/homeserver.yaml"
start mxmedia "$WORK/logs/mxmedia.log" "${MXMEDIA[@]}" serve
start mxmedia2 "$WORK/logs/mxmedia2.log" "${MXMEDIA2[@]}" serve
start nginx "$WORK/logs/nginx.log" "${NGINX[@]}" -g "daemon off;"

step "waiting for the servers"
wait_http mxmedia "http://$HS1_IP:8090/_mxmedia/health" --timeout 30 --status 200
wait_http mxmedia2 "http://$HS2_IP:8090/_mxmedia/health" --timeout 30 --status 200
wait_http hs1 "http://$HS1_IP:8008/health" --timeout 180 --status 200
wait_http hs2 "http://$HS2_IP:8008/health" --timeout 180 --status 200
wait_http nginx "https://$HS1_NAME/_matrix/client/versions" --timeout 30 --status 200
wait_http nginx "https://$HS2_NAME/_matrix/client/versions" --timeout 30 --status 200
say "all up"

# ---------------------------------------------------------------------------------------------
# 9. Scenarios.

cat >"$WORK/context.json" <<EOF
{
  "hs1": {"name": "hs1", "server_name": "$HS1_NAME", "base_url": "https://$HS1_NAME",
          "synapse_url": "http://$HS1_IP:8008", "shared_secret": "$(shared_secret hs1)"},
  "hs2": {"name": "hs2", "server_name": "$HS2_NAME", "base_url": "https://$HS2_NAME",
          "synapse_url": "http://$HS2_IP:8008", "shared_secret": "$(shared_secret hs2)"},
  "mxmedia_url": "http://$HS1_IP:8090",
  "mxmedia_upstream": "$HS1_IP:8090",
  "mxmedia_data_dir": "$WORK/mxmedia/data",
  "token_cache_secs": $TOKEN_CACHE_SECS,
  "max_upload_size": $MAX_UPLOAD_SIZE,
  "ca_file": "$WORK/tls/ca.crt",
  "nginx_access_log": "$WORK/logs/nginx-access.log",
  "mxmedia_log": "$WORK/logs/mxmedia.log",
  "appservice_token": "$AS_TOKEN",
  "fixtures": "$ROOT/tests/fixtures",
  "synadm": "$SYNADM_VENV/bin/synadm",
  "hs2_media": {"mxmedia": "$WORK/bin/mxmedia2", "route": "$WORK/bin/route-hs2-media",
                "media_store": "$WORK/hs2/media_store", "database": "$WORK/hs2/homeserver.db",
                "work_dir": "$WORK/mxmedia2",
                "postgres": {"host": "127.0.0.1", "port": $PG_PORT, "user": "synapse", "database": "synapse"}},
  "doctor": {"env": "$WORK/bin/mxmedia-env", "bin": "$WORK/bin/mxmedia",
             "config": "$WORK/mxmedia/config.toml", "work": "$WORK",
             "nginx_locations": "$N/hs1-locations.conf",
             "nginx_reload": ["nginx", "-p", "$N", "-c", "$N/nginx.conf", "-e", "$WORK/logs/nginx-error.log", "-s", "reload"]}
}
EOF
step "running scenarios"
set +e
"$PY" "$HERE/scenarios.py" "$WORK/context.json" "$WORK/results"
scenarios_rc=$?
set -e
[[ -s "$WORK/results" ]] || die "scenarios.py ended without results (exit $scenarios_rc)"
SUMMARY="$(cat "$WORK/results")"
read -r passed failed <<<"$SUMMARY"
# Every server must have survived the scenarios.
for entry in "${PROCS[@]}"; do
    read -r name pid <<<"$entry"
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "FAIL processes: $name (pid $pid) died during the scenarios"
        failed=$((failed + 1))
    fi
done
SUMMARY="$passed $failed"
((failed == 0)) || exit 1
