#!/usr/bin/env bash
# Remote media figures: time to first byte and total time for a 10 MiB remote file (cold, i.e.
# fetched over federation, then cached), and mxmedia's peak RSS growth while 50 clients fetch
# one uncached 50 MiB remote file at once (one upstream request, streamed to disk). Then the
# same 50 MiB from an origin throttled to RATE MiB/s (default 20): TTFB and total for the first
# client and for a waiter joining halfway (both against the origin's own TTFB), and RSS growth
# with 50 waiters following that one fetch (target: under 64 MiB).
# The origin is a small HTTPS server in Python (throwaway CA from openssl) that answers the
# federation download endpoint with a multipart/mixed body streamed from a file (ids starting
# with "slow" paced at RATE); it does not check signatures.
# Needs: python3, openssl, curl, a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/mxmedia}"
[ -x "$BIN" ] || cargo build --release --bin mxmedia
CLIENTS="${CLIENTS:-50}"
RATE="${RATE:-20}"
ORIGIN_PORT="${ORIGIN_PORT:-18449}"
MX_PORT="${MX_PORT:-18090}"

. bench/common.sh

origin_cert

mkdir -p "$work/media"
head -c $((10 << 20)) /dev/urandom > "$work/media/ten"
head -c $((50 << 20)) /dev/urandom > "$work/media/fifty"
for id in slow-first slow-many; do cp "$work/media/fifty" "$work/media/$id"; done

cat > "$work/origin.py" <<'PY'
import http.server, os, ssl, sys, threading, time
port, root, cert, key, log = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
rate = float(sys.argv[6]) * (1 << 20)
B = "0123456789abcdef0123456789abcdef"
lock = threading.Lock()
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        prefix = "/_matrix/federation/v1/media/download/"
        path = os.path.join(root, self.path[len(prefix):].split("?")[0])
        if not self.path.startswith(prefix) or not os.path.isfile(path):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        with lock, open(log, "a") as f: f.write(self.path + "\n")
        head = (f"\r\n--{B}\r\nContent-Type: application/json\r\n\r\n{{}}\r\n--{B}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{B}--\r\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/mixed; boundary={B}")
        self.send_header("Content-Length", str(len(head) + os.path.getsize(path) + len(tail)))
        self.end_headers()
        self.wfile.write(head)
        slow, start, sent = os.path.basename(path).startswith("slow"), time.monotonic(), 0
        with open(path, "rb") as f:
            while chunk := f.read(64 * 1024 if slow else 256 * 1024):
                self.wfile.write(chunk)
                sent += len(chunk)
                if slow and (ahead := sent / rate - (time.monotonic() - start)) > 0:
                    time.sleep(ahead)
        self.wfile.write(tail)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
PY
python3 "$work/origin.py" "$ORIGIN_PORT" "$work/media" "$work/origin.pem" "$work/origin.key" \
    "$work/origin.log" "$RATE" & pids+=($!)
touch "$work/origin.log"

MXMEDIA_DATA_DIR="$work/data" MXMEDIA_LISTEN="127.0.0.1:$MX_PORT" MXMEDIA_SERVER_NAME=bench.local \
MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:bench.local"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 \
MXMEDIA_FEDERATION__IP_RANGE_DENYLIST='[]' MXMEDIA_FEDERATION__CA_FILE="$work/ca.pem" \
MXMEDIA_LOG="${MXMEDIA_LOG:-warn}" "$BIN" > "$work/mxmedia.log" 2>&1 & mx=$!; pids+=($mx)
wait_healthy http://127.0.0.1:$MX_PORT
for _ in $(seq 100); do curl -sk "https://127.0.0.1:$ORIGIN_PORT/" -o /dev/null && break; sleep 0.1; done

