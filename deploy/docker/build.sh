#!/bin/sh
# Builds the images postdb/pcs:dev and postdb/pcsnode:dev FROM scratch, from static binaries
# made here (CGO_ENABLED=0); no image is pulled. Run from anywhere in the repository.
set -eu
cd "$(dirname "$0")"
root=$(cd ../.. && pwd)
mkdir -p bin
(cd "$root" && CGO_ENABLED=0 go build -trimpath -o deploy/docker/bin/ ./cmd/pcs ./cmd/pcsnode ./cmd/pcsctl)
docker build -q -t postdb/pcs:dev -f Dockerfile.pcs . >/dev/null
docker build -q -t postdb/pcsnode:dev -f Dockerfile.pcsnode . >/dev/null
echo "built postdb/pcs:dev and postdb/pcsnode:dev"
