#!/bin/sh
# Install what building and testing nftmesh needs and the machine lacks (Debian, as root).
set -eu
need=""
# podman, buildah, runc, busybox-static: the images (scripts/build-images.sh) and the runtime
# tests (tests/runtime_podman.rs; podman's CNI backend uses setup-cni.sh's plugins).
for pkg in libnftnl-dev libmnl-dev pkg-config nftables iptables iproute2 util-linux groff-base \
    podman buildah runc busybox-static clang libbpf-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
    echo "setup: installing$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install Rust from https://rustup.rs" >&2
    exit 1
fi
cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
# The CNI plugin's tests: Debian's CNI plugins and cnitool, built offline from Debian's source.
"$(dirname "$0")/setup-cni.sh"
