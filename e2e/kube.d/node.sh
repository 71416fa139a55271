#!/usr/bin/env bash
# e2e/kube.d/node.sh: a real Kubernetes node (containerd + kubelet) for e2e/kube's control plane (issue 15).
#
#   e2e/kube.d/node.sh build   build kubelet, kube-scheduler, kube-proxy (same k8s.io/kubernetes version as the
#                              control plane) and containerd 2.x, containerd-shim-runc-v2, ctr (Go module proxy)
#   e2e/kube.d/node.sh up      start the node against a running `e2e/kube up`: network namespace, mount namespace,
#                              containerd, kubelet, kube-proxy, kube-scheduler; import the pause image and the
#                              popfleet images built from the release binaries (POPFLEET_NODE_IMAGES: other
#                              archives instead, space separated; empty: none)
#   e2e/kube.d/node.sh down    stop all of it, remove its cgroups and namespace, restore the kernel sysctls
#   e2e/kube.d/node.sh status
#   e2e/kube.d/node.sh ctr ARGS   the built ctr on this node's containerd (namespace k8s.io)
#
# Layout (all local): the node lives in the network namespace $NETNS, linked to the host by one veth pair
# ($HOST_IF 10.201.0.1/30 on the host, eth0 10.201.0.2/30 in the namespace; no default route, no NAT, so
# nothing can leave the machine). The control plane listens on the host's 127.0.0.1 only; nsforward.py
# listens on :6443 inside the namespace and connects to it. Pods get 10.244.0.0/24 on the bridge cni0 inside
# the namespace. containerd, kubelet and their mounts run in one mount namespace with shared propagation
# (held by a `sleep` under `unshare --mount --propagation shared`): the host's root is private.
#
# Host facts this relies on (checked by `up`): cgroup v1 (hybrid) and PID 1 not systemd, hence the cgroupfs
# driver, failCgroupV1: false and SystemdCgroup = false; runc, CNI plugins and catatonit from Debian.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
KUBE_VERSION=${POPFLEET_KUBE_VERSION:-1.36.3}
KUBE_VERSION=${KUBE_VERSION#v}
KUBE_MINOR=$(cut -d. -f2 <<<"$KUBE_VERSION")
CONTAINERD_VERSION=${POPFLEET_CONTAINERD_VERSION:-2.4.2}
CONTAINERD_VERSION=${CONTAINERD_VERSION#v}

CACHE=${POPFLEET_CACHE:-$HOME/.cache/popfleet}
KDIR=$CACHE/kube-$KUBE_VERSION
BIN=$KDIR/bin
SRC=$KDIR/src
CDIR=$CACHE/containerd-$CONTAINERD_VERSION
CBIN=$CDIR/bin
GODIR=$CACHE/go
KSTATE=${POPFLEET_STATE:-$HOME/.local/state/popfleet}/kube
STATE=$KSTATE/node
LOGS=$STATE/logs
PKI=$KSTATE/pki
KUBECONFIG_FILE=$KSTATE/kubeconfig
APISERVER_PORT=${POPFLEET_KUBE_APISERVER_PORT:-6443}
SCHED_PORT=${POPFLEET_KUBE_SCHEDULER_PORT:-10359}   # not 10259: leave the default to a real cluster
BUILD_NICE=${POPFLEET_BUILD_NICE:-19}

NETNS=${POPFLEET_NODE_NETNS:-popfleet-node}
HOST_IF=pfnode0
HOST_IP=10.201.0.1
NODE_IP=10.201.0.2
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.0.0.0/24         # as e2e/kube's apiserver
CASSANDRA_NET=10.213.0.0/30      # e2e/cassandra's netns topology: n1 10.213.0.1 (host), n2 10.213.0.2
RULE_TAG=popfleet-e2e-node
NODE_NAME=popfleet-node
SOCK=$STATE/containerd/containerd.sock
NODE_TAINT_KEY=popfleet.dev/e2e-node
PAUSE_IMAGE=localhost/popfleet/pause:catatonit
RUNC=${POPFLEET_RUNC:-/usr/sbin/runc}
CNI_BIN=${POPFLEET_CNI_BIN:-/usr/lib/cni}
# What the kubelet rewrites when protectKernelDefaults is false (pkg/kubelet/cm: setupKernelTunables).
KERNEL_SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"

log() { printf 'kube-node: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# Building kubelet, kube-scheduler, kube-proxy and containerd: cmd_build, all_built, node_bins.
# shellcheck source=node-build.sh
source "$HERE/node-build.sh"

# ---------------------------------------------------------------------------------------------------------
# Processes. Pid files are trusted only while that pid's command line still names this state dir.

COMPONENTS=(holder apiforward containerd kubelet kube-proxy kube-scheduler)

comp_pid() {
    local f=$STATE/$1.pid pid cmd
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    case "$cmd" in
        *"$STATE"*) echo "$pid" ;;
        *) return 1 ;;
    esac
}

# in_node CMD...: run in the node's network namespace and mount namespace
in_node() {
    local h
    h=$(comp_pid holder) || die "the node's mount namespace holder is not running"
    nsenter --mount="/proc/$h/ns/mnt" --net="/run/netns/$NETNS" -- "$@"
}

# start_proc NAME node|host CMD...
start_proc() {
    local c=$1 where=$2 i
    shift 2
    mkdir -p "$LOGS"
    rm -f "$STATE/$c.pid"
    printf '\n===== %s starting %s =====\n' "$(date -Is)" "$c" >>"$LOGS/$c.log"
    if [ "$where" = node ]; then
        local h
        h=$(comp_pid holder) || die "the node's mount namespace holder is not running"
        set -- nsenter --mount="/proc/$h/ns/mnt" --net="/run/netns/$NETNS" -- "$@"
    fi
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$STATE/$c.pid" "$@" \
        </dev/null >>"$LOGS/$c.log" 2>&1 8>&- 9>&- &
    for i in $(seq 50); do
        [ -s "$STATE/$c.pid" ] && break
        sleep 0.1
    done
    log "$c: started pid $(cat "$STATE/$c.pid" 2>/dev/null || echo '?'), log $LOGS/$c.log"
}

stop_proc() {
    local c=$1 pid i
    pid=$(comp_pid "$c") || { rm -f "$STATE/$c.pid"; return 0; }
    log "$c: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 200); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$c: still alive after 20s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$STATE/$c.pid"
}

show_log() {
    [ -f "$LOGS/$1.log" ] || return 0
    log "----- tail of $LOGS/$1.log -----"
    awk '/^===== .* starting / { n = 0 } { buf[++n] = $0 } END { for (i = (n > 40 ? n - 39 : 1); i <= n; i++) print buf[i] }' \
        "$LOGS/$1.log" >&2 || true
}

# wait_for NAME SECONDS CHECK...: until CHECK succeeds; fail with NAME's log if it exits or time runs out
wait_for() {
    local c=$1 secs=$2 deadline
    shift 2
    deadline=$(( $(date +%s) + secs ))
    until "$@" >/dev/null 2>&1; do
        comp_pid "$c" >/dev/null || { show_log "$c"; die "$c exited during start-up"; }
        [ "$(date +%s)" -lt "$deadline" ] || { show_log "$c"; die "$c: not ready after ${secs}s ($*)"; }
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------------------------
# Host checks and configuration

check_host() {
    local t
    [ "$(id -u)" = 0 ] || die "needs root (network namespace, mounts, cgroups)"
    for t in ip nsenter unshare iptables jq python3 "$RUNC" "$CNI_BIN/bridge" "$CNI_BIN/host-local" \
        "$CNI_BIN/loopback" /usr/bin/catatonit; do
        command -v "$t" >/dev/null || die "missing $t (apt-get install -y iproute2 util-linux iptables jq runc containernetworking-plugins catatonit)"
    done
    t=$(stat -fc %T /sys/fs/cgroup)
    case "$t" in
        cgroup2fs) CGROUP_V1=false ;;
        *) CGROUP_V1=true ;;
    esac
    log "host: /sys/fs/cgroup is $t (cgroup v1: $CGROUP_V1), PID 1 is $(cat /proc/1/comm), / propagation $(findmnt -no PROPAGATION /)"
}

