# e2e/kube.d/build.sh: building the control plane's binaries from Go modules, cached under $CACHE.
# Sourced by e2e/kube, which sets the paths and versions (CACHE, BIN, SRC, GODIR, BUILD_NICE, *_VERSION)
# and the helpers it uses (log, die, now, elapsed).
# shellcheck shell=bash
# ---------------------------------------------------------------------------------------------------------
# Build. Everything Go writes goes under $CACHE: the work tree stays clean and a fresh clone reuses it.

go_env() {
    # Non-login shells (CI) may lack the Go install dir on PATH.
    command -v go >/dev/null || { [ -x /usr/local/go/bin/go ] && PATH=/usr/local/go/bin:$PATH; }
    command -v go >/dev/null || die "need Go (>= 1.26) on PATH"
    export GOMODCACHE=$GODIR/mod GOCACHE=$GODIR/build
    # local toolchain only (no toolchain download); static binaries; -modcacherw so `rm -rf $CACHE` works;
    # GOWORK=off so a go.work somewhere above the cache can't interfere.
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GO111MODULE=on
    export GOFLAGS="-mod=mod -modcacherw -buildvcs=false"
    mkdir -p "$GOMODCACHE" "$GOCACHE" "$BIN" "$SRC"
}

gobuild() { nice -n "$BUILD_NICE" go build -trimpath "$@"; }

