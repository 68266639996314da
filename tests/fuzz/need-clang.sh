#!/bin/sh
# need-clang.sh -- make sure `clang -fsanitize=fuzzer,address,undefined`
# works, installing it with apt-get only when it does not.
#
#     sh tests/fuzz/need-clang.sh        (as root on Debian; CI is that)
#
# On Debian 12 `clang` is clang-14; libFuzzer's runtime and the sanitizer
# runtimes (libclang_rt.fuzzer-x86_64.a, ...) are in libclang-rt-14-dev,
# which clang only *recommends*, so a machine configured without
# recommends would get a clang that cannot link a fuzzer.  The script
# therefore installs clang, and then, if linking still fails, the
# libclang-rt-<major>-dev package of whatever clang version it got.
# Does nothing (and installs nothing) when a working clang is present.
# Set CLANG to test another compiler name (default: clang).
set -eu

CLANG=${CLANG:-clang}

works() {
    command -v "$CLANG" >/dev/null 2>&1 || return 1
    dir=$(mktemp -d)
    cat > "$dir/t.c" <<'EOF'
#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    (void)data;
    (void)size;
    return 0;
}
EOF
    ok=0
    if "$CLANG" -fsanitize=fuzzer,address,undefined -o "$dir/t" "$dir/t.c" \
            >/dev/null 2>&1 && "$dir/t" -runs=1 >/dev/null 2>&1; then
        ok=1
    fi
    rm -rf "$dir"
    [ "$ok" = 1 ]
}

if works; then
    echo "need-clang: $("$CLANG" --version | head -n 1) builds fuzzers; nothing to install"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "need-clang: $CLANG cannot build a libFuzzer target and this is not root;" >&2
    echo "need-clang: install clang and its compiler-rt (Debian 12: clang libclang-rt-14-dev)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "need-clang: installing clang with apt-get"
apt-get update -qq
apt-get install -y -qq clang >/dev/null

if ! works; then
    major=$("$CLANG" --version | sed -n 's/.*clang version \([0-9][0-9]*\).*/\1/p' | head -n 1)
    echo "need-clang: clang $major cannot link a fuzzer yet; installing libclang-rt-$major-dev"
    apt-get install -y -qq "libclang-rt-$major-dev" >/dev/null
fi

if works; then
    echo "need-clang: $("$CLANG" --version | head -n 1) builds fuzzers"
else
    echo "need-clang: still no working clang -fsanitize=fuzzer after installing" >&2
    exit 1
fi
