#!/usr/bin/env bash
# run.sh: the README's quick-start commands, plus the sanitizer and benchmark runs.
#
#   ./run.sh demo [ARGS]   install what the demo needs, build, run `build/cmlab demo ARGS`
#   ./run.sh test [ARGS]   install what the tests need, build, run the whole suite (ARGS go to meson test)
#   ./run.sh test-portable [ARGS]  the same suite built with -Dnative=false (no AVX-512), in build-portable/
#   ./run.sh sanitize [ARGS]  the same suite under ASan + UBSan, in build-asan/, then a short run of
#                          every fuzz harness (build-fuzz/, clang)
#   ./run.sh fuzz [SECONDS]   the fuzz campaign: every harness for SECONDS (default 300) each
#   ./run.sh bench [ARGS]  the benchmark against PyTorch (bench/bench.py; `bench conv`: bench/conv.sh)
#
# Each command is idempotent: Debian packages are installed only when dpkg says they are missing
# (apt-get update once, then apt-get install of just those), and an existing build directory is
# reused. Environment: CI=true or CMLAB_WERROR=1 configures with -Dwerror=true.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# Debian 12 packages. The demo only builds and runs the C program; the tests also need the
# PyTorch oracle (tests/torch/*.py, run with /usr/bin/python3), scipy (the matrix square
# root oracle), the HDF5 command-line tools and Chromium (test_ablate renders report.html).
BUILD_PACKAGES=(meson ninja-build pkg-config gcc libopenblas-openmp-dev libhdf5-dev zlib1g-dev
                libpng-dev libjpeg62-turbo-dev libinih-dev dataset-fashion-mnist)
# clang and its libFuzzer runtime build the fuzz harnesses (tests/fuzz/); Open MPI builds and
# runs the data-parallel training that tests/test_mpi.c checks (the demo builds without it).
TEST_PACKAGES=("${BUILD_PACKAGES[@]}" python3-torch python3-h5py python3-numpy python3-scipy hdf5-tools
               chromium clang libclang-rt-14-dev openmpi-bin libopenmpi-dev)

usage() {
    cat <<'EOF'
usage: ./run.sh COMMAND [ARGS...]

commands:
  demo       install missing packages, build, train the demo consistency model on
             Fashion-MNIST, write 1- and 2-step sample grids (ARGS go to `cmlab demo`)
  test       install missing packages, build, run the whole test suite
             (ARGS go to `meson test`, e.g. a test name); ends with "tests: N passed, N failed"
  test-portable  the test suite built with -Dnative=false in build-portable/: no -march=native,
             so no AVX-512 and conv2d's im2col path where the native build takes Winograd
             (ARGS go to `meson test`)
  sanitize   the test suite under AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/
             (ARGS go to `meson test`; default --timeout-multiplier 3), then every fuzz
             harness for 20 s (build-fuzz/, clang; CMLAB_FUZZ_SECONDS changes it, 0 skips)
  fuzz       build the libFuzzer harnesses with clang in build-fuzz/ and run each for
             SECONDS (default 300); the corpora grow in build-fuzz/fuzz-corpus/<harness>/,
             crashing inputs land in build-fuzz/fuzz-artifacts/<harness>/
  bench      build both sides and run the benchmark against PyTorch at its best, one table
             (bench/bench.py; ARGS go to it: --reps R, --quick, --only S-train,S-heun64,...,
             --contended, --cmlab-env VAR=VALUE);
             `bench conv [REPS] [ITERS]` runs the conv-only comparison (bench/conv.sh)
  --help     this text

environment:
  CI=true or CMLAB_WERROR=1   build with -Dwerror=true (warnings are errors)
EOF
}

