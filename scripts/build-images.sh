#!/bin/sh
# Build nftmesh's container images with Debian's buildah, offline and reproducibly: each image
# is FROM scratch, holds only our binaries (from scripts/build-static.sh), the shared libraries
# ldd names for them, and a minimal /etc/passwd and /etc/group; nothing is pulled, no registry
# is involved, no command runs inside the image while it is built.
#
#   nftmesh        the init and validation image: /usr/local/bin/nftmesh, the istio-iptables,
#                  proxy-init and linkerd2-network-validator symlinks to it (Istio's and
#                  Linkerd's init-container argv run unchanged)
#   nftmesh-node   the node image: nftmesh (agent, `cni install|uninstall`) and nftmesh-cni
#   nftmesh-test-busybox  (only when named; for the runtime tests) Debian's busybox-static:
#                  the stand-ins for a proxy and an application, and the pods' infra container
#
# Usage: scripts/build-images.sh (--root DIR --runroot DIR | with CONTAINERS_STORAGE_CONF set)
#            [--archive] [--no-build] [IMAGE...]
#   --root, --runroot  the containers-storage directories to put the images in; without them
#                      CONTAINERS_STORAGE_CONF must name a storage.conf. The machine's default
#                      storage is never used.
#   --archive          also save each image as an OCI archive, target/images/IMAGE.tar
#                      (`podman load -i target/images/nftmesh.tar`)
#   --no-build         use target/release/nftmesh{,-cni} as they are (still checked with ldd)
#   IMAGE              nftmesh, nftmesh-node, nftmesh-test-busybox (default: the first two)
#
# Reproducible: every file and the image's created time are SOURCE_DATE_EPOCH (default: the
# time of the last commit), so the same binaries give the same image ID and digest. Prints one
# line per image: `IMAGE id ID digest DIGEST size SIZE`. See deploy/images/README.md.
set -eu
cd "$(dirname "$0")/.."
root="" runroot="" archive=false build=true images=""
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root="$2"; shift 2 ;;
        --runroot) runroot="$2"; shift 2 ;;
        --archive) archive=true; shift ;;
        --no-build) build=false; shift ;;
        nftmesh|nftmesh-node|nftmesh-test-busybox) images="$images $1"; shift ;;
        *) echo "build-images: unknown argument $1 (see the usage at the top of $0)" >&2; exit 2 ;;
    esac
done
images=${images:-nftmesh nftmesh-node}
# buildah's global storage flags, split on spaces where used (so no spaces in the paths).
if [ -n "$root" ] && [ -n "$runroot" ]; then
    storage="--root $root --runroot $runroot --storage-driver overlay"
elif [ -z "$root$runroot" ] && [ -n "${CONTAINERS_STORAGE_CONF:-}" ]; then
    storage=""
else
    echo "build-images: give --root DIR and --runroot DIR, or set CONTAINERS_STORAGE_CONF;" \
        "the machine's default storage is never used" >&2
    exit 2
fi
case "$root$runroot" in *" "*) echo "build-images: no spaces in --root or --runroot" >&2; exit 2 ;; esac
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
if $build; then
    ./scripts/build-static.sh >&2
fi
bin=target/release
for b in nftmesh nftmesh-cni; do
    if ! ldd "$bin/$b" >/dev/null 2>&1 || ldd "$bin/$b" | grep -q libnftnl; then
        echo "build-images: $bin/$b is missing or links libnftnl dynamically;" \
            "run scripts/build-static.sh" >&2
        exit 1
    fi
done

# stage DIR FILE DEST MODE: copy FILE (symlinks followed) to DIR/DEST with MODE.
stage() {
    mkdir -p "$1$(dirname "$3")"
    cp -L "$2" "$1$3"
    chmod "$4" "$1$3"
}

# stage_libs DIR BINARY...: the shared libraries ldd names, at the paths it names.
stage_libs() {
    dir=$1
    shift
    libs=""
    for b in "$@"; do
        out=$(ldd "$b")
        case "$out" in
            *"not found"*) echo "build-images: $b: a library is not found:" "$out" >&2; exit 1 ;;
        esac
        # `name => /path (addr)` or `/path (addr)` (the loader); linux-vdso has no path.
        libs="$libs $(printf '%s\n' "$out" |
            awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')"
    done
    for lib in $(printf '%s\n' $libs | sort -u); do
        case "$lib" in
            */ld-linux*) stage "$dir" "$lib" "$lib" 0755 ;;
            *) stage "$dir" "$lib" "$lib" 0644 ;;
        esac
    done
}