save_sysctls() {
    local k
    [ -f "$STATE/sysctls.saved" ] && return
    for k in $KERNEL_SYSCTLS; do
        echo "$k=$(sysctl -n "$k")"
    done >"$STATE/sysctls.saved.tmp"
    mv "$STATE/sysctls.saved.tmp" "$STATE/sysctls.saved"
}

restore_sysctls() {
    local line
    [ -f "$STATE/sysctls.saved" ] || return 0
    while read -r line; do
        [ "$(sysctl -n "${line%%=*}")" = "${line#*=}" ] && continue
        log "restoring sysctl $line (the kubelet had set $(sysctl -n "${line%%=*}"))"
        sysctl -q -w "$line" >/dev/null
    done <"$STATE/sysctls.saved"
    rm -f "$STATE/sysctls.saved"
}

setup_netns() {
    if ! ip netns list | grep -qw "$NETNS"; then
        ip netns add "$NETNS"
    fi
    ip -n "$NETNS" link set lo up
    if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
        ip link add "$HOST_IF" type veth peer name eth0 netns "$NETNS"
        ip addr add "$HOST_IP/30" dev "$HOST_IF"
        ip -n "$NETNS" addr add "$NODE_IP/30" dev eth0
    fi
    ip link set "$HOST_IF" up
    ip -n "$NETNS" link set eth0 up
    setup_routes
}