auth=(-H "Authorization: Bearer benchtoken")
url() { echo "http://127.0.0.1:$MX_PORT/_matrix/client/v1/media/download/127.0.0.1:$ORIGIN_PORT/$1"; }
timing() { curl -sf "${auth[@]}" -o "${2:-$work/out}" -w '%{time_starttransfer} %{time_total}' "$(url "$1")"; }
ms() { awk '{printf "TTFB %6.1f ms, total %6.1f ms", $1 * 1000, $2 * 1000}'; }

echo "10 MiB remote file over loopback HTTPS:"
echo "  cold (fetched over federation): $(timing ten | ms)"
cmp "$work/out" "$work/media/ten"
for i in 1 2 3; do echo "  cached, run $i:                  $(timing ten | ms)"; done
echo "  upstream requests: $(grep -c '/ten' "$work/origin.log")"

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
peak_file="$work/peak"; echo 0 > "$peak_file"
sample() { local peak=0; while kill -0 "$mx" 2>/dev/null && [ ! -e "$work/stop" ]; do
    r=$(rss_kib "$mx"); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$peak_file"; sleep 0.02; done; }
before=$(rss_kib "$mx")
sample & sampler=$!
start=$(date +%s.%N)
clients=()
for i in $(seq "$CLIENTS"); do
    curl -sf "${auth[@]}" -o "$work/fifty.$i" "$(url fifty)" & clients+=($!)
done
wait "${clients[@]}" || true
end=$(date +%s.%N)
touch "$work/stop"; wait "$sampler" 2>/dev/null || true
ok=0
for i in $(seq "$CLIENTS"); do cmp -s "$work/fifty.$i" "$work/media/fifty" && ok=$((ok + 1)); done
peak=$(cat "$peak_file")
echo "$CLIENTS concurrent cold downloads of a 50 MiB remote file:"
echo "  complete and identical: $ok/$CLIENTS, upstream requests: $(grep -c '/fifty' "$work/origin.log"), wall $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}') s"
echo "  RSS before $((before / 1024)) MiB, peak $((peak / 1024)) MiB, growth $(((peak - before) / 1024)) MiB"

echo "50 MiB remote file from an origin throttled to $RATE MiB/s:"
origin=$(curl -sk -o /dev/null -w '%{time_starttransfer}' \
    "https://127.0.0.1:$ORIGIN_PORT/_matrix/federation/v1/media/download/ten" | awk '{printf "%.1f", $1 * 1000}')
echo "  the origin's own TTFB: $origin ms"
half=$(awk -v r="$RATE" 'BEGIN {print 25 / r}')
timing slow-first "$work/first.out" > "$work/first.t" & first=$!
sleep "$half"
echo "  waiter joining after ${half} s: $(timing slow-first | ms)"
cmp "$work/out" "$work/media/fifty"
wait "$first"
cmp "$work/first.out" "$work/media/fifty"
echo "  first client:                $(ms < "$work/first.t")"
echo "  upstream requests: $(grep -c '/slow-first' "$work/origin.log")"

rm -f "$work/stop"; echo 0 > "$peak_file"
before=$(rss_kib "$mx")
sample & sampler=$!
clients=()
for i in $(seq "$CLIENTS"); do
    curl -sf "${auth[@]}" -o "$work/many.$i" "$(url slow-many)" & clients+=($!)
    sleep 0.02
done
wait "${clients[@]}" || true
touch "$work/stop"; wait "$sampler" 2>/dev/null || true
ok=0
for i in $(seq "$CLIENTS"); do cmp -s "$work/many.$i" "$work/media/fifty" && ok=$((ok + 1)); done
peak=$(cat "$peak_file")
echo "$CLIENTS waiters following one throttled fetch of the 50 MiB file:"
echo "  complete and identical: $ok/$CLIENTS, upstream requests: $(grep -c '/slow-many' "$work/origin.log")"
echo "  RSS before $((before / 1024)) MiB, peak $((peak / 1024)) MiB, growth $(((peak - before) / 1024)) MiB (target < 64)"