# wrapper_module NAME TOOL@VERSION... : (re)generate $SRC/NAME/go.mod pinning the tools. For kubernetes, first
# add the staging replaces (read from the kubernetes go.mod that the proxy serves).
wrapper_module() {
    local name=$1 dir=$SRC/$1 want gomod m
    shift
    want="$*"
    if [ -f "$dir/.ready" ] && [ "$(cat "$dir/.ready")" = "$want" ]; then
        return
    fi
    log "generating wrapper module $dir for $want"
    rm -rf "$dir"
    mkdir -p "$dir"
    (
        cd "$dir"
        go mod init "popfleet.local/e2e-$name" >/dev/null 2>&1
        if [ "$name" = kube ]; then
            gomod=$(go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" | jq -r .GoMod)
            [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@v$KUBE_VERSION"
            # staging modules are the k8s.io/* requirements at v0.0.0; each has a published v0.<minor>.<patch>.
            for m in $(awk '$1 ~ /^k8s\.io\// && $2 == "v0.0.0" { print $1 }' "$gomod"); do
                go mod edit -replace="$m=$m@v0.${KUBE_VERSION#1.}"
            done
        fi
        # -tool adds a `tool` line: the module requires exactly what building that command needs.
        go get -tool "$@"
    ) >"$KDIR/go-get-$name.log" 2>&1 || { tail -n 30 "$KDIR/go-get-$name.log" >&2; die "could not resolve $want"; }
    echo "$want" >"$dir/.ready"
}

# build_one NAME DIR PACKAGE LDFLAGS STAMP: build into $BIN/NAME unless its stamp says it is current.
build_one() {
    local name=$1 dir=$2 pkg=$3 ldflags=$4 stamp=$5 t0
    if [ -x "$BIN/$name" ] && [ "$(cat "$BIN/.$name.stamp" 2>/dev/null)" = "$stamp" ]; then
        return
    fi
    t0=$(now)
    log "building $name ($stamp) ..."
    (cd "$dir" && gobuild -ldflags "$ldflags" -o "$BIN/.$name.tmp" "$pkg") >&2 || die "building $name failed"
    mv -f "$BIN/.$name.tmp" "$BIN/$name"
    echo "$stamp" >"$BIN/.$name.stamp"
    log "built $name in $(elapsed "$t0")s"
}

kube_ldflags() {
    # What kubernetes' hack/lib/version.sh sets: without it the binaries report v0.0.0-master+$Format:%H$,
    # which breaks version checks (Helm kubeVersion, kube-rs/k8s-openapi compatibility, kubectl skew).
    local p v=v$KUBE_VERSION out="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        out+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$KUBE_MINOR"
        out+=" -X $p.gitTreeState=clean -X $p.buildDate=$BUILD_DATE"
    done
    echo "$out"
}

# helm_ldflags VERSION
helm_ldflags() {
    # Helm's default version string is "v3.x"/"v4.x"; report the real one.
    local v=$1 m=helm.sh/helm/v${1%%.*}
    local out="-s -w -X $m/internal/version.version=v$v -X $m/internal/version.gitTreeState=clean"
    # Helm 3's built-in cluster is v1.20, which fails charts that declare `kubeVersion: >=1.2x` in `helm
    # template`/`lint`: set ours. Helm 4 derives it from the client-go it was built with (1.37), no flag.
    if [ "${v%%.*}" = 3 ]; then
        out+=" -X $m/pkg/chartutil.k8sVersionMajor=1 -X $m/pkg/chartutil.k8sVersionMinor=$KUBE_MINOR"
        out+=" -X $m/pkg/lint/rules.k8sVersionMajor=1 -X $m/pkg/lint/rules.k8sVersionMinor=$KUBE_MINOR"
    fi
    echo "$out"
}

# build_helm: every version of HELM_VERSIONS as bin/helm-<version> (one wrapper module each: Helm 3 and 4
# pin different k8s.io libraries), and bin/helm as a copy of the first.
build_helm() {
    local v stamp default=${HELM_VERSIONS[0]}
    for v in "${HELM_VERSIONS[@]}"; do
        wrapper_module "helm-v$v" "helm.sh/helm/v${v%%.*}/cmd/helm@v$v"
        build_one "helm-$v" "$SRC/helm-v$v" "helm.sh/helm/v${v%%.*}/cmd/helm" "$(helm_ldflags "$v")" "helm v$v k8s 1.$KUBE_MINOR"
    done
    stamp="helm v$default k8s 1.$KUBE_MINOR"
    if [ ! -x "$BIN/helm" ] || [ "$(cat "$BIN/.helm.stamp" 2>/dev/null)" != "$stamp" ]; then
        cp -f "$BIN/helm-$default" "$BIN/.helm.tmp" && mv -f "$BIN/.helm.tmp" "$BIN/helm"
        echo "$stamp" >"$BIN/.helm.stamp"
    fi
}

# The binaries `up` needs, and whether they are all built.
wanted_bins() {
    echo etcd kube-apiserver kubectl helm "${HELM_VERSIONS[@]/#/helm-}"
    [ "$WITH_KCM" = 1 ] && echo kube-controller-manager
    return 0
}

all_built() {
    local b
    for b in $(wanted_bins); do [ -x "$BIN/$b" ] || return 1; done
}

cmd_build() {
    local t0 kube_tools
    t0=$(now)
    go_env
    # Two builds at once would race on the same temp files; fd 8 (closed for the servers, see start_comp).
    exec 8>"$KDIR/.build.lock"
    flock -w 3600 8 || die "could not lock $KDIR/.build.lock"
    BUILD_DATE=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    # The controller-manager is always in the wrapper module (same module, so no extra download), so that
    # adding --with-controller-manager later does not regenerate it; it is only compiled when asked for.
    kube_tools=("k8s.io/kubernetes/cmd/kube-apiserver@v$KUBE_VERSION" "k8s.io/kubernetes/cmd/kubectl@v$KUBE_VERSION"
        "k8s.io/kubernetes/cmd/kube-controller-manager@v$KUBE_VERSION")

    # Three separate wrapper modules: helm (k8s.io libs v0.37), etcd (its own grpc/otel) and kubernetes
    # would otherwise be forced onto one version of their shared dependencies.
    wrapper_module etcd "go.etcd.io/etcd/server/v3@v$ETCD_VERSION"
    build_one etcd "$SRC/etcd" go.etcd.io/etcd/server/v3 "-s -w" "etcd v$ETCD_VERSION"

    wrapper_module kube "${kube_tools[@]}"
    build_one kube-apiserver "$SRC/kube" k8s.io/kubernetes/cmd/kube-apiserver "$(kube_ldflags)" "kube-apiserver v$KUBE_VERSION"
    build_one kubectl "$SRC/kube" k8s.io/kubernetes/cmd/kubectl "$(kube_ldflags)" "kubectl v$KUBE_VERSION"
    if [ "$WITH_KCM" = 1 ]; then
        build_one kube-controller-manager "$SRC/kube" k8s.io/kubernetes/cmd/kube-controller-manager \
            "$(kube_ldflags)" "kube-controller-manager v$KUBE_VERSION"
    fi

    build_helm

    log "build done in $(elapsed "$t0")s: $BIN has $(cd "$BIN" && echo *)"
}
