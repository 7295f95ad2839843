#!/bin/sh
# TLS for the NATS cluster: a private CA, and a key and certificate per node.
#
#   sh deploy/nats/make-certs.sh [DIR] [NODE ...]     (defaults: deploy/secrets/nats-tls, nats-1 nats-2 nats-3)
#
# Writes DIR/ca.pem and DIR/ca.key (the CA; made once, kept when present), and for each
# node DIR/<node>.pem and DIR/<node>.key. A node's certificate names the node (DNS:<node>,
# the compose service name that clients and the other nodes dial), localhost and
# 127.0.0.1 (the operator's `nats` CLI on the Docker host); EXTRA_SANS adds more, e.g.
# EXTRA_SANS=DNS:nats.example.com. It is valid for serverAuth and clientAuth: a node is a
# TLS server to clients and to the other nodes, and a TLS client of the nodes it routes to
# (routes verify each other's certificate). Rerun with a node's name (and the same
# EXTRA_SANS) to renew its key and certificate; the servers load them on a reload (SIGHUP).
#
# Use your own PKI instead if you have one: the cluster needs exactly these files.
# Keep ca.key off the Docker host once the certificates are made (nothing reads it).
set -eu

dir=${1:-deploy/secrets/nats-tls}
[ $# -gt 0 ] && shift
nodes=${*:-nats-1 nats-2 nats-3}
days=${DAYS:-825}

mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
        -days 3650 -subj "/CN=Terra NATS CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    echo "made  $dir/ca.pem (and ca.key)"
fi

for node in $nodes; do
    sans="DNS:$node,DNS:localhost,IP:127.0.0.1${EXTRA_SANS:+,$EXTRA_SANS}"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
        -subj "/CN=$node" -keyout "$dir/$node.key" -out "$dir/$node.csr" 2>/dev/null
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=$sans" > "$dir/$node.ext"
    openssl x509 -req -sha256 -days "$days" -in "$dir/$node.csr" -extfile "$dir/$node.ext" \
        -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -out "$dir/$node.pem" 2>/dev/null
    rm -f "$dir/$node.csr" "$dir/$node.ext"
    echo "made  $dir/$node.pem (and $node.key): $sans"
done

# Certificates are public; the services (uid 10001 in the images) read the CA.
chmod 0644 "$dir"/*.pem