# Routes, not a default route: the host reaches pods and Service IPs through the node (clients of the
# tests, the apiserver's kubelet calls); pods reach the test Cassandra's netns topology through the host,
# where it lives ($CASSANDRA_NET: n1 on the host, n2 one veth further). Traffic from the node towards
# Cassandra is masqueraded to the host's address on that link, so Cassandra's namespace needs no route
# back; anything else the node sends to the host for forwarding is dropped, so nothing leaves the machine.
setup_routes() {
    local r
    ip netns exec "$NETNS" sysctl -q -w net.ipv4.ip_forward=1
    # pods -> Service -> pod on the same bridge: the reply must cross the node's conntrack (as kubeadm asks)
    ip netns exec "$NETNS" sysctl -q -w net.bridge.bridge-nf-call-iptables=1 2>/dev/null \
        || log "warning: net.bridge.bridge-nf-call-iptables not settable: pod-to-Service-to-pod on one node may fail"
    ip -n "$NETNS" route replace "$CASSANDRA_NET" via "$HOST_IP" dev eth0
    for r in "$POD_CIDR" "$SERVICE_CIDR"; do ip route replace "$r" via "$NODE_IP" dev "$HOST_IF"; done
    [ -f "$STATE/ip_forward.saved" ] || sysctl -n net.ipv4.ip_forward >"$STATE/ip_forward.saved"
    sysctl -q -w net.ipv4.ip_forward=1
    host_rule -t filter FORWARD -i "$HOST_IF" ! -d "$CASSANDRA_NET" -j DROP
    host_rule -t nat POSTROUTING -s "$POD_CIDR" -d "$CASSANDRA_NET" -j MASQUERADE
    host_rule -t nat POSTROUTING -s "$NODE_IP/32" -d "$CASSANDRA_NET" -j MASQUERADE
}

# host_rule -t TABLE CHAIN SPEC...: insert once, tagged so teardown finds it
host_rule() {
    local table=$2 chain=$3
    shift 3
    iptables -t "$table" -C "$chain" "$@" -m comment --comment "$RULE_TAG" 2>/dev/null \
        || iptables -t "$table" -I "$chain" "$@" -m comment --comment "$RULE_TAG"
}

