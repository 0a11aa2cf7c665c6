#!/usr/bin/env bash
# Cold thumbnail latency through mxmedia's HTTP endpoint, beside vipsthumbnail and Pillow's
# Image.thumbnail (draft mode) on the same files in the same run, and mxmedia's peak RSS.
# Sources: a 4000x3000 photo-like JPEG (q90) and a 1920x1080 RGBA PNG, made with Pillow.
# The three tools take turns, one run each, so a load change on the machine hits all of them.
# Every HTTP request is cold: each uses a copy of the source with unique trailing bytes, so its
# content hash (and thus any stored thumbnail) is new.
# RAW=1 also prints every sample. Needs: python3 with Pillow, vipsthumbnail (Debian:
# libvips-tools), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-7}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/mxmedia}"
[ -x "$BIN" ] || cargo build --release --bin mxmedia

. bench/common.sh

python3 - "$work" <<'PY'
import sys, random
from PIL import Image, ImageFilter
work = sys.argv[1]
random.seed(7)
w, h = 4000, 3000
img = Image.radial_gradient("L").resize((w, h)).convert("RGB")
noise = Image.effect_noise((w, h), 24).convert("RGB")
img = Image.blend(img, noise, 0.25).filter(ImageFilter.GaussianBlur(1))
r, g, b = img.split()
img = Image.merge("RGB", (r, g.point(lambda v: 255 - v), b.point(lambda v: (v * 3) % 256)))
img.save(f"{work}/photo.jpg", quality=90)
png = Image.new("RGBA", (1920, 1080))
png.paste(img.resize((1920, 1080)).convert("RGBA"))
alpha = Image.linear_gradient("L").resize((1920, 1080))
png.putalpha(alpha)
png.save(f"{work}/image.png")
PY

MXMEDIA_DATA_DIR="$work/data" MXMEDIA_LISTEN=127.0.0.1:18085 MXMEDIA_THUMBNAILS__WORKERS=2 \
MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:localhost"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 MXMEDIA_LOG=warn \
    "$BIN" > "$work/mxmedia.log" 2>&1 & mx=$!; pids+=($mx)
wait_healthy http://127.0.0.1:18085
auth=(-H "Authorization: Bearer benchtoken")

# Pillow runs in one long-lived process that times each thumbnail in-process on request, so the
# three tools can take turns run by run: on a shared machine, load then hits all of them alike.
cat > "$work/pillow.py" <<'PY'
import io, sys, time
from PIL import Image, ImageOps
cache = {}
for line in sys.stdin:
    path, w, h, crop = line.split()
    w, h, crop = int(w), int(h), crop == "1"
    data = cache.setdefault(path, open(path, "rb").read())
    t = time.perf_counter()
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (w, h))
    if crop:
        im = ImageOps.fit(im, (w, h))
    else:
        im.thumbnail((w, h))
    out = io.BytesIO()
    im.convert("RGB").save(out, "JPEG", quality=85) if im.mode != "RGBA" else im.save(out, "PNG")
    print(f"{(time.perf_counter() - t) * 1000:.2f}", flush=True)
PY
coproc PILLOW { python3 "$work/pillow.py"; }
pids+=("$PILLOW_PID")

