# Sourced by e2e/cassandra: the three cluster shapes and the network each one needs.
#
#   loopback  n1 (127.0.0.1, dc1), n2 (127.0.0.2, dc2): the everyday two-DC cluster, RF 1 per DC.
#   netns     n1 on the host at 10.213.0.1 (dc1), n2 in the namespace popfleet-dc2 at 10.213.0.2 (dc2),
#             one veth pair between them, no delay: the partition test's own cluster.
#   seed      the reference topology: n1-n3 (dc1) on the host at 10.214.0.1-3, n4-n6 (dc2) in the
#             namespace popfleet-seed at 10.214.0.11-13, one veth pair between the DCs that delays every
#             packet crossing it by POPFLEET_LINK_DELAY_MS (default 1) each way, RF 3 per DC.
#
# The link delay is not netem: this machine kind's kernel has no sch_netem (and no modules to load).
# It has NFQUEUE, so what each side receives from the link is queued to popfleet-linkdelay
# (e2e/linkdelay), which gives each packet its verdict D ms after it arrived, in order. Fail-closed: a
# dead delayer is a cut link, never a silently fast one; `status` measures the RTT across the link.

TOPOLOGY=${POPFLEET_CASSANDRA_TOPOLOGY:-loopback}
NETNS=""
VETH_HOST="" VETH_NS="" LINK_NET=""
LINK_QUEUE=7
declare -A NS=()
case $TOPOLOGY in
    loopback)
        NODES=(n1 n2)
        IP=([n1]=127.0.0.1 [n2]=127.0.0.2)
        DC=([n1]=dc1 [n2]=dc2)
        TOKEN=([n1]=-9223372036854775808 [n2]=0)
        JMX=([n1]=7199 [n2]=7299)
        ;;
    netns)
        STATE=$STATE-netns
        NODES=(n1 n2)
        IP=([n1]=10.213.0.1 [n2]=10.213.0.2)
        DC=([n1]=dc1 [n2]=dc2)
        TOKEN=([n1]=-9223372036854775808 [n2]=0)
        JMX=([n1]=7399 [n2]=7499)
        NETNS=popfleet-dc2 VETH_HOST=pf-dc1 VETH_NS=pf-dc2 LINK_NET=10.213.0.0/30
        NS[n2]=$NETNS
        ;;
    seed)
        STATE=$STATE-seed
        NODES=(n1 n2 n3 n4 n5 n6)
        IP=([n1]=10.214.0.1 [n2]=10.214.0.2 [n3]=10.214.0.3 [n4]=10.214.0.11 [n5]=10.214.0.12 [n6]=10.214.0.13)
        DC=([n1]=dc1 [n2]=dc1 [n3]=dc1 [n4]=dc2 [n5]=dc2 [n6]=dc2)
        # One token per node, evenly spread within each DC (NetworkTopologyStrategy places replicas per
        # DC, so each DC's ring must be balanced on its own); dc2's are dc1's plus one.
        TOKEN=([n1]=-9223372036854775808 [n2]=-3074457345618258603 [n3]=3074457345618258602
               [n4]=-9223372036854775807 [n5]=-3074457345618258602 [n6]=3074457345618258603)
        JMX=([n1]=7599 [n2]=7609 [n3]=7619 [n4]=7629 [n5]=7639 [n6]=7649)
        NETNS=popfleet-seed VETH_HOST=pf-seed1 VETH_NS=pf-seed2 LINK_NET=10.214.0.0/24
        NS[n4]=$NETNS NS[n5]=$NETNS NS[n6]=$NETNS
        # Six JVMs starting at once on two cores take minutes, not seconds.
        TIMEOUT=${POPFLEET_CASSANDRA_TIMEOUT:-900}
        HEAP_MIN=${POPFLEET_CASSANDRA_HEAP_MIN:-512m}
        HEAP_MAX=${POPFLEET_CASSANDRA_HEAP_MAX:-768m}
        ;;
    *) die "POPFLEET_CASSANDRA_TOPOLOGY must be loopback, netns or seed, not '$TOPOLOGY'" ;;
esac
for n in "${NODES[@]}"; do NS[$n]=${NS[$n]:-}; done
# Every node is a seed: with fixed tokens and auto_bootstrap off none of them streams, so all can start
# together, and any surviving node lets a restarted one back in.
SEEDS=$(for n in "${NODES[@]}"; do printf '%s:7000,' "${IP[$n]}"; done)
SEEDS=${SEEDS%,}

in_ns() { # node cmd... : run cmd in the node's network namespace (the host's for dc1)
    local n=$1
    shift
    if [ -n "${NS[$n]}" ]; then ip netns exec "${NS[$n]}" "$@"; else "$@"; fi
}

