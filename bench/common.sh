# Sourced by the bench scripts (from the repository root): a work directory and background
# processes that go away on exit, waiting for mxmedia to answer, wrk pinned to core 1, medians.

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

wait_healthy() { # base URL; gives up quietly after 10 s, as the first request then fails loudly
    for _ in $(seq 100); do curl -sf "$1/_mxmedia/health" >/dev/null && return; sleep 0.1; done
}

run_wrk() { taskset -c 1 wrk -t1 -c"$CONNS" -d"$DURATION" "$@" | awk '/Requests\/sec/ {print $2}'; }

median() { # [printf format] < numbers, one per line
    sort -n | awk -v fmt="${1:-%s}" '{a[NR]=$1} END {printf fmt "\n", a[int((NR+1)/2)]}'
}

origin_cert() { # a throwaway CA and a certificate for 127.0.0.1 signed by it, in $work
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=bench-ca \
        -keyout "$work/ca.key" -out "$work/ca.pem" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
        -keyout "$work/origin.key" -out "$work/origin.csr" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' > "$work/san.ext"
    openssl x509 -req -in "$work/origin.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
        -days 1 -extfile "$work/san.ext" -out "$work/origin.pem" 2>/dev/null
}