http_once() { # file content-type query -> ms of one cold request
    { cat "$1"; head -c 16 /dev/urandom; } > "$work/src"
    id=$(curl -sf "${auth[@]}" -H "Content-Type: $2" --data-binary @"$work/src" \
         http://127.0.0.1:18085/_matrix/media/v3/upload | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/')
    t=$(curl -sf "${auth[@]}" -o /dev/null -w '%{time_total}' \
        "http://127.0.0.1:18085/_matrix/client/v1/media/thumbnail/localhost/$id?$3")
    awk -v t="$t" 'BEGIN {print t * 1000}'
}

vips_once() { # file size extra-args -> ms, process start included
    local s e
    s=$(date +%s%N); vipsthumbnail "$1" -s "$2" $3 -o "$work/vips_out.jpg" >/dev/null 2>&1; e=$(date +%s%N)
    awk -v d="$(( (e - s) / 1000 ))" 'BEGIN {print d / 1000}'
}

pillow_once() { # file w h crop(0/1) -> ms, timed in-process
    local ms
    echo "$1 $2 $3 $4" >&"${PILLOW[1]}"
    read -r ms <&"${PILLOW[0]}"
    echo "$ms"
}

printf '%-34s %10s %10s %10s %8s\n' "cold thumbnail, median of $RUNS" "mxmedia" "vips" "Pillow" "mx/Pil"
row() {
    local label=$1 file=$2 type=$3 query=$4 vsize=$5 vextra=$6 w=$7 h=$8 crop=$9 mx=() vp=() pl=()
    for _ in $(seq "$RUNS"); do
        mx+=("$(http_once "$file" "$type" "$query")")
        vp+=("$(vips_once "$file" "$vsize" "$vextra")")
        pl+=("$(pillow_once "$file" "$w" "$h" "$crop")")
    done
    [ -n "${RAW:-}" ] && echo "mx: ${mx[*]}" && echo "pil: ${pl[*]}"
    mxt=$(printf '%s\n' "${mx[@]}" | median %.1f)
    vpt=$(printf '%s\n' "${vp[@]}" | median %.1f)
    plt=$(printf '%s\n' "${pl[@]}" | median %.1f)
    printf '%-34s %8s ms %8s ms %8s ms %8s\n' "$label" "$mxt" "$vpt" "$plt" "$(awk -v a="$mxt" -v b="$plt" 'BEGIN {printf "%.2f", a/b}')"
}
row "4000x3000 JPEG -> 320x240 scale" "$work/photo.jpg" image/jpeg "width=320&height=240&method=scale" 320x240 "" 320 240 0
row "4000x3000 JPEG -> 96x96 crop" "$work/photo.jpg" image/jpeg "width=96&height=96&method=crop" 96x96 "--smartcrop centre" 96 96 1
row "1920x1080 PNG -> 320x240 scale" "$work/image.png" image/png "width=320&height=240&method=scale" 320x240 "" 320 240 0
row "1920x1080 PNG -> 96x96 crop" "$work/image.png" image/png "width=96&height=96&method=crop" 96x96 "--smartcrop centre" 96 96 1
echo "mxmedia peak RSS (VmHWM, 2 thumbnail workers): $(awk '/VmHWM/ {printf "%d MiB", $2/1024}' /proc/$mx/status)"

# A flood: 30 clients at once asking for an 800x600 thumbnail of one cold 28 MB, 30 Mpx JPEG,
# on a fresh server, so its peak RSS is this scenario's alone.
python3 -c 'from PIL import Image; Image.effect_noise((6000, 5000), 60).convert("RGB").save("'"$work"'/big.jpg", quality=95)'
MXMEDIA_DATA_DIR="$work/data2" MXMEDIA_LISTEN=127.0.0.1:18086 MXMEDIA_THUMBNAILS__WORKERS=2 \
MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:localhost"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 MXMEDIA_LOG=warn \
    "$BIN" > "$work/mxmedia2.log" 2>&1 & mx2=$!; pids+=($mx2)
wait_healthy http://127.0.0.1:18086
id=$(curl -sf "${auth[@]}" -H "Content-Type: image/jpeg" --data-binary @"$work/big.jpg" \
     http://127.0.0.1:18086/_matrix/media/v3/upload | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/')
start=$(date +%s%N); flood=()
for _ in $(seq 30); do
    curl -sf "${auth[@]}" -o /dev/null "http://127.0.0.1:18086/_matrix/client/v1/media/thumbnail/localhost/$id?width=800&height=600&method=scale" & flood+=($!)
done
ok=0; for p in "${flood[@]}"; do wait "$p" && ok=$((ok + 1)); done
echo "30 concurrent cold 800x600 thumbnails of one 28 MB 30 Mpx JPEG: $ok/30 ok in $(( ($(date +%s%N) - start) / 1000000 )) ms, mxmedia peak RSS $(awk '/VmHWM/ {printf "%d MiB", $2/1024}' /proc/$mx2/status)"
echo "(mxmedia times are whole HTTP requests from curl on loopback; vips is the vipsthumbnail command, process start included; Pillow is in-process)"
