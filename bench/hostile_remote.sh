#!/usr/bin/env bash
# mxmedia's peak RSS while hostile origins answer remote media fetches: CLIENTS (10) concurrent
# cold downloads of distinct remote files whose origin answers `multipart/mixed` with a
# PREAMBLE_MIB (100) MiB preamble and never a delimiter (MODE=headers: a first part whose header
# block is that long instead). A multipart reader that buffers until it finds the delimiter holds
# all of it per fetch; a bounded one fails each fetch with 502 after a few KiB.
# The origin is a small HTTPS server in Python (throwaway CA from openssl); it does not check
# signatures. Compare two builds with BIN=path/to/mxmedia.
# Needs: python3, openssl, curl, a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/mxmedia}"
[ -x "$BIN" ] || cargo build --release --bin mxmedia
CLIENTS="${CLIENTS:-10}"
PREAMBLE_MIB="${PREAMBLE_MIB:-100}"
MODE="${MODE:-preamble}"
ORIGIN_PORT="${ORIGIN_PORT:-18450}"
MX_PORT="${MX_PORT:-18091}"

. bench/common.sh

origin_cert

cat > "$work/origin.py" <<'PY'
import http.server, ssl, sys
port, cert, key, mib, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
B = "0123456789abcdef0123456789abcdef"
chunk = (b"p" if mode == "preamble" else b"h") * (256 * 1024)
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        if not self.path.startswith("/_matrix/federation/v1/media/download/"):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        head = b"" if mode == "preamble" else f"--{B}\r\nX-Padding: ".encode()
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/mixed; boundary={B}")
        self.send_header("Content-Length", str(len(head) + mib * 4 * len(chunk)))
        self.end_headers()
        try:
            self.wfile.write(head)
            for _ in range(mib * 4):
                self.wfile.write(chunk)
        except OSError:
            pass
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(cert, key)
srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
PY
python3 "$work/origin.py" "$ORIGIN_PORT" "$work/origin.pem" "$work/origin.key" "$PREAMBLE_MIB" \
    "$MODE" & pids+=($!)

MXMEDIA_DATA_DIR="$work/data" MXMEDIA_LISTEN="127.0.0.1:$MX_PORT" MXMEDIA_SERVER_NAME=bench.local \
MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:bench.local"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 \
MXMEDIA_FEDERATION__IP_RANGE_DENYLIST='[]' MXMEDIA_FEDERATION__CA_FILE="$work/ca.pem" \
MXMEDIA_MEDIA__MAX_REMOTE_SIZE="${MAX_REMOTE_SIZE:-209715200}" \
MXMEDIA_LOG="${MXMEDIA_LOG:-warn}" "$BIN" > "$work/mxmedia.log" 2>&1 & mx=$!; pids+=($mx)
wait_healthy http://127.0.0.1:$MX_PORT
for _ in $(seq 100); do curl -sk "https://127.0.0.1:$ORIGIN_PORT/" -o /dev/null && break; sleep 0.1; done

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
peak_file="$work/peak"; echo 0 > "$peak_file"
sample() { local peak=0; while kill -0 "$mx" 2>/dev/null && [ ! -e "$work/stop" ]; do
    r=$(rss_kib "$mx"); [ "${r:-0}" -gt "$peak" ] && peak=$r && echo "$peak" > "$peak_file"; sleep 0.02; done; }
before=$(rss_kib "$mx")
sample & sampler=$!
start=$(date +%s.%N)
clients=()
for i in $(seq "$CLIENTS"); do
    curl -s -H "Authorization: Bearer benchtoken" -o "$work/answer.$i" -w '%{http_code}\n' \
        "http://127.0.0.1:$MX_PORT/_matrix/client/v1/media/download/127.0.0.1:$ORIGIN_PORT/hostile$i" \
        > "$work/status.$i" & clients+=($!)
done
wait "${clients[@]}" || true
end=$(date +%s.%N)
touch "$work/stop"; wait "$sampler" 2>/dev/null || true
peak=$(cat "$peak_file")
echo "$CLIENTS concurrent fetches, origin sends a $PREAMBLE_MIB MiB $MODE and no delimiter ($BIN):"
echo "  answers: $(cat "$work"/status.* | sort | uniq -c | awk '{printf "%s x %s  ", $1, $2}')($(head -c 120 "$work/answer.1"))"
echo "  wall $(awk -v a="$start" -v b="$end" 'BEGIN {printf "%.2f", b - a}') s"
echo "  RSS before $((before / 1024)) MiB, peak $((peak / 1024)) MiB, growth $(((peak - before) / 1024)) MiB"