# stage_users DIR: root, Istio's proxy user 1337 and nobody; no shell, no home.
stage_users() {
    mkdir -p "$1/etc"
    cat > "$1/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
istio-proxy:x:1337:1337:istio-proxy:/nonexistent:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
EOF
    cat > "$1/etc/group" <<'EOF'
root:x:0:
istio-proxy:x:1337:
nogroup:x:65534:
EOF
    chmod 0644 "$1/etc/passwd" "$1/etc/group"
}

# commit NAME DIR CONFIG...: a scratch container holding DIR, configured by CONFIG (buildah
# config flags), committed as localhost/NAME:latest with every time set to the epoch.
commit() {
    name=$1 dir=$2
    shift 2
    find "$dir" -exec touch -h -d "@$epoch" {} +
    ctr=$(buildah $storage from --name "nftmesh-build-$name-$$" scratch)
    if ! { buildah $storage copy --quiet --chown 0:0 "$ctr" "$dir/" / >/dev/null &&
        buildah $storage config --created-by "scripts/build-images.sh" \
            --label "org.opencontainers.image.title=$name" \
            --label "org.opencontainers.image.version=$version" \
            --label "org.opencontainers.image.revision=$revision" \
            --label "org.opencontainers.image.licenses=Apache-2.0" "$@" "$ctr" &&
        buildah $storage commit --quiet --format oci --timestamp "$epoch" --rm "$ctr" \
            "localhost/$name:latest" >/dev/null; }; then
        buildah $storage rm "$ctr" >/dev/null 2>&1 || true
        echo "build-images: building $name failed" >&2
        exit 1
    fi
    id=$(buildah $storage inspect --type image --format '{{.FromImageID}}' "localhost/$name:latest")
    digest=$(buildah $storage inspect --type image --format '{{.FromImageDigest}}' \
        "localhost/$name:latest")
    size=$(buildah $storage images --format '{{.Size}}' "localhost/$name:latest")
    if $archive; then
        # An OCI layout, tarred with fixed names, order and times (buildah's oci-archive
        # transport stamps the tar with the current time).
        layout="target/images/oci/$name"
        rm -rf "$layout" "target/images/$name.tar"
        mkdir -p target/images/oci
        buildah $storage push --quiet "localhost/$name:latest" \
            "oci:$layout:localhost/$name:latest"
        tar -C "$layout" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
            --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
            -cf "target/images/$name.tar" .
        rm -rf "$layout"
        rmdir target/images/oci 2>/dev/null || true
        size="$size, archive target/images/$name.tar $(du -k "target/images/$name.tar" | cut -f1) KiB"
    fi
    echo "localhost/$name:latest id sha256:$id digest $digest size $size"
}

# Each image's files are staged in a directory of this run's own (runs may be concurrent).
work=$(mktemp -d "${TMPDIR:-/tmp}/nftmesh-images.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p target/images
for image in $images; do
    dir="$work/$image"
    mkdir -p "$dir"
    case "$image" in
        nftmesh)
            stage "$dir" "$bin/nftmesh" /usr/local/bin/nftmesh 0755
            ln -s nftmesh "$dir/usr/local/bin/istio-iptables"
            # Linkerd's init container and network validator, by argv[0].
            ln -s nftmesh "$dir/usr/local/bin/proxy-init"
            ln -s nftmesh "$dir/usr/local/bin/linkerd2-network-validator"
            stage_libs "$dir" "$bin/nftmesh"
            stage_users "$dir"
            commit nftmesh "$dir" --entrypoint '["/usr/local/bin/nftmesh"]' \
                --env PATH=/usr/local/bin
            ;;
        nftmesh-node)
            stage "$dir" "$bin/nftmesh" /usr/local/bin/nftmesh 0755
            stage "$dir" "$bin/nftmesh-cni" /usr/local/bin/nftmesh-cni 0755
            stage_libs "$dir" "$bin/nftmesh" "$bin/nftmesh-cni"
            stage_users "$dir"
            mkdir -p "$dir/run/nftmesh" "$dir/var/lib/nftmesh-agent"
            commit nftmesh-node "$dir" --entrypoint '["/usr/local/bin/nftmesh"]' \
                --cmd '["agent", "run", "--socket", "/run/nftmesh/agent.sock", "--state-dir", "/var/lib/nftmesh-agent"]' \
                --env PATH=/usr/local/bin
            ;;
        nftmesh-test-busybox)
            stage "$dir" /bin/busybox /bin/busybox 0755
            for applet in sh nc sleep; do ln -s busybox "$dir/bin/$applet"; done
            stage_users "$dir"
            commit nftmesh-test-busybox "$dir" --cmd '["/bin/sleep", "2147483647"]' --env PATH=/bin
            ;;
    esac
done
