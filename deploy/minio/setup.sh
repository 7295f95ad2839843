#!/bin/sh
# Gives each Terra service its own MinIO user, limited by its policy: the policies beside
# this script (terra-<identity>.json, rendered from contracts/storage_access.py by
# `terra storage-credentials policies --out deploy/minio`; a test fails when they are
# stale), the keys from `terra storage-credentials init --dir deploy/secrets/s3`.
#
#   sh deploy/minio/setup.sh ALIAS KEYS_DIR
#
# ALIAS is an `mc` alias signed in with MinIO's root user (`mc alias set ALIAS URL ROOT_KEY
# ROOT_SECRET`); compose's `storage-users` job runs it that way. Run it again after
# upgrading Terra (a policy is replaced by its new version) or after changing a key.
#
# Written from MinIO's documentation (`mc admin user add`, `mc admin policy create`,
# `mc admin policy attach`) and never run: there is no MinIO on the development machines.
# The same grants were checked on SeaweedFS (tests/integration/test_storage_access.py).
set -eu

alias="$1"
keys="$2"
case "$0" in */*) policies="${0%/*}" ;; *) policies=. ;; esac

# The value of `"name": "value"` in a key file (one line of JSON, as `terra
# storage-credentials init` writes it), with the shell alone: the mc image may lack sed.
field() {
    json=""
    read -r json < "$1" || [ -n "$json" ]
    rest="${json#*\"$2\": \"}"
    [ "$rest" != "$json" ] && printf '%s' "${rest%%\"*}"
}

for policy in "$policies"/terra-*.json; do
    name="${policy##*/}"
    name="${name%.json}"                          # terra-<identity>
    identity="${name#terra-}"
    access="$(field "$keys/$identity.json" access_key || true)"
    secret="$(field "$keys/$identity.json" secret_key || true)"
    if [ -z "$access" ] || [ -z "$secret" ]; then
        echo "no key for $identity in $keys/$identity.json" >&2
        exit 1
    fi
    mc admin user add "$alias" "$access" "$secret"       # sets the secret of an existing one
    mc admin policy create "$alias" "$name" "$policy"     # replaces an existing one
    # Attaching a policy the user already has is reported as an error: not a failure here.
    mc admin policy attach "$alias" "$name" --user "$access" \
        || echo "(policy $name: kept as attached)"
    echo "$identity: user $access, policy $name"
done