dc_ns() { # dc -> the namespace its nodes (and its pop3d and clients) live in; "" = the host
    local n
    for n in "${NODES[@]}"; do
        if [ "${DC[$n]}" = "$1" ]; then echo "${NS[$n]}"; return 0; fi
    done
    die "unknown datacenter '$1' (one of: $(printf '%s\n' "${DC[@]}" | sort -u | tr '\n' ' '))"
}

# ---------------------------------------------------------------------------------------------------------
# The namespace and the link (netns and seed); idempotent, and it reconnects a partitioned link.

net_up() {
    [ -n "$NETNS" ] || return 0
    command -v ip >/dev/null || apt_install iproute2
    if ! ip netns list | grep -qw "$NETNS"; then
        ip netns add "$NETNS" || die "cannot create network namespace $NETNS (needs root)"
    fi
    if ! ip link show "$VETH_HOST" >/dev/null 2>&1; then
        ip -n "$NETNS" link del "$VETH_NS" 2>/dev/null || true
        ip link add "$VETH_HOST" type veth peer name "$VETH_NS" netns "$NETNS" || die "cannot create veth $VETH_HOST"
        local n prefix=30
        [ "$TOPOLOGY" = seed ] && prefix=24
        for n in "${NODES[@]}"; do
            if [ -n "${NS[$n]}" ]; then
                ip -n "$NETNS" addr add "${IP[$n]}/$prefix" dev "$VETH_NS"
            else
                ip addr add "${IP[$n]}/$prefix" dev "$VETH_HOST"
            fi
        done
    fi
    ip -n "$NETNS" link set lo up
    ip -n "$NETNS" link set "$VETH_NS" up
    ip link set "$VETH_HOST" up
    # While the link is down (partition) its connected route is gone, and the host's default route
    # would carry dc2's addresses off the machine (where a sandbox proxy may even accept them). This
    # route, below the connected one, makes them unreachable instead.
    ip route replace unreachable "$LINK_NET" metric 4242
    link_delay_up
}

net_down() {
    [ -n "$NETNS" ] || return 0
    link_delay_down
    ip route del unreachable "$LINK_NET" metric 4242 2>/dev/null || true
    ip link del "$VETH_HOST" 2>/dev/null || true
    ip netns del "$NETNS" 2>/dev/null || true
}

cmd_partition() {
    [ -n "$NETNS" ] || die "partition needs POPFLEET_CASSANDRA_TOPOLOGY=netns or seed"
    # Admin-down on the host end: the host keeps its addresses (their local routes stay), loses the
    # route to the other DC; the namespace end loses carrier and its packets to dc1 are dropped.
    ip link set "$VETH_HOST" down
    log "partitioned: $VETH_HOST down (dc1 on the host | dc2 in $NETNS)"
}

cmd_heal() {
    [ -n "$NETNS" ] || die "heal needs POPFLEET_CASSANDRA_TOPOLOGY=netns or seed"
    ip link set "$VETH_HOST" up
    # On seed, healed means carrying packets at the configured delay: a delayer that died during the
    # cut would leave the link dead (fail-closed) behind a "healed".
    if [ "$TOPOLOGY" = seed ]; then
        local line
        line=$(link_status) || die "the link does not carry after the heal: $line"
        log "healed: $VETH_HOST up; $line"
    else
        log "healed: $VETH_HOST up"
    fi
}

cmd_exec() { # dc cmd...: run cmd on that DC's side of the link
    [ $# -ge 2 ] || die "usage: $0 exec dc1|dc2 CMD [ARGS...]"
    local ns
    ns=$(dc_ns "$1")
    shift
    if [ -n "$ns" ]; then exec ip netns exec "$ns" "$@"; else exec "$@"; fi
}

# ---------------------------------------------------------------------------------------------------------
# The link delay (seed only): one popfleet-linkdelay per side, fed by an NFQUEUE rule on what that side
# receives from the link, so each direction is delayed once. On the way in, not out: a packet held
# before it leaves still counts against its socket's small-queue budget, and TCP then crawls (about
# 0.2 MB/s at 30 ms, measured by e2e/linkdelay/selftest); once across the veth it is detached.

linkdelay_bin() {
    local bin=${POPFLEET_LINKDELAY_BIN:-${CARGO_TARGET_DIR:-$CACHE/target}/release/popfleet-linkdelay}
    if [ ! -x "$bin" ]; then
        log "building popfleet-linkdelay (release) into ${CARGO_TARGET_DIR:-$CACHE/target}"
        (cd "$HERE/.." && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target} \
            nice -n "$NICE" cargo build -q --release -p popfleet-linkdelay) >&2 || die "cannot build popfleet-linkdelay"
    fi
    echo "$bin"
}

