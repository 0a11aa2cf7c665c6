#!/usr/bin/env bash
# Download throughput of mxmedia against nginx serving the same 64 KiB file from disk, each
# server pinned to core 0 with one worker and wrk pinned to core 1; then mxmedia's idle RSS and
# its RSS growth while streaming a 1 GiB upload and download.
# Needs: wrk, nginx (Debian: apt-get install wrk nginx-light), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-5}"
CONNS="${CONNS:-32}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/mxmedia}"
[ -x "$BIN" ] || cargo build --release --bin mxmedia

. bench/common.sh

head -c 65536 /dev/urandom > "$work/file.bin"
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# nginx, one worker on core 0.
mkdir -p "$work/www" "$work/nginx"
cp "$work/file.bin" "$work/www/file.bin"
cat > "$work/nginx/nginx.conf" <<NGINX
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    server { listen 127.0.0.1:18081; root $work/www; }
}
NGINX
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)

# mxmedia, one worker on core 0.
MXMEDIA_DATA_DIR="$work/data" MXMEDIA_LISTEN=127.0.0.1:18080 MXMEDIA_WORKERS=1 \
MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:localhost"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 \
MXMEDIA_MEDIA__MAX_UPLOAD_SIZE=2GiB MXMEDIA_LOG="${MXMEDIA_LOG:-info}" \
    taskset -c 0 "$BIN" > "$work/mxmedia.log" 2>&1 & mx=$!; pids+=($mx)
wait_healthy http://127.0.0.1:18080
sleep 1
idle_rss=$(rss_kib "$mx")

auth=(-H "Authorization: Bearer benchtoken")
uri=$(curl -sf "${auth[@]}" -H 'Content-Type: application/octet-stream' --data-binary @"$work/file.bin" \
      http://127.0.0.1:18080/_matrix/media/v3/upload | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/')
mx_url="http://127.0.0.1:18080/_matrix/client/v1/media/download/localhost/$uri"
curl -sf "${auth[@]}" "$mx_url" | cmp - "$work/file.bin"

run_wrk "${auth[@]}" "$mx_url" >/dev/null          # warm-up
# Rounds alternate between the two servers so that noise from the machine hits both alike.
nginx_runs=(); mx_runs=()
for _ in $(seq "$ROUNDS"); do
    nginx_runs+=("$(run_wrk http://127.0.0.1:18081/file.bin)")
    mx_runs+=("$(run_wrk "${auth[@]}" "$mx_url")")
done
nginx_rps=$(printf '%s\n' "${nginx_runs[@]}" | median)
mx_rps=$(printf '%s\n' "${mx_runs[@]}" | median)
echo "64 KiB download, wrk -t1 -c$CONNS -d$DURATION x $ROUNDS alternating rounds, server on core 0, wrk on core 1"
echo "  nginx:   median $nginx_rps req/s (${nginx_runs[*]})"
echo "  mxmedia: median $mx_rps req/s (${mx_runs[*]})"
echo "  ratio mxmedia/nginx: $(awk -v a="$mx_rps" -v b="$nginx_rps" 'BEGIN {printf "%.2f", a/b}')"
echo "RSS idle: $((idle_rss / 1024)) MiB"

# 1 GiB streamed through: RSS sampled every 50 ms during the upload and the download.
peak_file="$work/peak"; echo 0 > "$peak_file"
sample() { local peak=0; while kill -0 "$mx" 2>/dev/null && [ ! -e "$work/stop" ]; do
    r=$(rss_kib "$mx"); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$peak_file"; sleep 0.05; done; }
before=$(rss_kib "$mx")
sample & sampler=$!
big_uri=$(head -c 1073741824 /dev/urandom | curl -sf "${auth[@]}" -H 'Content-Type: application/octet-stream' \
          -X POST -T - http://127.0.0.1:18080/_matrix/media/v3/upload \
          | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/')
got=$(curl -sf "${auth[@]}" "http://127.0.0.1:18080/_matrix/client/v1/media/download/localhost/$big_uri" | wc -c)
touch "$work/stop"; wait "$sampler" || true
peak=$(cat "$peak_file")
echo "1 GiB upload + download: $got bytes back; RSS before $((before / 1024)) MiB, peak $((peak / 1024)) MiB, growth $(((peak - before) / 1024)) MiB"