teardown_routes() {
    local table line
    for table in filter nat; do
        # grep finds nothing once the rules are gone: under pipefail that must not end `down` halfway
        # (the control plane would stay up after the node is gone).
        { iptables -t "$table" -S | grep -- "--comment \"\?$RULE_TAG" || true; } | sed 's/^-A /-D /' | while read -r line; do
            eval "iptables -t $table $line" || true
        done
    done
    ip route del "$POD_CIDR" 2>/dev/null || true
    ip route del "$SERVICE_CIDR" 2>/dev/null || true
    if [ -f "$STATE/ip_forward.saved" ]; then
        sysctl -q -w net.ipv4.ip_forward="$(cat "$STATE/ip_forward.saved")"
        rm -f "$STATE/ip_forward.saved"
    fi
}

write_configs() {
    mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/cni/networks" "$STATE/kubelet" "$STATE/pod-logs" "$STATE/images"
    cat >"$STATE/containerd/config.toml" <<TOML
version = 3
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '$PAUSE_IMAGE'
  [plugins.'io.containerd.cri.v1.runtime']
    # pod network namespaces are bind-mounted under the state dir, not the host's shared /run/netns
    netns_mounts_under_state_dir = true
    # This machine's bounding set lacks CAP_SYS_RESOURCE, so nobody may lower an oom_score_adj: runc's
    # "nsexec: failed to update /proc/self/oom_score_adj: Permission denied" (the sandbox asks for -998)
    # surfaces as "can't get final child's PID from pipe: EOF". Clamp to containerd's own value instead.
    restrict_oom_score_adj = true
    enable_unprivileged_ports = true
    enable_unprivileged_icmp = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '$RUNC'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['$CNI_BIN']
      conf_dir = '$STATE/cni/net.d'
  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
  [plugins.'io.containerd.nri.v1.nri']
    disable = true
TOML
    cat >"$STATE/cni/net.d/10-popfleet.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "popfleet",
  "plugins": [
    {
      "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$STATE/cni/networks",
        "ranges": [[{ "subnet": "$POD_CIDR" }]], "routes": [{ "dst": "0.0.0.0/0" }]
      }
    }
  ]
}
JSON
    cat >"$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
containerRuntimeEndpoint: unix://$SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $PKI/ca.crt }
authorization:
  mode: Webhook
failSwapOn: false
protectKernelDefaults: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: { memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2% }
podCIDR: $POD_CIDR
resolvConf: ""
podLogsDir: $STATE/pod-logs
serializeImagePulls: false
maxPods: 30
# Other tests share this control plane and bind their pods to a fake node themselves: the scheduler must
# not put those on this node. Pods meant for it tolerate the taint.
registerWithTaints:
- { key: $NODE_TAINT_KEY, value: real, effect: NoSchedule }
YAML
    cp "$KUBECONFIG_FILE" "$STATE/kubelet/kubeconfig"
    # iptables mode (nft-backed iptables on Debian); conntrack sysctls are the host's (not per namespace):
    # leave them alone. clusterCIDR tells kube-proxy which sources are pods (others get masqueraded).
    # kube-proxy exits when its file changes under it: rewrite it only when the content differs.
    cat >"$STATE/kube-proxy.yaml.new" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: $STATE/kubelet/kubeconfig }
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [primary]
conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s }
YAML
    if cmp -s "$STATE/kube-proxy.yaml.new" "$STATE/kube-proxy.yaml"; then
        rm -f "$STATE/kube-proxy.yaml.new"
    else
        mv -f "$STATE/kube-proxy.yaml.new" "$STATE/kube-proxy.yaml"
    fi
}

# ---------------------------------------------------------------------------------------------------------
# Images: the pause image from catatonit and the popfleet images, imported into containerd's k8s.io namespace.

ctr_node() { "$CBIN/ctr" --address "$SOCK" -n k8s.io "$@"; }