delayer_pid() { # side (host|ns) [ms]: the pid of that side's running delayer (at that delay)
    local f=$STATE/linkdelay-$1.pid pid want="popfleet-linkdelay --queue $LINK_QUEUE --delay-ms ${2:-}"
    [ -f "$f" ] && pid=$(cat "$f") && [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    # The exe too: until the wrapper (bash, ip netns exec) has exec'd, its cmdline names the delayer.
    [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$(readlink -f "$(linkdelay_bin)")" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$want" && echo "$pid"
}

link_rule() { # -A|-D|-C side
    local ns=() dev=$VETH_HOST
    [ "$2" = ns ] && ns=(ip netns exec "$NETNS") dev=$VETH_NS
    "${ns[@]}" iptables -w -t mangle "$1" PREROUTING -i "$dev" -m comment --comment popfleet-seed-link \
        -j NFQUEUE --queue-num "$LINK_QUEUE"
}

start_delayer() { # side ms: start it and wait until it has bound the queue (its first log line)
    local side=$1 ms=$2 ns=() log=$STATE/linkdelay-$1.log before
    [ "$side" = ns ] && ns=(ip netns exec "$NETNS")
    touch "$log"
    before=$(wc -c <"$log")
    # shellcheck disable=SC2016  # $$ and $1 are for the inner bash
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$STATE/linkdelay-$side.pid" \
        "${ns[@]}" "$(linkdelay_bin)" --queue "$LINK_QUEUE" --delay-ms "$ms" \
        </dev/null >>"$log" 2>&1 9>&- &
    for _ in $(seq 100); do
        tail -c +$((before + 1)) "$log" | grep -q "^popfleet-linkdelay: queue $LINK_QUEUE, delay $ms ms" && break
        sleep 0.1
    done
    sleep 0.2   # a bind failure is logged right after the start line
    delayer_pid "$side" "$ms" >/dev/null \
        || die "popfleet-linkdelay ($side) did not start: $(tail -c +$((before + 1)) "$log" | tail -n 3)"
}

stop_delayer() { # side
    local pid
    if pid=$(delayer_pid "$1"); then
        kill -TERM "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    fi
    rm -f "$STATE/linkdelay-$1.pid"
}

link_delay_up() {
    [ "$TOPOLOGY" = seed ] || return 0
    local side ms=${POPFLEET_LINK_DELAY_MS:-1}
    command -v iptables >/dev/null || apt_install iptables
    mkdir -p "$STATE"
    linkdelay_bin >/dev/null
    # Both sides every time: a delayer at another delay is replaced and a missing rule is added, so
    # the link is never left asymmetric or undelayed by an earlier step that failed half-way.
    for side in host ns; do
        delayer_pid "$side" "$ms" >/dev/null || { stop_delayer "$side"; start_delayer "$side" "$ms"; }
        link_rule -C "$side" 2>/dev/null || link_rule -A "$side"
    done
    echo "$ms" >"$STATE/link-delay-ms"
    log "link $VETH_HOST <-> $VETH_NS: ${ms} ms each way"
}

link_delay_down() {
    [ "$TOPOLOGY" = seed ] || return 0
    local side
    for side in host ns; do
        while link_rule -D "$side" 2>/dev/null; do :; done
        stop_delayer "$side"
    done
    rm -f "$STATE/link-delay-ms"
}

cmd_link_delay() { # ms: change the delay of a running seed cluster's link
    [ "$TOPOLOGY" = seed ] || die "link-delay needs POPFLEET_CASSANDRA_TOPOLOGY=seed"
    [[ ${1:-} =~ ^[0-9]+$ ]] || die "usage: $0 link-delay MS"
    POPFLEET_LINK_DELAY_MS=$1
    lock
    link_delay_up
}

link_status() { # one line: the configured delay, the delayers, the RTT measured across the link
    [ "$TOPOLOGY" = seed ] || return 0
    local side up=yes far rtt ms
    ms=$(cat "$STATE/link-delay-ms" 2>/dev/null || echo 0)
    for side in host ns; do delayer_pid "$side" "$ms" >/dev/null || up=no; done
    far=${IP[${NODES[-1]}]}
    # -U: time the full round trip (the kernel's receive stamp comes before PREROUTING's delay).
    rtt=$(ping -U -c 3 -i 0.2 -q -W 2 "$far" 2>/dev/null | awk -F/ '/^rtt/ { print $5 }')
    echo "link dc1<->dc2 delay=${ms}ms delayers=$up rtt_avg=${rtt:-none}ms"
    # Never a silently fast link: the RTT must carry both one-way delays.
    [ "$up" = yes ] && [ -n "$rtt" ] && awk -v r="$rtt" -v d="$ms" 'BEGIN { exit !(r >= 2 * d * 0.9) }' 
}
