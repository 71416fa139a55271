# e2e/cassandra.d/tls.sh: the test CA and node/client certificates, sourced by e2e/cassandra (which sets
# TLS_DIR, NODES and the helpers log, die, apt_install and node_pid).
# shellcheck shell=bash

# The nodes accept TLS and plaintext on 9042 (client_encryption_options.optional): the suites talk
# plaintext, the TLS tests talk TLS to the same cluster. TLS clients must show a certificate of this
# CA (require_client_auth). One node certificate names every address any topology uses (loopback,
# netns, seed: cassandra.d/topology.sh) and the DNS name cassandra.popfleet.test (for clients that
# check a fixed name). Made once and kept while the names are these; a set made for other names is
# made again, but not under running nodes, which hold the old one.
TLS_SANS=DNS:cassandra.popfleet.test,IP:127.0.0.1,IP:127.0.0.2,IP:10.213.0.1,IP:10.213.0.2
TLS_SANS+=,IP:10.214.0.1,IP:10.214.0.2,IP:10.214.0.3,IP:10.214.0.11,IP:10.214.0.12,IP:10.214.0.13
ensure_tls() {
    local d=$TLS_DIR tmp n
    if [ -f "$d/.complete" ]; then
        [ "$(cat "$d/.complete")" = "$TLS_SANS" ] && return
        for n in "${NODES[@]}"; do
            if node_pid "$n" >/dev/null; then
                log "the test certificates in $d predate the names they need now; restart the cluster (down, up) to make them again"
                return
            fi
        done
    fi
    command -v openssl >/dev/null || apt_install openssl || die "need openssl"
    tmp=$(mktemp -d "$d.XXXXXX")
    (
        cd "$tmp"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=popfleet test Cassandra CA" -keyout ca.key -out ca.crt
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=cassandra.popfleet.test" \
            -keyout node.key -out node.csr
        printf 'subjectAltName=%s\n' "$TLS_SANS" >node.ext
        openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile node.ext -out node.crt
        # Cassandra's PEM key store wants the key (unencrypted PKCS#8: this JDK lacks PBES2) and the
        # chain in one file.
        cat node.key node.crt ca.crt >node.pem
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=popfleet" \
            -keyout client.key -out client.csr
        printf 'extendedKeyUsage=clientAuth\n' >client.ext   # an extension makes it X.509 v3 (webpki wants v3)
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext -out client.crt
        # A second CA, for tests that a node certificate it did not sign is refused.
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
            -subj "/CN=some other CA" -keyout other-ca.key -out other-ca.crt
        rm -f ./*.csr ./*.srl ./*.ext
        printf '%s' "$TLS_SANS" >.complete
    ) >/dev/null 2>&1 || { rm -rf "$tmp"; die "making the test certificates failed"; }
    rm -rf "$d"
    mv "$tmp" "$d"
    log "test TLS certificates in $d"
}
