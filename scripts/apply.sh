#!/bin/sh
# The main job: in a throwaway network namespace, apply Istio's default sidecar capture through
# netlink (one nf_tables transaction), print the live ruleset read back over netlink by
# `nftmesh dump`, and delete the namespace.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo build --quiet --release -p nftmesh-cli
ns="nftmesh-demo-$$"
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT INT TERM
./target/release/nftmesh apply --network-namespace "/var/run/netns/$ns" \
    -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020
./target/release/nftmesh dump --network-namespace "/var/run/netns/$ns"
