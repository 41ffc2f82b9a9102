#!/bin/sh
# What the CNI plugin's tests and benchmark need, installed when missing (Debian, as root):
# Debian's containernetworking-plugins (ptp, bridge, host-local, loopback in /usr/lib/cni),
# and the reference runtime cnitool (libcni), which Debian's binary packages leave out:
# built from Debian's source package golang-github-appc-cni with Debian's golang-go,
# offline (the source needs nothing outside its own tree), into /usr/local/bin/cnitool.
set -eu
need=""
for pkg in containernetworking-plugins golang-go dpkg-dev; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need="$need $pkg"
done
if [ -n "$need" ]; then
    echo "setup-cni: installing$need"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi
if [ -x /usr/local/bin/cnitool ]; then
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
if ! apt-get source -qq --download-only golang-github-appc-cni >/dev/null 2>&1; then
    # Source lists: the machine's own Debian package sources (those signed with Debian's
    # archive key), as deb-src.
    src=/etc/apt/sources.list.d/nftmesh-deb-src.sources
    : > "$src.tmp"
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -e "$f" ] && [ "$f" != "$src" ] || continue
        grep -q debian-archive-keyring "$f" || continue
        sed -n '/^Types:/!{p;d};/deb/s/^Types:.*/Types: deb-src/p' "$f" >> "$src.tmp"
        echo >> "$src.tmp"
    done
    mv "$src.tmp" "$src"
    list=/etc/apt/sources.list.d/nftmesh-deb-src.list
    if [ -f /etc/apt/sources.list ]; then
        sed -n '/debian/s/^deb \(.*\)/deb-src \1/p' /etc/apt/sources.list > "$list"
    fi
    apt-get update -qq
    apt-get source -qq --download-only golang-github-appc-cni >/dev/null
fi
dpkg-source -x --no-check ./golang-github-appc-cni_*.dsc src >/dev/null
mkdir -p gopath/src/github.com/containernetworking
mv src gopath/src/github.com/containernetworking/cni
cd gopath/src/github.com/containernetworking/cni
GO111MODULE=off GOPATH="$work/gopath" GOCACHE="$work/cache" GOPROXY=off GOFLAGS= \
    go build -o /usr/local/bin/cnitool ./cnitool
echo "setup-cni: built /usr/local/bin/cnitool from Debian's golang-github-appc-cni source"
