#!/usr/bin/env bash
# Downloads from mxmedia against nginx serving the same files from disk: 64 KiB (memory cache)
# and file blobs of 300 KiB and 10 MiB, at 1 and 32 connections: req/s, p50 and p99 latency,
# MiB/s. At 64 KiB the bare actix-web server (examples/bare_actix.rs: one worker, one route, a
# static body, no middleware) runs too, as the framework's ceiling, and the ratios of mxmedia to
# it are printed. Each server is pinned to core 0 with one worker and wrk to core 1. Then the
# 64 KiB rows again under contention: a busy loop pinned to core 0 beside the servers
# (CONTENTION=0 skips it). Then mxmedia's idle RSS and its RSS growth while streaming a 1 GiB
# upload and download (BIG=0 skips it).
# Needs: wrk, nginx (Debian: apt-get install wrk nginx-light), release builds of mxmedia and of
# the bare_actix example.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-3s}"
ROUNDS="${ROUNDS:-3}"
# Sizes of media downloaded, all blob files (inline_blob_max is 4 KiB): up to 256 KiB they are
# served from the memory cache once read, larger ones stream from disk.
SIZES="${SIZES:-64KiB 300KiB 10MiB}"
CONNS_LIST="${CONNS_LIST:-1 32}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/mxmedia}"
[ -x "$BIN" ] || cargo build --release --bin mxmedia
BARE="${BARE:-${CARGO_TARGET_DIR:-target}/release/examples/bare_actix}"
[ -x "$BARE" ] || cargo build --release --example bare_actix

. bench/common.sh

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# nginx, one worker on core 0.
mkdir -p "$work/www" "$work/nginx"
# nginx workers run as an unprivileged user: let them into the work dir.
chmod 755 "$work" "$work/www"
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
    tcp_nopush on;
    server { listen 127.0.0.1:18081; root $work/www; }
}
NGINX
taskset -c 0 nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" & pids+=($!)

# The bare actix-web server, one worker on core 0.
taskset -c 0 "$BARE" 127.0.0.1:18082 & pids+=($!)

# mxmedia, one worker on core 0.
MXMEDIA_DATA_DIR="$work/data" MXMEDIA_LISTEN=127.0.0.1:18080 MXMEDIA_WORKERS=1 \
MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:localhost"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 \
MXMEDIA_MEDIA__MAX_UPLOAD_SIZE=2GiB MXMEDIA_LOG="${MXMEDIA_LOG:-warn}" \
    taskset -c 0 "$BIN" > "$work/mxmedia.log" 2>&1 & mx=$!; pids+=($mx)
wait_healthy http://127.0.0.1:18080
sleep 1
idle_rss=$(rss_kib "$mx")
auth=(-H "Authorization: Bearer benchtoken")

# One wrk run: prints "req/s p50_ms p99_ms".
wrk_stats() {
    taskset -c 1 wrk -t1 -c"$1" -d"$DURATION" --latency "${@:2}" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0;
                         if (v ~ /m$/) return v * 60000; return v * 1000 }
        $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
        /Requests\/sec/ { rps = $2 } END { printf "%s %.3f %.3f\n", rps, p50, p99 }'
}

# Prints the table rows of one size and connection count, rounds alternating between the
# servers so that noise from the machine hits all alike.
compare() { # size bytes conns mx_url
    local size=$1 bytes=$2 conns=$3 mx_url=$4 servers=(nginx mx)
    [ "$size" = 64KiB ] && servers+=(bare)
    wrk_stats "$conns" "${auth[@]}" "$mx_url" >/dev/null   # warm-up
    for server in "${servers[@]}"; do : > "$work/$server.runs"; done
    for _ in $(seq "$ROUNDS"); do
        wrk_stats "$conns" "http://127.0.0.1:18081/$size.bin" >> "$work/nginx.runs"
        wrk_stats "$conns" "${auth[@]}" "$mx_url" >> "$work/mx.runs"
        [ "$size" != 64KiB ] || wrk_stats "$conns" http://127.0.0.1:18082/64KiB.bin >> "$work/bare.runs"
    done
    for server in "${servers[@]}"; do
        rps=$(cut -d' ' -f1 "$work/$server.runs" | median)
        p50=$(cut -d' ' -f2 "$work/$server.runs" | median)
        p99=$(cut -d' ' -f3 "$work/$server.runs" | median)
        echo "$rps $p99" > "$work/$server.median"
        printf '%-8s %5s  %-8s %10s %9s %9s %9.1f\n' "$size" "$conns" \
            "$(case $server in mx) echo mxmedia;; bare) echo bare;; *) echo nginx;; esac)" \
            "$rps" "$p50" "$p99" "$(awk -v r="$rps" -v b="$bytes" 'BEGIN {print r * b / 1048576}')"
    done
    if [ "$size" = 64KiB ]; then
        read -r mx_rps mx_p99 < "$work/mx.median"; read -r bare_rps bare_p99 < "$work/bare.median"
        awk -v a="$mx_rps" -v b="$bare_rps" -v c="$mx_p99" -v d="$bare_p99" 'BEGIN {
            printf "%-8s %5s  mxmedia/bare: throughput %.2fx (target >= 0.90), p99 %.2fx (target <= 2)\n",
                   "", "", a / b, (d > 0 ? c / d : 0) }'
    fi
}

echo "downloads: wrk -t1 -c<conns> -d$DURATION --latency, $ROUNDS alternating rounds (median), server on core 0, wrk on core 1"
printf '%-8s %5s  %-8s %10s %9s %9s %9s\n' size conns server req/s p50_ms p99_ms MiB/s
for size in $SIZES; do
    bytes=$(numfmt --from=iec-i "${size%B}")
    head -c "$bytes" /dev/urandom > "$work/www/$size.bin"
    uri=$(curl -sf "${auth[@]}" -H 'Content-Type: application/octet-stream' --data-binary @"$work/www/$size.bin" \
          http://127.0.0.1:18080/_matrix/media/v3/upload | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/')
    mx_url="http://127.0.0.1:18080/_matrix/client/v1/media/download/localhost/$uri"
    curl -sf "${auth[@]}" "$mx_url" | cmp - "$work/www/$size.bin"
    [ "$size" = 64KiB ] && small_url=$mx_url
    for conns in $CONNS_LIST; do compare "$size" "$bytes" "$conns" "$mx_url"; done
done
if [ "${CONTENTION:-1}" = 1 ] && [ -n "${small_url:-}" ]; then
    echo "under contention: a busy loop pinned to core 0 beside the server"
    taskset -c 0 sh -c 'while :; do :; done' & busy=$!; pids+=($busy)
    for conns in $CONNS_LIST; do compare 64KiB 65536 "$conns" "$small_url"; done
    kill "$busy"
fi
echo "RSS idle: $((idle_rss / 1024)) MiB"
[ "${BIG:-1}" = 1 ] || exit 0

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
