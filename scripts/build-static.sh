#!/bin/sh
# Build the binaries that go into images, `nftmesh` (the CLI, the init container's
# istio-iptables, the agent, the CNI installer) and `nftmesh-cni` (the CNI plugin), with
# libnftnl linked in statically (Debian ships libnftnl.a); libmnl stays a shared library (Debian
# ships no libmnl.a; an image needs Debian's libmnl.so.0, about 30 KB) and so does glibc.
# Checks both with ldd: neither may name libnftnl.
# Output: target/release/nftmesh (also usable as `istio-iptables` through a symlink) and
# target/release/nftmesh-cni.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
libdir=$(pkg-config --variable=libdir libnftnl)
mnldir=$(pkg-config --variable=libdir libmnl)
static="$PWD/target/static-libs"
mkdir -p "$static"
# Only libnftnl.a in the search directory the nftnl-sys build script is given, so the linker
# takes the archive; libmnl is found through the same directory, as its shared library.
# (Made only when missing or wrong: concurrent runs must not race on replacing them.)
link() { [ "$(readlink "$2" 2>/dev/null)" = "$1" ] || ln -sf "$1" "$2"; }
link "$libdir/libnftnl.a" "$static/libnftnl.a"
link "$mnldir/libmnl.so" "$static/libmnl.so"
# The -sys build scripts declare rerun-if-env-changed for these variables, so cargo reruns
# them (and relinks) whenever the previous release build was made without them.
LIBNFTNL_LIB_DIR="$static" LIBMNL_LIB_DIR="$static" \
    cargo build --release --locked -p nftmesh-cli -p nftmesh-cni
out="${CARGO_TARGET_DIR:-target}/release"
for bin in nftmesh nftmesh-cni; do
    if ldd "$out/$bin" | grep -q libnftnl; then
        echo "build-static: $out/$bin still links libnftnl dynamically" >&2
        exit 1
    fi
    echo "build-static: $out/$bin needs at run time:"
    ldd "$out/$bin"
done
