#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test (unit and vm-tests),
# then the same tests in an ASan+UBSan build and the stack/relay unit tests
# in a TSan build (issue 6.1). Run as root on Debian 12: vm-tests create
# their own network namespaces.
#
# Arguments go to ctest (e.g. -L vm, -R skeleton). OSH_SANITIZERS=0 skips the
# sanitizer builds; OSH_BUILD_DIR picks the main build directory.
set -euo pipefail
cd "$(dirname "$0")/.."
[[ $(id -u) == 0 ]] || { echo "scripts/test.sh: run as root (vm-tests need network namespaces and TUN)" >&2; exit 1; }
scripts/install-deps.sh
scripts/build.sh
BUILD_DIR="${OSH_BUILD_DIR:-build}"
status=0
echo "=== tests: main build ($BUILD_DIR)"
# --timeout: only for tests without a TIMEOUT property (the vm-tests set their
# own, vm-tests/CMakeLists.txt, and lib.sh ends its waits before it).
ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 600 "$@" || status=1

if [[ "${OSH_SANITIZERS:-1}" != 0 ]]; then
  echo "=== tests: AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan)"
  OSH_BUILD_DIR=build-asan scripts/build.sh -DOSH_SANITIZE=ON
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure --timeout 900 "$@" || status=1

  echo "=== tests: ThreadSanitizer build of the stack and relay tests (build-tsan)"
  cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DOSH_TSAN=ON >/dev/null
  CCACHE_BASEDIR="$PWD" CCACHE_NOHASHDIR=1 cmake --build build-tsan -j"$(nproc)" --target stack_test relay_test
  # SocketBridgeTest: the bridge with a fake stream side (no gRPC: Debian's gRPC and absl
  # are not instrumented, so tests through gRPC report races inside them). H2Echo: the
  # relay's HTTP/2 channel against an nghttp2 echo server (tests/relay/h2_echo_server.h).
  TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build-tsan --output-on-failure --timeout 600 \
    -R '^(Classify|Craft|StackNetns|StatusMap|Endpoint|SocketBridgeTest|UpstreamDispatch|H2Echo|H2Helpers)\.' || status=1
fi
exit $status
