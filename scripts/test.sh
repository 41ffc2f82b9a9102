#!/bin/sh
# Every test of the workspace, then the format and lint checks. Kernel tests create their own
# network namespaces; run as root.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo test --workspace --all-targets
cargo test --workspace --doc
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --lib --quiet
# The init-container binary: libnftnl linked in statically (checked with ldd by the script).
./scripts/build-static.sh >/dev/null
