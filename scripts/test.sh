#!/bin/sh
# Every test of the workspace, then the format and lint checks. Kernel tests create their own
# network namespaces; run as root.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The images' binaries (libnftnl linked in statically; checked with ldd by the script), built
# before the tests so that tests/runtime_podman.rs, which builds the images from them, finds
# them fresh.
./scripts/build-static.sh >/dev/null
cargo test --workspace --all-targets
cargo test --workspace --doc
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --lib --quiet
