#!/usr/bin/env bash
# Cold thumbnail latency through mxmedia's HTTP endpoint, beside vipsthumbnail and Pillow's
# Image.thumbnail (draft mode) on the same files in the same run, and mxmedia's peak RSS.
# Sources: a 4000x3000 photo-like JPEG (q90) and a 1920x1080 RGBA PNG, made with Pillow.
# Every HTTP request is cold: each uses a copy of the source with unique trailing bytes, so its
# content hash (and thus any stored thumbnail) is new.
# Needs: python3 with Pillow, vipsthumbnail (Debian: libvips-tools), a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-7}"
BIN="${BIN:-target/release/mxmedia}"
[ -x "$BIN" ] || cargo build --release --bin mxmedia

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

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
for _ in $(seq 100); do curl -sf http://127.0.0.1:18085/_mxmedia/health >/dev/null && break; sleep 0.1; done
auth=(-H "Authorization: Bearer benchtoken")
median() { sort -n | awk '{a[NR]=$1} END {printf "%.1f", a[int((NR+1)/2)]}'; }

http_cold() { # file content-type query -> median ms over RUNS cold requests
    local file=$1 type=$2 query=$3 times=()
    for i in $(seq "$RUNS"); do
        { cat "$file"; head -c 16 /dev/urandom; } > "$work/src"
        id=$(curl -sf "${auth[@]}" -H "Content-Type: $type" --data-binary @"$work/src" \
             http://127.0.0.1:18085/_matrix/media/v3/upload | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/')
        t=$(curl -sf "${auth[@]}" -o /dev/null -w '%{time_total}' \
            "http://127.0.0.1:18085/_matrix/client/v1/media/thumbnail/localhost/$id?$query")
        times+=("$(awk -v t="$t" 'BEGIN {print t * 1000}')")
    done
    printf '%s\n' "${times[@]}" | median
}

vips_ms() { # file size crop? -> median ms
    local file=$1 size=$2 extra=$3 times=()
    for _ in $(seq "$RUNS"); do
        s=$(date +%s%N); vipsthumbnail "$file" -s "$size" $extra -o "$work/vips_out.jpg" >/dev/null 2>&1; e=$(date +%s%N)
        times+=("$(( (e - s) / 1000 ))")
    done
    printf '%s\n' "${times[@]}" | awk '{print $1/1000}' | median
}

pillow_ms() { # file w h crop(0/1) -> median ms, timed in-process
    python3 - "$1" "$2" "$3" "$4" "$RUNS" <<'PY'
import io, sys, time, statistics
from PIL import Image, ImageOps
path, w, h, crop, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", int(sys.argv[5])
data = open(path, "rb").read()
times = []
for _ in range(runs):
    t = time.perf_counter()
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (w, h))
    if crop:
        im = ImageOps.fit(im, (w, h))
    else:
        im.thumbnail((w, h))
    out = io.BytesIO()
    im.convert("RGB").save(out, "JPEG", quality=85) if im.mode != "RGBA" else im.save(out, "PNG")
    times.append((time.perf_counter() - t) * 1000)
print(f"{statistics.median(times):.1f}")
PY
}

printf '%-34s %10s %10s %10s %8s\n' "cold thumbnail, median of $RUNS" "mxmedia" "vips" "Pillow" "mx/Pil"
row() {
    local label=$1 file=$2 type=$3 query=$4 vsize=$5 vextra=$6 w=$7 h=$8 crop=$9
    mxt=$(http_cold "$file" "$type" "$query")
    vp=$(vips_ms "$file" "$vsize" "$vextra")
    pl=$(pillow_ms "$file" "$w" "$h" "$crop")
    printf '%-34s %8s ms %8s ms %8s ms %8s\n' "$label" "$mxt" "$vp" "$pl" "$(awk -v a="$mxt" -v b="$pl" 'BEGIN {printf "%.2f", a/b}')"
}
row "4000x3000 JPEG -> 320x240 scale" "$work/photo.jpg" image/jpeg "width=320&height=240&method=scale" 320x240 "" 320 240 0
row "4000x3000 JPEG -> 96x96 crop" "$work/photo.jpg" image/jpeg "width=96&height=96&method=crop" 96x96 "--smartcrop centre" 96 96 1
row "1920x1080 PNG -> 320x240 scale" "$work/image.png" image/png "width=320&height=240&method=scale" 320x240 "" 320 240 0
row "1920x1080 PNG -> 96x96 crop" "$work/image.png" image/png "width=96&height=96&method=crop" 96x96 "--smartcrop centre" 96 96 1
echo "mxmedia peak RSS (VmHWM, 2 thumbnail workers): $(awk '/VmHWM/ {printf "%d MiB", $2/1024}' /proc/$mx/status)"
echo "(mxmedia times are whole HTTP requests from curl on loopback; vips is the vipsthumbnail command, process start included; Pillow is in-process)"
