#!/usr/bin/env bash
# The whole test suite, as CI runs it: ensures the Garage binary (the S3 engine the S3 tests
# start on loopback, see .ci/garage.sh), runs every test with blobs on local disk, then runs
# the store-facing modules a second time with blobs in S3 (MXMEDIA_TEST_BACKEND=s3).
# Then the same S3 pass, plus the modules that talk to the engine itself (s3::, s3_cache::, redirect::,
# migrate::, which the first run ran on Garage), on SeaweedFS (.ci/seaweed.sh), a second real
# engine that, unlike Garage, honours conditional writes and accepts any region. It is the
# same test binary, so it costs no build: about 70 s here on 2 cores, all of those modules.
set -euo pipefail
cd "$(dirname "$0")/.."
MXMEDIA_TEST_GARAGE="${MXMEDIA_TEST_GARAGE:-$(bash .ci/garage.sh)}"
MXMEDIA_TEST_SEAWEEDFS="${MXMEDIA_TEST_SEAWEEDFS:-$(bash .ci/seaweed.sh)}"
export MXMEDIA_TEST_GARAGE MXMEDIA_TEST_SEAWEEDFS
store_facing=(download:: upload:: thumbnail:: remote:: remote_stream:: async_upload:: head:: refused_body::)
engine_facing=(s3:: s3_cache:: redirect:: migrate::)
cargo test --workspace --locked "$@"
echo "== the store-facing integration tests again, with blobs in S3 (Garage)"
MXMEDIA_TEST_BACKEND=s3 cargo test --locked --test it "$@" -- "${store_facing[@]}"
echo "== the store-facing integration tests with blobs in S3 on SeaweedFS"
MXMEDIA_TEST_S3_ENGINE=seaweedfs MXMEDIA_TEST_BACKEND=s3 \
    cargo test --locked --test it "$@" -- "${store_facing[@]}"
echo "== the S3 engine's own tests on SeaweedFS"
MXMEDIA_TEST_S3_ENGINE=seaweedfs cargo test --locked --test it "$@" -- "${engine_facing[@]}"
