#!/usr/bin/env bash
# mxmedia's memory under a stream of small uploads: SECS seconds of SIZE-byte media (every one
# distinct, so nothing is deduplicated; at most TOTAL bytes), CLIENTS at once, with the default
# store config. Prints RSS at start, its peak during the uploads (sampled every
# 50 ms), and RSS after IDLE seconds of rest; then the database size and what the idle RSS is
# made of (/proc/PID/smaps_rollup).
# Target on the 1 GB VPS mxmedia is built for: peak under 200 MiB, idle back near the start.
# EXTRA_ENV="MXMEDIA_STORE__CACHE_CAPACITY=64MiB ..." tries other settings.
# Needs: wrk, a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL="${TOTAL:-8GiB}"
SECS="${SECS:-30}"
SIZE="${SIZE:-65536}"
CLIENTS="${CLIENTS:-8}"
IDLE="${IDLE:-10}"
PORT="${PORT:-18086}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/mxmedia}"
[ -x "$BIN" ] || cargo build --release --bin mxmedia

. bench/common.sh

total_bytes=$(numfmt --from=iec-i "${TOTAL%B}")
uploads=$((total_bytes / SIZE))
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# shellcheck disable=SC2086
env MXMEDIA_DATA_DIR="$work/data" MXMEDIA_LISTEN="127.0.0.1:$PORT" \
    MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:localhost"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 \
    MXMEDIA_LOG="${MXMEDIA_LOG:-warn}" ${EXTRA_ENV:-} \
    "$BIN" > "$work/mxmedia.log" 2>&1 & mx=$!; pids+=($mx)
wait_healthy "http://127.0.0.1:$PORT"
sleep 1
start_rss=$(rss_kib "$mx")

# Each request's body is SIZE bytes: a per-thread random base with the request's number in front,
# so every upload has its own sha256.
cat > "$work/upload.lua" <<LUA
local threads = {}
local per_thread = math.ceil($uploads / $CLIENTS)
function setup(thread)
    thread:set("id", #threads + 1)
    table.insert(threads, thread)
end
function init(args)
    math.randomseed(id * 7919)
    local parts = {}
    for i = 1, $SIZE / 16 do
        parts[i] = string.format("%08x%08x", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
    end
    base = table.concat(parts)
    n = 0
    done = 0
    wrk.headers["Authorization"] = "Bearer benchtoken"
    wrk.headers["Content-Type"] = "application/octet-stream"
end
function request()
    n = n + 1
    local tag = string.format("%04d%012d", id, n)
    return wrk.format("POST", "/_matrix/media/v3/upload", nil, tag .. base:sub(#tag + 1))
end
function response(status, headers, body)
    if status ~= 200 then io.stderr:write("upload failed: " .. status .. " " .. body .. "\n") end
    done = done + 1
    if done >= per_thread then wrk.thread:stop() end
end
LUA

peak_file="$work/peak"; echo "$start_rss" > "$peak_file"
sample() { local peak=0 r; while kill -0 "$mx" 2>/dev/null && [ ! -e "$work/stop" ]; do
    r=$(rss_kib "$mx"); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$peak_file"; sleep 0.05; done; }
sample & sampler=$!
began=$(date +%s.%N)
# One connection per wrk thread, so each thread's request count is its client's. wrk runs for
# SECS even when the threads stopped early at TOTAL.
wrk -t"$CLIENTS" -c"$CLIENTS" -d"${SECS}s" -s "$work/upload.lua" "http://127.0.0.1:$PORT" > "$work/wrk.out"
ended=$(date +%s.%N)
touch "$work/stop"; wait "$sampler" || true
peak=$(cat "$peak_file")
sleep "$IDLE"
idle_rss=$(rss_kib "$mx")
requests=$(awk '/requests in/ {print $1}' "$work/wrk.out")

echo "$requests uploads of $SIZE bytes ($(numfmt --to=iec-i --suffix=B $((requests * SIZE)))), $CLIENTS clients, $(awk -v a="$began" -v b="$ended" 'BEGIN {printf "%.1f", b-a}') s${EXTRA_ENV:+, $EXTRA_ENV}"
echo "  RSS start $((start_rss / 1024)) MiB, peak $((peak / 1024)) MiB, idle after ${IDLE} s $((idle_rss / 1024)) MiB"
echo "  database on disk: $(du -sh "$work/data/db" | cut -f1); blob files: $(find "$work/data/blobs" -type f | wc -l)"
awk '/^(Rss|Anonymous|Private_Dirty|Shared_Clean|Private_Clean):/ {printf "  idle %s %d MiB\n", $1, $2/1024}' "/proc/$mx/smaps_rollup"
grep -E "WARN|ERROR" "$work/mxmedia.log" | head -5 || true
