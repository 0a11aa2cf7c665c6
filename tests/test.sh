#!/usr/bin/env bash
# The whole test suite, as CI runs it: ensures the Garage binary (the S3 engine the S3 tests
# start on loopback, see .ci/garage.sh), runs every test with blobs on local disk, then runs
# the store-facing modules a second time with blobs in S3 (MXMEDIA_TEST_BACKEND=s3).
set -euo pipefail
cd "$(dirname "$0")/.."
MXMEDIA_TEST_GARAGE="${MXMEDIA_TEST_GARAGE:-$(bash .ci/garage.sh)}"
export MXMEDIA_TEST_GARAGE
cargo test --workspace --locked "$@"
echo "== the store-facing integration tests again, with blobs in S3 (Garage)"
MXMEDIA_TEST_BACKEND=s3 cargo test --locked --test it "$@" -- \
    download:: upload:: thumbnail:: remote:: remote_stream:: async_upload:: head::
