#!/usr/bin/env bash
# mxmedia on S3 (a real single-node Garage on loopback) against references in the same run:
# - downloads of 64 KiB and 10 MiB media through mxmedia backed by Garage vs a plain GET of the
#   same object straight from Garage (a presigned URL, so no proxy or client library is in the
#   way): req/s, MiB/s, and the ratio mxmedia/Garage; and through mxmedia on S3 with its local
#   disk cache on (MXMEDIA_STORE__S3__CACHE_MAX_SIZE: the blob read from the cache file);
# - the upload of a 1 GiB file to mxmedia on S3 vs mxmedia on local disk: MiB/s and the ratio;
# - mxmedia's peak RSS (VmHWM) during the downloads and during the upload, on each backend.
# mxmedia (one worker) and Garage share core 0; wrk and curl run on core 1.
# Needs: wrk, curl, the aws CLI (for the presigned URL), Garage 2.5.0 (.ci/garage.sh builds it
# once into a cache outside the clone), a release build of mxmedia. Run under nice -n 10.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-3}"
CONNS="${CONNS:-8}"
BIG_MIB="${BIG_MIB:-1024}"
BIN="${BIN:-${CARGO_TARGET_DIR:-target}/release/mxmedia}"
[ -x "$BIN" ] || cargo build --release --bin mxmedia
GARAGE="${GARAGE:-$(bash .ci/garage.sh)}"

. bench/common.sh

