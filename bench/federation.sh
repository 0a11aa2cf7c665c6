#!/usr/bin/env bash
# Federation download throughput against the client download endpoint, for the same 64 KiB
# file in the same run: mxmedia pinned to core 0 with one worker, wrk on core 1, rounds
# alternating. The requesting server is played by a key file whose keys `openssl s_server`
# publishes over HTTPS; each federation request carries a real X-Matrix signature that mxmedia
# verifies (keys cached after the first request). Also prints the X-Matrix verify microbenchmark.
# Needs: wrk, openssl, curl, a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-5}"
CONNS="${CONNS:-32}"
TARGET="${CARGO_TARGET_DIR:-target}"
cargo build -q --release --bin mxmedia -p mxmedia -p mxmedia-proto --example x_matrix
BIN="$TARGET/release/mxmedia"
EX="$TARGET/release/examples/x_matrix"

. bench/common.sh

origin=127.0.0.1:18448
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=127.0.0.1 \
    -addext "subjectAltName=IP:127.0.0.1" -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
"$BIN" generate-key "$work/remote.key" >/dev/null
mkdir -p "$work/www/_matrix/key/v2"
"$EX" keys "$work/remote.key" "$origin" > "$work/www/_matrix/key/v2/server"
(cd "$work/www" && exec openssl s_server -WWW -quiet -accept "$origin" -cert "$work/tls.crt" -key "$work/tls.key") \
    >/dev/null 2>&1 & pids+=($!)

MXMEDIA_DATA_DIR="$work/data" MXMEDIA_LISTEN=127.0.0.1:18080 MXMEDIA_WORKERS=1 \
MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:localhost"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 \
MXMEDIA_FEDERATION__CA_FILE="$work/tls.crt" MXMEDIA_FEDERATION__IP_RANGE_DENYLIST='[]' \
MXMEDIA_LOG="${MXMEDIA_LOG:-warn}" \
    taskset -c 0 "$BIN" > "$work/mxmedia.log" 2>&1 & pids+=($!)
wait_healthy http://127.0.0.1:18080

head -c 65536 /dev/urandom > "$work/file.bin"
auth=(-H "Authorization: Bearer benchtoken")
id=$(curl -sf "${auth[@]}" -H 'Content-Type: application/octet-stream' --data-binary @"$work/file.bin" \
     http://127.0.0.1:18080/_matrix/media/v3/upload | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/')
client_url="http://127.0.0.1:18080/_matrix/client/v1/media/download/localhost/$id"
fed_uri="/_matrix/federation/v1/media/download/$id"
fed_auth=(-H "Authorization: $("$EX" sign "$work/remote.key" "$origin" localhost "$fed_uri")")
curl -sf "${auth[@]}" "$client_url" | cmp - "$work/file.bin"
status=$(curl -s -o "$work/fed.out" -w '%{http_code}' "${fed_auth[@]}" "http://127.0.0.1:18080$fed_uri")
[ "$status" = 200 ] || { echo "federation download answered $status: $(cat "$work/fed.out")"; cat "$work/mxmedia.log"; exit 1; }
grep -q "multipart" <(curl -sI "${fed_auth[@]}" "http://127.0.0.1:18080$fed_uri" -X GET) || true

run_wrk "${fed_auth[@]}" "http://127.0.0.1:18080$fed_uri" >/dev/null   # warm-up
client_runs=(); fed_runs=()
for _ in $(seq "$ROUNDS"); do
    client_runs+=("$(run_wrk "${auth[@]}" "$client_url")")
    fed_runs+=("$(run_wrk "${fed_auth[@]}" "http://127.0.0.1:18080$fed_uri")")
done
client_rps=$(printf '%s\n' "${client_runs[@]}" | median)
fed_rps=$(printf '%s\n' "${fed_runs[@]}" | median)
echo "64 KiB download, wrk -t1 -c$CONNS -d$DURATION x $ROUNDS alternating rounds, mxmedia on core 0, wrk on core 1"
echo "  client v1 download:  median $client_rps req/s (${client_runs[*]})"
echo "  federation download: median $fed_rps req/s (${fed_runs[*]})"
echo "  ratio federation/client: $(awk -v a="$fed_rps" -v b="$client_rps" 'BEGIN {printf "%.2f", a/b}')"
"$EX" bench 20000
