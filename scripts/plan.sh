#!/bin/sh
# The main job for now: print the nf_tables ruleset of Istio's default sidecar capture
# (the flags Istio's injector passes), changing nothing on the machine.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo run --quiet --release -p nftmesh-cli -- plan -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020