hwm_kib() { awk '/VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

access_key=GK0123456789abcdef01234567
secret_key=5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2
bucket=mxmedia-bench
s3_port=18093
mkdir -p "$work/garage"
cat > "$work/garage/garage.toml" <<TOML
metadata_dir = "$work/garage/meta"
data_dir = "$work/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:18094"
rpc_public_addr = "127.0.0.1:18094"
rpc_secret = "$(printf '0%.0s' $(seq 63))1"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3_port"
TOML
GARAGE_DEFAULT_ACCESS_KEY=$access_key GARAGE_DEFAULT_SECRET_KEY=$secret_key \
GARAGE_DEFAULT_BUCKET=$bucket RUST_LOG=warn \
    taskset -c 0 "$GARAGE" -c "$work/garage/garage.toml" server --single-node --default-bucket \
    > "$work/garage.log" 2>&1 & pids+=($!)

s3_env=(MXMEDIA_STORE__S3__BUCKET=$bucket MXMEDIA_STORE__S3__ENDPOINT=http://127.0.0.1:$s3_port
        MXMEDIA_STORE__S3__REGION=garage MXMEDIA_STORE__S3__ACCESS_KEY_ID=$access_key
        MXMEDIA_STORE__S3__SECRET_ACCESS_KEY=$secret_key MXMEDIA_STORE__S3__PREFIX=bench/
        MXMEDIA_STORE__S3__PATH_STYLE=true)
start_mxmedia() { # port data_dir [env...]; prints the pid
    local port=$1 dir=$2; shift 2
    env MXMEDIA_DATA_DIR="$dir" MXMEDIA_LISTEN=127.0.0.1:$port MXMEDIA_WORKERS=1 \
        MXMEDIA_AUTH__STATIC_TOKENS='{benchtoken="@bench:localhost"}' MXMEDIA_STORE__MIN_FREE_SPACE=0 \
        MXMEDIA_MEDIA__MAX_UPLOAD_SIZE=2GiB MXMEDIA_LOG="${MXMEDIA_LOG:-warn}" "$@" \
        taskset -c 0 "$BIN" > "$dir.log" 2>&1 &
    echo $!
}
# Garage takes a few seconds to lay out its single node; mxmedia checks the bucket at start.
for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$s3_port/" && break; sleep 0.2
done
s3_mx=""
for _ in $(seq 20); do
    s3_mx=$(start_mxmedia 18090 "$work/data-s3" "${s3_env[@]}")
    wait_healthy http://127.0.0.1:18090
    curl -sf http://127.0.0.1:18090/_mxmedia/health >/dev/null && break
    kill "$s3_mx" 2>/dev/null || true; wait "$s3_mx" 2>/dev/null || true; sleep 0.5
done
pids+=("$s3_mx")
fs_mx=$(start_mxmedia 18091 "$work/data-fs"); pids+=("$fs_mx")
wait_healthy http://127.0.0.1:18091
# The same bucket under a prefix of its own, with the local disk cache on.
cache_mx=$(start_mxmedia 18092 "$work/data-cache" "${s3_env[@]}" MXMEDIA_STORE__S3__PREFIX=bench-cache/ \
    MXMEDIA_STORE__S3__CACHE_MAX_SIZE=1GiB); pids+=("$cache_mx")
wait_healthy http://127.0.0.1:18092
auth=(-H "Authorization: Bearer benchtoken")

# The aws CLI signs S3 URLs with SigV4 (all Garage accepts) and path-style only when told.
printf '[default]\ns3 =\n    signature_version = s3v4\n    addressing_style = path\n' > "$work/aws.config"
presign() { # object key -> a presigned GET URL valid for an hour
    AWS_CONFIG_FILE="$work/aws.config" AWS_ACCESS_KEY_ID=$access_key AWS_SECRET_ACCESS_KEY=$secret_key AWS_DEFAULT_REGION=garage \
        aws s3 presign "s3://$bucket/$1" --endpoint-url "http://127.0.0.1:$s3_port" --expires-in 3600
}
upload() { # base file -> media id
    taskset -c 1 curl -sf "${auth[@]}" -H 'Content-Type: application/octet-stream' -X POST -T "$2" \
        "$1/_matrix/media/v3/upload" | sed 's/.*mxc:\/\/localhost\/\([A-Za-z0-9_-]*\).*/\1/'
}
wrk_rps() { taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }

echo "downloads: wrk -t1 -c$CONNS -d$DURATION, $ROUNDS alternating rounds (median); mxmedia (1 worker) and Garage on core 0, wrk on core 1"
printf '%-7s %-26s %10s %9s\n' size server req/s MiB/s
for size in 64KiB 10MiB; do
    bytes=$(numfmt --from=iec-i "${size%B}")
    head -c "$bytes" /dev/urandom > "$work/$size.bin"
    id=$(upload http://127.0.0.1:18090 "$work/$size.bin")
    mx_url="http://127.0.0.1:18090/_matrix/client/v1/media/download/localhost/$id"
    curl -sf "${auth[@]}" "$mx_url" | cmp - "$work/$size.bin"
    sha=$(sha256sum "$work/$size.bin" | cut -d' ' -f1)
    direct_url=$(presign "bench/${sha:0:2}/$sha")
    curl -sf "$direct_url" | cmp - "$work/$size.bin"
    cache_id=$(upload http://127.0.0.1:18092 "$work/$size.bin")
    cache_url="http://127.0.0.1:18092/_matrix/client/v1/media/download/localhost/$cache_id"
    curl -sf "${auth[@]}" "$cache_url" | cmp - "$work/$size.bin"
    wrk_rps "${auth[@]}" "$mx_url" >/dev/null   # warm-up
    wrk_rps "${auth[@]}" "$cache_url" >/dev/null
    : > "$work/mx.runs"; : > "$work/garage.runs"; : > "$work/cache.runs"
    for _ in $(seq "$ROUNDS"); do
        wrk_rps "${auth[@]}" "$mx_url" >> "$work/mx.runs"
        wrk_rps "$direct_url" >> "$work/garage.runs"
        wrk_rps "${auth[@]}" "$cache_url" >> "$work/cache.runs"
    done
    mx=$(median < "$work/mx.runs"); garage=$(median < "$work/garage.runs")
    cached=$(median < "$work/cache.runs")
    for row in "mxmedia (S3 backend) $mx" "Garage (presigned GET) $garage" "mxmedia (S3 + disk cache) $cached"; do
        rps=${row##* }; name=${row% *}
        printf '%-7s %-26s %10s %9.1f\n' "$size" "$name" "$rps" \
            "$(awk -v r="$rps" -v b="$bytes" 'BEGIN {print r * b / 1048576}')"
    done
    awk -v a="$mx" -v b="$garage" -v s="$size" 'BEGIN {printf "%-7s mxmedia/Garage: %.2fx\n", s, a / b}'
    awk -v a="$cached" -v b="$garage" -v s="$size" \
        'BEGIN {printf "%-7s mxmedia with disk cache/Garage: %.2fx\n", s, a / b}'
done
echo "peak RSS (VmHWM) of mxmedia on S3 after the downloads: $(( $(hwm_kib "$s3_mx") / 1024 )) MiB"

head -c $((BIG_MIB * 1048576)) /dev/urandom > "$work/big.bin"
echo "upload of ${BIG_MIB} MiB (curl -T, one request), same file to each"
for which in s3 fs; do
    if [ $which = s3 ]; then base=http://127.0.0.1:18090 pid=$s3_mx; else base=http://127.0.0.1:18091 pid=$fs_mx; fi
    before=$(rss_kib "$pid")
    secs=$(taskset -c 1 curl -sf -o "$work/upload-$which.json" -w '%{time_total}' "${auth[@]}" \
        -H 'Content-Type: application/octet-stream' -X POST -T "$work/big.bin" "$base/_matrix/media/v3/upload")
    grep -q content_uri "$work/upload-$which.json"
    mibs=$(awk -v s="$secs" -v m="$BIG_MIB" 'BEGIN {printf "%.1f", m / s}')
    echo "$mibs" > "$work/upload-$which.mibs"
    printf '  %-3s %6.1f s  %7s MiB/s  RSS before %4d MiB, peak (VmHWM) %4d MiB\n' "$which" "$secs" "$mibs" \
        $((before / 1024)) $(( $(hwm_kib "$pid") / 1024 ))
    rm -rf "$work/data-$which/tmp"/* 2>/dev/null || true
done
awk -v a="$(cat "$work/upload-s3.mibs")" -v b="$(cat "$work/upload-fs.mibs")" \
    'BEGIN {printf "  upload S3/local disk: %.2fx\n", a / b}'