# popfleet's images, made by images/build-oci from the release binaries (as e2e/image-test does): the
# node runs what `cargo build --release` just built, tagged with its --version, without a registry.
build_popfleet_images() {
    local kind bin target=${CARGO_TARGET_DIR:-$CACHE/target}
    for kind in pop3d operator; do
        bin=$target/release/$([ "$kind" = operator ] && echo popfleet-operator || echo pop3d)
        if [ ! -x "$bin" ]; then
            log "warning: no $bin (cargo build --release): the $kind image is not on the node"
            continue
        fi
        python3 "$HERE/../../images/build-oci" "$kind" --binary "$bin" --output "$STATE/images/$kind.oci.tar" >&2 \
            || die "images/build-oci $kind failed"
        echo "$STATE/images/$kind.oci.tar"
    done
}

import_images() {
    local f images
    python3 "$HERE/pause-oci.py" /usr/bin/catatonit "$PAUSE_IMAGE" "$STATE/images/pause.oci.tar"
    images=${POPFLEET_NODE_IMAGES-$(build_popfleet_images)}
    for f in "$STATE/images/pause.oci.tar" $images; do
        log "importing $f"
        ctr_node images import "$f" >&2 || die "ctr images import $f failed"
    done
    # The CRI looks images up by their normalised name (popfleet/pop3d:x is docker.io/popfleet/pop3d:x), while
    # `ctr import` keeps the archive's name as written: add the normalised name, or the kubelet reports
    # ErrImageNeverPull for an image that `status.images` lists.
    local ref first full
    for ref in $(ctr_node images ls -q); do
        case "$ref" in sha256:*|docker.io/*) continue ;; esac
        first=${ref%%/*}
        case "$first" in *.*|*:*|localhost) continue ;; esac
        if [ "$first" = "$ref" ]; then full=docker.io/library/$ref; else full=docker.io/$ref; fi
        ctr_node images tag --force "$ref" "$full" >/dev/null
    done
}

containerd_ok() { ctr_node version; }
kubelet_ok() { in_node curl -fsS -m 3 http://127.0.0.1:10248/healthz; }
node_ready() {
    [ "$("$BIN/kubectl" --kubeconfig="$KUBECONFIG_FILE" get node "$NODE_NAME" \
        -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
proxy_ok() { in_node curl -fsS -m 3 http://127.0.0.1:10256/healthz; }
sched_ok() { curl -fsSk -m 3 "https://127.0.0.1:$SCHED_PORT/healthz" | grep -qx ok; }

cmd_up() {
    local t0 h
    t0=$(now)
    check_host
    all_built || cmd_build
    [ -s "$KUBECONFIG_FILE" ] || die "no control plane: run e2e/kube up --with-controller-manager first"
    mkdir -p "$STATE" "$LOGS"
    exec 9>"$STATE/.lock"
    flock -w 900 9 || die "could not lock $STATE/.lock"
    save_sysctls
    setup_netns
    write_configs
    if ! comp_pid holder >/dev/null; then
        # own mount namespace with shared propagation: the kubelet's and containerd's mounts (volumes, rootfs,
        # pod netns) stay in it; /run/containerd (shim sockets, runc state) is a tmpfs of its own.
        mkdir -p /run/containerd
        start_proc holder host unshare --mount --propagation shared -- bash -c \
            'mount -t tmpfs -o mode=711 tmpfs /run/containerd &&
             exec bash -c "trap \"kill \\\$! 2>/dev/null; exit 0\" TERM; while :; do sleep 3600 & wait \$!; done" holder "$1"' \
            holder "$STATE"
        sleep 0.5
        h=$(comp_pid holder) || { show_log holder; die "holder did not start"; }
    fi
    comp_pid apiforward >/dev/null || start_proc apiforward host python3 "$HERE/nsforward.py" "/run/netns/$NETNS" \
        "0.0.0.0:$APISERVER_PORT" "127.0.0.1:$APISERVER_PORT" "$STATE"
    if ! comp_pid containerd >/dev/null; then
        start_proc containerd node env PATH="$CBIN:$PATH" "$CBIN/containerd" --config "$STATE/containerd/config.toml"
    fi
    wait_for containerd 60 containerd_ok
    import_images
    if ! comp_pid kubelet >/dev/null; then
        # a Node object left from an earlier run keeps its old taints; let the kubelet register afresh
        "$BIN/kubectl" --kubeconfig="$KUBECONFIG_FILE" delete node "$NODE_NAME" --ignore-not-found >/dev/null
        start_proc kubelet node "$BIN/kubelet" --config="$STATE/kubelet/config.yaml" \
            --kubeconfig="$STATE/kubelet/kubeconfig" --root-dir="$STATE/kubelet/root" \
            --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=2
    fi
    wait_for kubelet 120 kubelet_ok
    comp_pid kube-proxy >/dev/null || start_proc kube-proxy node "$BIN/kube-proxy" --config="$STATE/kube-proxy.yaml" --v=1
    if ! comp_pid kube-scheduler >/dev/null; then
        start_proc kube-scheduler host "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_FILE" \
            --authentication-kubeconfig="$KUBECONFIG_FILE" --authorization-kubeconfig="$KUBECONFIG_FILE" \
            --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$STATE/scheduler-certs" \
            --leader-elect=false --profiling=false
    fi
    wait_for kube-scheduler 60 sched_ok
    wait_for kubelet 180 node_ready
    wait_for kube-proxy 60 proxy_ok
    log "node $NODE_NAME Ready in $(elapsed "$t0")s (containerd v$CONTAINERD_VERSION, kubelet v$KUBE_VERSION)"
}

# kill_kubepods: every process still in the node's pod cgroups (containers outlive their shims)
kill_kubepods() {
    local f pid
    for f in $(find /sys/fs/cgroup/memory/kubepods /sys/fs/cgroup/pids/kubepods -name cgroup.procs 2>/dev/null); do
        while read -r pid; do kill -KILL "$pid" 2>/dev/null || true; done <"$f"
    done
}

remove_cgroups() {
    local d
    for d in /sys/fs/cgroup/*/kubepods; do
        [ -d "$d" ] || continue
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        if [ -d "$d" ]; then log "warning: could not remove $d"; fi
    done
}

