#!/bin/sh
# Regenerate tests/data/linkerd/goldens/*.golden from linkerd2-proxy-init's own code.
#
# usage: generate.sh LINKERD_CHECKOUT   (a git clone of github.com/linkerd/linkerd2-proxy-init)
#
# For each flag set in ../cases/*.json: linkerd2-proxy-init's pkg/iptables/iptables.go and
# pkg/util/portrange.go, taken unchanged from commit $COMMIT of the checkout, are built with
# main.go (the flag set mapped as proxy-init/cmd/root.go maps it) and a stand-in for logrus
# (./logrus: the log calls only), and run in simulate mode: the iptables commands proxy-init
# would run, IPv4 then IPv6. Those commands are run with Debian's iptables-nft in a fresh
# network namespace, and `iptables-save -t nat` / `ip6tables-save -t nat` of it is the golden
# (comment lines dropped), in Istio's trace layout (an `iptables-save` line, then the IPv4
# rules; an `ip6tables-save` line, then the IPv6 rules). Needs root, Go >= 1.19, iptables.
set -eu
COMMIT=183e791d99dcc6d4fa765b7331cbaec7ce40c2de
here=$(cd "$(dirname "$0")" && pwd)
src=$1
work=$(mktemp -d)
ns="nftmesh-linkerd-gen-$$"
cleanup() { ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/pkg/iptables" "$work/pkg/util" "$work/cmd/generator"
git -C "$src" show "$COMMIT:pkg/iptables/iptables.go" > "$work/pkg/iptables/iptables.go"
git -C "$src" show "$COMMIT:pkg/util/portrange.go" > "$work/pkg/util/portrange.go"
cp "$here/main.go" "$work/cmd/generator/main.go"
cp -r "$here/logrus" "$work/logrus"
cat > "$work/go.mod" <<MOD
module github.com/linkerd/linkerd2-proxy-init

go 1.19

require github.com/sirupsen/logrus v1.9.4

replace github.com/sirupsen/logrus => ./logrus
MOD
(cd "$work" && GOFLAGS=-mod=mod GOPROXY=off GOTOOLCHAIN=local go build -o gen ./cmd/generator)
mkdir -p "$here/../goldens"
for case in "$here"/../cases/*.json; do
    name=$(basename "$case" .json)
    ip netns add "$ns"
    "$work/gen" < "$case" > "$work/commands"
    out="$here/../goldens/$name.golden"
    : > "$out"
    family=""
    while IFS= read -r line; do
        # exec.Cmd's String() names the binary by the path it was found at.
        line=$(printf '%s' "$line" | sed 's|^/[^ ]*/||')
        case "$line" in
            "# ipv4") family=4; continue ;;
            "# ipv6") family=6; continue ;;
            iptables-save*|ip6tables-save*) continue ;;
            iptables\ *) set -- $line; shift; ip netns exec "$ns" iptables-nft "$@" ;;
            ip6tables\ *) set -- $line; shift; ip netns exec "$ns" ip6tables-nft "$@" ;;
            *) echo "generate: unexpected line: $line" >&2; exit 1 ;;
        esac
    done < "$work/commands"
    echo iptables-save >> "$out"
    ip netns exec "$ns" iptables-nft-save -t nat | grep -v '^#' >> "$out"
    if grep -q '^# ipv6' "$work/commands"; then
        echo ip6tables-save >> "$out"
        ip netns exec "$ns" ip6tables-nft-save -t nat | grep -v '^#' >> "$out"
    fi
    cp "$work/commands" "$here/../goldens/$name.commands"
    ip netns del "$ns"
    echo "generate: $name"
done
