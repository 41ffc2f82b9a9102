#!/bin/sh
# Build the `nftmesh` binary for init-container images with libnftnl linked in statically
# (Debian ships libnftnl.a); libmnl stays a shared library (Debian ships no libmnl.a; the image
# needs Debian's libmnl0, about 30 KB) and so does glibc. Checks the result with ldd.
# Output: target/release/nftmesh (also usable as `istio-iptables` through a symlink).
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
libdir=$(pkg-config --variable=libdir libnftnl)
mnldir=$(pkg-config --variable=libdir libmnl)
static="$PWD/target/static-libs"
mkdir -p "$static"
# Only libnftnl.a in the search directory the nftnl-sys build script is given, so the linker
# takes the archive; libmnl is found through the same directory, as its shared library.
ln -sf "$libdir/libnftnl.a" "$static/libnftnl.a"
ln -sf "$mnldir/libmnl.so" "$static/libmnl.so"
# The -sys build scripts read these; rebuild them so that the link lines change.
cargo clean --release -p nftnl-sys -p mnl-sys >/dev/null 2>&1 || true
LIBNFTNL_LIB_DIR="$static" LIBMNL_LIB_DIR="$static" cargo build --release -p nftmesh-cli
if ldd target/release/nftmesh | grep -q libnftnl; then
    echo "build-static: target/release/nftmesh still links libnftnl dynamically" >&2
    exit 1
fi
echo "build-static: target/release/nftmesh needs at run time:"
ldd target/release/nftmesh