# Installs the packages from "$@" that dpkg does not list as installed.
ensure_packages() {
    if ! command -v dpkg-query >/dev/null; then
        echo "run.sh: no dpkg-query (not Debian?): make sure these are installed: $*" >&2
        return 0
    fi
    local missing=() pkg
    for pkg in "$@"; do
        if [[ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)" != installed ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi

    local install=(apt-get install -y --no-install-recommends "${missing[@]}")
    local sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null && { sudo -n true 2>/dev/null || [[ -t 0 ]]; }; then
            sudo=(sudo)
        else
            echo "run.sh: missing Debian packages: ${missing[*]}" >&2
            echo "run.sh: as root, run:" >&2
            echo "  apt-get update && DEBIAN_FRONTEND=noninteractive ${install[*]}" >&2
            exit 2
        fi
    fi
    echo "run.sh: installing missing Debian packages: ${missing[*]}"
    "${sudo[@]}" apt-get update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${install[@]}"
}

# Prints the value of meson option $2 in configured build directory $1 (Python's spelling: True).
meson_option() {
    /usr/bin/python3 -c 'import json, sys
for option in json.load(open(sys.argv[1])):
    if option["name"] == sys.argv[2]:
        print(option["value"])' "$1/meson-info/intro-buildoptions.json" "$2"
}

# Configures build directory $1 with the meson options "${@:2}" unless it is configured already.
configure() {
    local dir=$1
    shift
    local options=("$@")
    if [[ "${CI:-}" == true || "${CMLAB_WERROR:-0}" == 1 ]]; then
        options+=(-Dwerror=true)
    fi
    if [[ -f "$dir/meson-private/coredata.dat" ]]; then
        # Reuse it; only make sure a CI run is strict even when the directory came from elsewhere
        # (changing an option regenerates the build files, so only when it is not set yet).
        if [[ " ${options[*]} " == *" -Dwerror=true "* && "$(meson_option "$dir" werror)" != True ]]; then
            meson configure "$dir" -Dwerror=true
        fi
    else
        meson setup "$dir" "${options[@]}"
    fi
}

# A build directory configured before Open MPI was installed (by the demo, whose packages lack
# it) would skip tests/test_mpi.c: reconfigure it, so that meson finds MPI now.
configure_mpi() {
    local dir=$1
    if pkg-config --exists ompi && ! meson introspect "$dir" --dependencies | grep -q '"name": "ompi"'; then
        meson setup --reconfigure "$dir"
    fi
}

# Runs the suite in build directory $1 (meson test arguments follow) and prints the closing line
# "tests: N passed, N failed" from meson's test log. Returns non-zero if anything failed.
run_suite() {
    local dir=$1
    shift
    local log="$dir/meson-logs/testlog.json" status=0
    rm -f "$log"
    meson test -C "$dir" --no-rebuild --print-errorlogs --num-processes 2 "$@" || status=$?
    if [[ ! -f "$log" ]]; then
        echo "run.sh: meson test wrote no $log (exit code $status): no test ran" >&2
        return 1
    fi
    # testlog.json holds one JSON object per test; "result" is meson's TestResult name.
    local counts
    counts=$(/usr/bin/python3 - "$log" <<'EOF'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    if not line.strip():
        continue
    result = json.loads(line)["result"]
    if result in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif result == "SKIP":
        skipped += 1
    else:  # FAIL, TIMEOUT, ERROR, UNEXPECTEDPASS, ...
        failed += 1
print(passed, failed, skipped)
EOF
)
    local passed failed skipped
    read -r passed failed skipped <<<"$counts"
    if ((skipped > 0)); then
        echo "tests: $skipped skipped"
    fi
    echo "tests: $passed passed, $failed failed"
    ((failed == 0 && status == 0))
}

# OpenMP and OpenBLAS use the project's default of 2 threads unless the caller chose otherwise.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

# The suite runs two tests at a time, each with up to 2 threads, on 2 cores: oversubscribed by
# design. OpenMP threads that spin while they wait then steal the cores their peers need (a
# 2-thread training run measured 14x slower beside other jobs: 11.6 against 166 img/s with
# 1 thread). Passive waiting costs a little on an idle machine and saves that, so the test
# commands use it unless the caller chose a policy.
suite_env() {
    export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
}

# The sanitizer settings of `sanitize` and `fuzz`. Leaks are checked; tests/lsan.supp names only
# internal allocators of OpenBLAS and HDF5, never whole libraries (see there why). Any UBSan
# report stops the program with a stack trace.
sanitizer_env() {
    export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1"
    export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
    export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
}

# Builds the libFuzzer harnesses with clang (ASan + UBSan) in build-fuzz/, with their seeds.
build_fuzz() {
    if [[ ! -f build-fuzz/meson-private/coredata.dat ]]; then
        CC=clang configure build-fuzz -Dfuzz=true -Db_sanitize=address,undefined -Db_lundef=false \
            -Dbuildtype=debugoptimized "-Dc_args=-fno-sanitize-recover=all -fno-omit-frame-pointer"
    fi
    local targets=(tests/fuzz/seeds.stamp) exe
    for exe in tests/fuzz/fuzz_*.c; do
        exe=${exe%.c}
        targets+=("$exe")
    done
    ninja -C build-fuzz "${targets[@]}"
}

# Runs every harness of build-fuzz for $1 seconds on its corpus (build-fuzz/fuzz-corpus/<h>/,
# grown across runs) and its seeds, and prints the executions of each. Returns non-zero when one
# found a crash, a hang (10 s per input) or a leak; the input is in build-fuzz/fuzz-artifacts/<h>/
# (keep it in tests/fuzz/regress/<h>/ with the fix).
run_fuzz() {
    local seconds=$1 failed=() src h log
    for src in tests/fuzz/fuzz_*.c; do
        h=${src#tests/fuzz/fuzz_}
        h=${h%.c}
        mkdir -p "build-fuzz/fuzz-corpus/$h" "build-fuzz/fuzz-artifacts/$h"
        log="build-fuzz/fuzz-artifacts/$h.log"
        local leaks=1 dict=()
        # fuzz_seeds writes a dictionary for a harness whose input has words (experiment keys).
        [[ -f build-fuzz/tests/fuzz/seeds/$h.dict ]] && dict=("-dict=build-fuzz/tests/fuzz/seeds/$h.dict")
        if ASAN_OPTIONS="${ASAN_OPTIONS/detect_leaks=1/detect_leaks=$leaks}" \
            "build-fuzz/tests/fuzz/fuzz_$h" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
            -detect_leaks="$leaks" "${dict[@]}" \
            -print_final_stats=1 -artifact_prefix="build-fuzz/fuzz-artifacts/$h/" \
            "build-fuzz/fuzz-corpus/$h" "build-fuzz/tests/fuzz/seeds/$h" >"$log" 2>&1; then
            echo "fuzz $h: $(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$') executions in ${seconds} s, $(ls "build-fuzz/fuzz-corpus/$h" | wc -l) corpus inputs"
        else
            echo "fuzz $h: FAILED, see $log and build-fuzz/fuzz-artifacts/$h/" >&2
            grep -E 'ERROR|SUMMARY|Test unit written' "$log" >&2 || tail -20 "$log" >&2
            failed+=("$h")
        fi
    done
    if ((${#failed[@]} > 0)); then
        echo "fuzz: ${#failed[@]} harness(es) failed: ${failed[*]}" >&2
        return 1
    fi
}

command=${1:-}
if (($# > 0)); then
    shift
fi

case "$command" in
    demo)
        ensure_packages "${BUILD_PACKAGES[@]}"
        configure build
        # Only the binary: the default target also builds the test fixtures, which need torch.
        ninja -C build cmlab
        exec build/cmlab demo "$@"
        ;;
    test)
        ensure_packages "${TEST_PACKAGES[@]}"
        configure build
        configure_mpi build
        ninja -C build
        suite_env
        run_suite build "$@"
        ;;
    test-portable)
        # What a machine without AVX-512 runs: the fallback paths stay tested on this one.
        ensure_packages "${TEST_PACKAGES[@]}"
        configure build-portable -Dnative=false
        ninja -C build-portable
        suite_env
        run_suite build-portable "$@"
        ;;
    sanitize)
        ensure_packages "${TEST_PACKAGES[@]}"
        configure build-asan -Db_sanitize=address,undefined -Db_lundef=false \
            -Dbuildtype=debugoptimized "-Dc_args=-fno-sanitize-recover=all -fno-omit-frame-pointer"
        ninja -C build-asan
        sanitizer_env
        suite_env
        if [[ " $* " != *" --timeout-multiplier"* && " $* " != *" -t"* ]]; then
            set -- --timeout-multiplier 3 "$@"
        fi
        status=0
        run_suite build-asan "$@" || status=$?
        # A short run of every fuzz harness (about 2.5 minutes in all with the build reused).
        if ((${CMLAB_FUZZ_SECONDS:-20} > 0)); then
            build_fuzz
            run_fuzz "${CMLAB_FUZZ_SECONDS:-20}" || status=1
        fi
        exit "$status"
        ;;
    fuzz)
        ensure_packages "${TEST_PACKAGES[@]}"
        build_fuzz
        sanitizer_env
        suite_env
        run_fuzz "${1:-300}"
        ;;
    bench)
        ensure_packages "${TEST_PACKAGES[@]}"
        configure build
        ninja -C build
        if [[ "${1:-}" == conv ]]; then
            shift
            exec bash bench/conv.sh build "$@"
        fi
        exec /usr/bin/python3 bench/bench.py build "$@"
        ;;
    -h | --help | help)
        usage
        ;;
    "")
        usage >&2
        exit 2
        ;;
    *)
        echo "run.sh: unknown command '$command'" >&2
        usage >&2
        exit 2
        ;;
esac
