#!/usr/bin/env bash
# Normal thumbnails while the thumbnailer is under attack, and mxmedia's peak RSS meanwhile.
# The attack: 20 clients at once, in a loop, each uploading a fresh hostile file (unique
# trailing bytes, so neither stored thumbnails nor the failure memory help) and asking for its
# thumbnail. Hostile files: progressive JPEGs of 2048x2048 with 5 000 two-byte scans, YCbCr
# (libjpeg-turbo refuses its scan count, the fallback decoder would not) and CMYK (straight to
# the fallback). Meanwhile, one cold 320x240 thumbnail of the 640x480 test photo at a time is
# timed.
# ATTACKERS, SAMPLES and BIN can be set; needs python3 and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
ATTACKERS="${ATTACKERS:-20}"
SAMPLES="${SAMPLES:-30}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/mxmedia}"
[ -x "$BIN" ] || cargo build --release --bin mxmedia

. bench/common.sh

python3 - "$work" <<'PY'
import struct, sys
work = sys.argv[1]

def seg(marker, data):
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(data) + 2) + data

def scan_bomb(size, components, ac_scans):
    out = b"\xff\xd8"
    if components == 4:
        out += seg(0xEE, b"Adobe\x00\x64\x00\x00\x00\x00\x00")
    out += seg(0xDB, b"\x00" + b"\x01" * 64)
    sof = b"\x08" + struct.pack(">HHB", size, size, components)
    sof += b"".join(bytes([c + 1, 0x11, 0]) for c in range(components))
    out += seg(0xC2, sof)
    for cls, sym in ((0x00, 0x00), (0x10, 0xE0)):
        out += seg(0xC4, bytes([cls, 1]) + b"\x00" * 15 + bytes([sym]))
    blocks = (size // 8) ** 2
    sos = bytes([components]) + b"".join(bytes([c + 1, 0]) for c in range(components)) + b"\x00\x00\x00"
    out += seg(0xDA, sos) + b"\x00" * ((blocks * components + 7) // 8)
    for i in range(ac_scans):
        out += seg(0xDA, bytes([1, i % components + 1, 0, 1, 63, 0]))
        out += b"\x00" * ((blocks // 16384 * 15 + 7) // 8)
    return out + b"\xff\xd9"

open(f"{work}/ycbcr.jpg", "wb").write(scan_bomb(2048, 3, 5000))
open(f"{work}/cmyk.jpg", "wb").write(scan_bomb(2048, 4, 5000))
PY
cp tests/fixtures/photo_640x480.jpg "$work/photo.jpg"

MXMEDIA_DATA_DIR="$work/data" MXMEDIA_LISTEN=127.0.0.1:18087 MXMEDIA_THUMBNAILS__WORKERS=2 \
MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:localhost"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 MXMEDIA_LOG=warn \
    "$BIN" > "$work/mxmedia.log" 2>&1 & mx=$!; pids+=($mx)
base=http://127.0.0.1:18087
wait_healthy "$base"
auth=(-H "Authorization: Bearer benchtoken")

upload() { # file -> media id of a copy with 16 unique trailing bytes
    local copy="$work/up.$BASHPID"
    { cat "$1"; head -c 16 /dev/urandom; } > "$copy"
    curl -sf "${auth[@]}" -H "Content-Type: image/jpeg" --data-binary @"$copy" "$base/_matrix/media/v3/upload" \
        | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/'
}

attacker() { # file; loops until killed, counting answers by status in $work/status.*
    while true; do
        id=$(upload "$1")
        curl -s "${auth[@]}" -o /dev/null -w '%{http_code}\n' --max-time 120 \
            "$base/_matrix/client/v1/media/thumbnail/localhost/$id?width=96&height=96&method=crop" >> "$work/status.$BASHPID"
    done
}

for i in $(seq "$ATTACKERS"); do
    if (( i % 2 )); then attacker "$work/ycbcr.jpg" & else attacker "$work/cmyk.jpg" & fi
    pids+=($!)
done
sleep 2
times=()
for _ in $(seq "$SAMPLES"); do
    id=$(upload "$work/photo.jpg")
    times+=("$(curl -sf "${auth[@]}" -o /dev/null -w '%{time_total}' \
        "$base/_matrix/client/v1/media/thumbnail/localhost/$id?width=320&height=240&method=scale" \
        | awk '{print $1 * 1000}')")
done
for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; done
echo "cold 640x480 -> 320x240 thumbnail under attack by $ATTACKERS clients, $SAMPLES samples:" \
     "median $(printf '%s\n' "${times[@]}" | median %.1f) ms, max $(printf '%s\n' "${times[@]}" | sort -n | tail -1) ms"
echo "hostile answers by status: $(cat "$work"/status.* 2>/dev/null | sort | uniq -c | awk '{printf "%s x%s  ", $2, $1}')"
echo "mxmedia peak RSS (VmHWM, 2 thumbnail workers): $(awk '/VmHWM/ {printf "%d MiB", $2/1024}' /proc/$mx/status)"