cmd_down() {
    local pid id
    mkdir -p "$STATE"
    exec 9>"$STATE/.lock"
    flock -w 900 9 || die "could not lock $STATE/.lock"
    stop_proc kube-scheduler
    stop_proc kube-proxy
    stop_proc kubelet
    if comp_pid containerd >/dev/null; then
        for id in $(ctr_node tasks ls -q 2>/dev/null); do
            ctr_node tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
        done
    fi
    kill_kubepods
    stop_proc containerd
    # shims of this containerd (their command line names its socket)
    for pid in $(pgrep -f "containerd-shim-runc-v2 .*$SOCK" || true); do kill -KILL "$pid" 2>/dev/null || true; done
    kill_kubepods
    stop_proc apiforward
    stop_proc holder
    remove_cgroups
    if ip netns list | grep -qw "$NETNS"; then ip netns del "$NETNS"; fi
    ip link del "$HOST_IF" 2>/dev/null || true
    teardown_routes
    rmdir /run/containerd 2>/dev/null || true
    restore_sysctls
    log "node down"
}

cmd_status() {
    local c pid rc=0
    for c in "${COMPONENTS[@]}"; do
        if pid=$(comp_pid "$c"); then echo "$c pid=$pid"; else echo "$c not running"; rc=1; fi
    done
    node_ready && echo "node $NODE_NAME Ready" || { echo "node $NODE_NAME not Ready"; rc=1; }
    return "$rc"
}

main() {
    local cmd=${1:-}
    [ $# -gt 0 ] && shift
    case "$cmd" in
        build) cmd_build ;;
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        ctr) exec "$CBIN/ctr" --address "$SOCK" -n k8s.io "$@" ;;
        *) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
}

main "$@"
