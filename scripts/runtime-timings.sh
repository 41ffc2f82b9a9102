#!/bin/sh
# How long a pod takes to start in a real container runtime with each way of installing the
# capture: the wall time of `podman pod start` (it returns once every container is running,
# after the init containers ran to completion) for a pod of an infra container, a proxy
# stand-in (uid 1337) and an app (uid 1000), on a bridge network:
#   plain                          no capture
#   istio-init                     + Istio's istio-init argv from the nftmesh image (NET_ADMIN)
#   nftmesh-cni                    nftmesh-cni chained into the conflist (validate: true)
#   nftmesh-cni-validation         + the istio-validation init container (uid 1337)
# ROUNDS rounds (default 5), the shapes interleaved in each, a fresh pod per run; prints the
# medians side by side. As tests/runtime_podman.rs does (see its header and
# crates/nftmesh-test-support/src/runtime.rs), podman runs with a configuration, storage and
# CNI directories of its own in a temporary directory, inside a private node (unshare --net
# --mount); /etc is not touched. Run as root: scripts/runtime-timings.sh [ROUNDS]
set -eu
cd "$(dirname "$0")/.."
rounds=${1:-5}
if [ "${NFTMESH_TIMINGS_DIR:-}" = "" ]; then
    dir=$(mktemp -d /tmp/nftmesh-timings.XXXXXX)
    trap 'rm -rf "$dir"' EXIT
    mkdir -p "$dir/cni/net.d" "$dir/cni/bin" "$dir/cni/ipam" "$dir/tmp" "$dir/xdg"
    for plugin in bridge host-local loopback; do ln -s "/usr/lib/cni/$plugin" "$dir/cni/bin/"; done
    cat > "$dir/storage.conf" <<EOF
[storage]
driver = "overlay"
graphroot = "$dir/root"
runroot = "$dir/runroot"
EOF
    # runc (crun 1.8 refuses the hybrid cgroup layout), cgroupfs, file events, and ulimits
    # within the machine's hard limits.
    cat > "$dir/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[network]
network_backend = "cni"
cni_plugin_dirs = ["$dir/cni/bin"]
network_config_dir = "$dir/cni/net.d"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$dir/events.log"
tmp_dir = "$dir/tmp"
EOF
    export CONTAINERS_CONF="$dir/containers.conf" CONTAINERS_STORAGE_CONF="$dir/storage.conf"
    export XDG_RUNTIME_DIR="$dir/xdg" NFTMESH_TIMINGS_DIR="$dir"
    ./scripts/build-images.sh nftmesh nftmesh-node nftmesh-test-busybox
    status=0
    unshare --net --mount --propagation private "$0" "$rounds" || status=$?
    exit "$status"
fi

# In the private node.
dir=$NFTMESH_TIMINGS_DIR
for d in /run/netns /var/lib/cni /var/lib/containers; do
    mkdir -p "$d"
    mount -t tmpfs nftmesh-timings "$d"
done
ip link set lo up
cg="/nftmesh-timings-$$"
clean_up() {
    podman pod rm --all --force --time 0 >/dev/null 2>&1 || true
    podman system reset --force >/dev/null 2>&1 || true
    for h in /sys/fs/cgroup/*/; do
        [ -d "$h${cg#/}" ] && find "$h${cg#/}" -depth -type d -exec rmdir {} + 2>/dev/null
    done
    true
}
trap clean_up EXIT
network() { # FILE NAME BRIDGE SUBNET
    cat > "$dir/cni/net.d/$1" <<EOF
{"cniVersion": "1.0.0", "name": "$2", "plugins": [{"type": "bridge", "bridge": "$3",
 "isGateway": true, "ipMasq": false, "ipam": {"type": "host-local", "ranges": [[{"subnet": "$4"}]],
 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$dir/cni/ipam"}}]}
EOF
}
# The lexically first conflist is the one `nftmesh cni install` chains into.
network 10-mesh.conflist mesh nftmesh-mesh 10.89.4.0/24
network 20-plain.conflist plain nftmesh-plain 10.89.3.0/24
cat > "$dir/entry.json" <<EOF
{"type": "nftmesh-cni", "capture": {"outbound_cidrs_include": "all", "inbound_ports": "all",
 "inbound_ports_exclude": [15090, 15021, 15020]}, "validate": true}
EOF
target/release/nftmesh cni install --conf-dir "$dir/cni/net.d" --bin-dir "$dir/cni/bin" \
    --plugin-binary target/release/nftmesh-cni --plugin-config "$dir/entry.json" 2>/dev/null

init_argv="-p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x '' -b '*' -d 15090,15021,15020"
# pod SHAPE NETWORK [init container kinds]: create the pod (not timed).
pod() {
    shape=$1 net=$2
    shift 2
    podman pod create --name "$shape" --network "$net" --cgroup-parent "$cg" \
        --infra-image localhost/nftmesh-test-busybox >/dev/null
    for init in "$@"; do
        case "$init" in
            istio-init)
                eval "set -- $init_argv"
                podman create --pod "$shape" --init-ctr always --cap-drop all \
                    --cap-add NET_ADMIN localhost/nftmesh istio-iptables "$@" >/dev/null ;;
            istio-validation)
                eval "set -- $init_argv"
                podman create --pod "$shape" --init-ctr always --user 1337:1337 --cap-drop all \
                    localhost/nftmesh istio-iptables "$@" --run-validation --skip-rule-apply \
                    >/dev/null ;;
        esac
    done
    podman create --pod "$shape" --user 1337:1337 --cap-drop all localhost/nftmesh-test-busybox \
        sh -c 'nc -ll -p 15001 -e echo outbound & nc -ll -p 15006 -e echo inbound & wait' \
        >/dev/null
    podman create --pod "$shape" --name "$shape-app" --user 1000:1000 --cap-drop all \
        localhost/nftmesh-test-busybox >/dev/null
}
now_ns() { date +%s%N; }
shapes="plain istio-init nftmesh-cni nftmesh-cni-validation"
round=1
while [ "$round" -le "$rounds" ]; do
    for shape in $shapes; do
        case "$shape" in
            plain) pod "$shape" plain ;;
            istio-init) pod "$shape" plain istio-init ;;
            nftmesh-cni) pod "$shape" mesh ;;
            nftmesh-cni-validation) pod "$shape" mesh istio-validation ;;
        esac
        t0=$(now_ns)
        podman pod start "$shape" >/dev/null
        t1=$(now_ns)
        running=$(podman inspect --format '{{.State.Running}}' "$shape-app")
        [ "$running" = true ] || { echo "runtime-timings: $shape: the app is not running" >&2; exit 1; }
        echo "$shape $(( (t1 - t0) / 1000 ))" >> "$dir/times"
        podman pod rm --force --time 0 "$shape" >/dev/null
    done
    round=$((round + 1))
done
echo "podman pod start -> app running, ms (median of $rounds; every run in order):"
printf '| %s | %s | %s |\n|---|---|---|\n' shape median runs
for shape in $shapes; do
    runs=$(awk -v s="$shape" '$1 == s { printf "%.1f ", $2 / 1000 }' "$dir/times")
    median=$(awk -v s="$shape" '$1 == s { print $2 / 1000 }' "$dir/times" | sort -n |
        awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f", m }')
    printf '| %s | %s | %s|\n' "$shape" "$median" "$runs"
done
