# e2e/kube.d/node-build.sh: building the node's binaries, sourced by node.sh (which sets the paths).
# shellcheck shell=bash

# Build: as e2e/kube, a generated wrapper module per tool set pins the commands with `tool` lines; kubernetes'
# staging modules are replaced by their published versions. One build at a time, niced, one CPU.

go_env() {
    command -v go >/dev/null || { [ -x /usr/local/go/bin/go ] && PATH=/usr/local/go/bin:$PATH; }
    command -v go >/dev/null || die "need Go (>= 1.26) on PATH"
    export GOMODCACHE=$GODIR/mod GOCACHE=$GODIR/build
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GO111MODULE=on GOMAXPROCS=${POPFLEET_BUILD_GOMAXPROCS:-1}
    export GOFLAGS="-mod=mod -modcacherw -buildvcs=false"
    mkdir -p "$GOMODCACHE" "$GOCACHE" "$BIN" "$SRC" "$CBIN" "$CDIR/src"
}

gobuild() { nice -n "$BUILD_NICE" go build -p 1 -trimpath "$@"; }

# wrapper_module DIR KIND TOOL@VERSION...
wrapper_module() {
    local dir=$1 kind=$2 want gomod m
    shift 2
    want="$*"
    if [ -f "$dir/.ready" ] && [ "$(cat "$dir/.ready")" = "$want" ]; then
        return
    fi
    log "generating wrapper module $dir for $want"
    rm -rf "$dir"
    mkdir -p "$dir"
    (
        cd "$dir"
        go mod init "popfleet.local/e2e-$(basename "$dir")" >/dev/null 2>&1
        if [ "$kind" = kube ]; then
            gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | jq -r .GoMod)
            [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@v$KUBE_VERSION"
            for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod"); do
                go mod edit -replace="$m=$m@v0.${KUBE_VERSION#1.}"
            done
        fi
        go get -tool "$@"
    ) >"$dir.go-get.log" 2>&1 || { tail -n 30 "$dir.go-get.log" >&2; die "could not resolve $want"; }
    echo "$want" >"$dir/.ready"
}

# build_one OUTDIR NAME DIR PACKAGE LDFLAGS STAMP [go build flags...]
build_one() {
    local out=$1 name=$2 dir=$3 pkg=$4 ldflags=$5 stamp=$6 t0
    shift 6
    if [ -x "$out/$name" ] && [ "$(cat "$out/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    t0=$(now)
    log "building $name ($stamp) ..."
    (cd "$dir" && gobuild "$@" -ldflags "$ldflags" -o "$out/.$name.tmp" "$pkg") >&2 || die "building $name failed"
    mv -f "$out/.$name.tmp" "$out/$name"
    echo "$stamp" >"$out/.$name.stamp"
    log "built $name in $(elapsed "$t0")s"
}

kube_ldflags() {
    local p v=v$KUBE_VERSION out="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        out+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$KUBE_MINOR"
        out+=" -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE"
    done
    echo "$out"
}

containerd_ldflags() {
    local p=github.com/containerd/containerd/v2/version
    echo "-s -w -X $p.Version=v$CONTAINERD_VERSION -X $p.Package=github.com/containerd/containerd/v2"
}

node_bins() { echo "$BIN/kubelet $BIN/kube-scheduler $BIN/kube-proxy $CBIN/containerd $CBIN/containerd-shim-runc-v2 $CBIN/ctr"; }

all_built() {
    local b
    for b in $(node_bins); do [ -x "$b" ] || return 1; done
}

cmd_build() {
    local t0 kube=k8s.io/kubernetes/cmd cd=github.com/containerd/containerd/v2/cmd
    t0=$(now)
    go_env
    # the same lock as e2e/kube's build: never two Go builds at once on this machine
    exec 8>"$KDIR/.build.lock"
    flock -w 3600 8 || die "could not lock $KDIR/.build.lock"
    BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    # A module of its own (not e2e/kube's `kube`): adding tools there would regenerate it under a running build.
    wrapper_module "$SRC/kube-node" kube "$kube/kubelet@v$KUBE_VERSION" "$kube/kube-scheduler@v$KUBE_VERSION" \
        "$kube/kube-proxy@v$KUBE_VERSION"
    build_one "$BIN" kubelet "$SRC/kube-node" $kube/kubelet "$(kube_ldflags)" "kubelet v$KUBE_VERSION"
    wrapper_module "$CDIR/src/containerd" containerd "$cd/containerd@v$CONTAINERD_VERSION" \
        "$cd/containerd-shim-runc-v2@v$CONTAINERD_VERSION" "$cd/ctr@v$CONTAINERD_VERSION"
    build_one "$CBIN" containerd "$CDIR/src/containerd" $cd/containerd "$(containerd_ldflags)" \
        "containerd v$CONTAINERD_VERSION" -tags "urfave_cli_no_docs osusergo netgo static_build"
    build_one "$CBIN" containerd-shim-runc-v2 "$CDIR/src/containerd" $cd/containerd-shim-runc-v2 \
        "$(containerd_ldflags)" "containerd-shim-runc-v2 v$CONTAINERD_VERSION" \
        -tags "urfave_cli_no_docs osusergo netgo static_build no_grpc"
    build_one "$CBIN" ctr "$CDIR/src/containerd" $cd/ctr "$(containerd_ldflags)" "ctr v$CONTAINERD_VERSION" \
        -tags "urfave_cli_no_docs osusergo netgo static_build"
    build_one "$BIN" kube-scheduler "$SRC/kube-node" $kube/kube-scheduler "$(kube_ldflags)" "kube-scheduler v$KUBE_VERSION"
    build_one "$BIN" kube-proxy "$SRC/kube-node" $kube/kube-proxy "$(kube_ldflags)" "kube-proxy v$KUBE_VERSION"
    log "build done in $(elapsed "$t0")s"
}
