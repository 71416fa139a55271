# shellcheck shell=bash
# The commit log mode of e2e/cassandra's nodes (POPFLEET_CASSANDRA_COMMITLOG), sourced by it: the mode
# asked for, the mode a running node has, and `up` restarting nodes whose mode differs.

# The commit log mode (POPFLEET_CASSANDRA_COMMITLOG) as "sync period skip_sync" for render (period "-":
# none; Cassandra refuses a commitlog_sync_period with batch sync).
commitlog_mode() {
    case ${POPFLEET_CASSANDRA_COMMITLOG:-batch-nosync} in
        batch-nosync) echo "batch - true" ;;
        batch) echo "batch - false" ;;
        # Cassandra's defaults: periodic, 10 s (cassandra.yaml of the distribution)
        periodic) echo "periodic 10000ms false" ;;
        *) die "POPFLEET_CASSANDRA_COMMITLOG='${POPFLEET_CASSANDRA_COMMITLOG}': use batch-nosync, batch or periodic" ;;
    esac
}

# The commit log mode a running node was started with, in commitlog_mode's form (from its conf/).
running_commitlog() { # node
    local d sync period skip
    d=$(node_dir "$1")
    sync=$(awk -F': *' '/^commitlog_sync:/ { print $2 }' "$d/conf/cassandra.yaml" 2>/dev/null)
    period=$(awk -F': *' '/^commitlog_sync_period:/ { print $2 }' "$d/conf/cassandra.yaml" 2>/dev/null)
    skip=$(sed -n 's/^-Dcassandra.skip_sync=//p' "$d/conf/jvm.options" 2>/dev/null)
    echo "$sync ${period:--} ${skip:-false}"
}

# Running nodes started with another commit log mode than the one asked for now are stopped, so `up`
# starts them again in that mode: a benchmark of production's periodic sync followed by the fault
# tests (which need batch sync) each get what they ask for, never the other's cluster.
restart_changed_commitlog() {
    local n want have changed=()
    want=$(commitlog_mode)
    [ -n "$want" ] || exit 1
    for n in "${NODES[@]}"; do
        node_pid "$n" >/dev/null || continue
        have=$(running_commitlog "$n")
        if [ "$have" != "$want" ]; then
            log "$n: running with commit log '$have', asked for '$want' (POPFLEET_CASSANDRA_COMMITLOG=${POPFLEET_CASSANDRA_COMMITLOG:-batch-nosync}): restarting it"
            changed+=("$n")
        fi
    done
    [ "${#changed[@]}" = 0 ] || stop_nodes "${changed[@]}"
}
