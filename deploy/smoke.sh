#!/bin/sh
# The compose smoke test: build the images, bring up 3 PCS members and 3 data nodes, create a
# table, write and read rows, kill the PCS primary's container and a data node's, read every row
# again and write more. Exits non-zero on the first failure; always takes the cluster down.
# With --tls, the same with mutual TLS on every port (compose.tls.yaml; certificates made in
# deploy/tls), and a caller without a certificate is refused.
set -eu
cd "$(dirname "$0")"
project=pcssmoke$$
files="-f compose.yaml"
tls=
if [ "${1:-}" = "--tls" ]; then
	tls=1
	files="$files -f compose.tls.yaml"
fi
dc() { docker-compose -p "$project" $files "$@"; }
ctl() { dc run --rm -T ctl "$@" 2>/dev/null; }
# retry CMD...: a few tries, as a user would, while the cluster settles
retry() {
	i=0
	until "$@"; do
		i=$((i + 1))
		[ $i -lt 30 ] || { echo "smoke: gave up: $*" >&2; return 1; }
		sleep 1
	done
}
cleanup() { dc --profile tools down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
./docker/build.sh
if [ -n "$tls" ]; then
	rm -rf tls
	pcsctl=./docker/bin/pcsctl
	$pcsctl cert ca --dir tls >/dev/null
	for i in 1 2 3; do
		$pcsctl cert issue pcs-$i --dir tls --hosts pcs$i,localhost,127.0.0.1 >/dev/null
		$pcsctl cert issue node-$i --dir tls --hosts node$i >/dev/null
	done
	$pcsctl cert issue admin --dir tls >/dev/null
	$pcsctl cert issue app --dir tls >/dev/null
fi
dc up -d pcs1 pcs2 pcs3 node1 node2 node3 >/dev/null 2>&1
retry ctl health >/dev/null 2>&1
if [ -n "$tls" ]; then
	if dc run --rm -T --entrypoint /pcsctl ctl --endpoints pcs1:3379 --timeout 5s status >/dev/null 2>&1; then
		echo "smoke: a caller without a certificate was served" >&2
		exit 1
	fi
	echo "smoke: mutual TLS on; a caller without a certificate is refused"
fi
ctl table create smoke --columns id:int64 --hash-columns id --hash-partitions 4 --replicas 3 --isolation-label zone >/dev/null
retry ctl row put smoke 1 one >/dev/null 2>&1
for i in 2 3 4 5 6 7 8; do ctl row put smoke $i "v$i" >/dev/null; done
ctl row get smoke 1 | grep -q one
primary=$(ctl -o json status | tr ',' '\n' | grep -m1 '"primary": *"pcs' | sed 's/.*: *"\(pcs[0-9]\)".*/\1/')
[ -n "$primary" ] || { echo "smoke: no primary in status" >&2; exit 1; }
echo "smoke: rows written; killing the PCS primary $primary and data node node3"
docker kill "${project}_${primary}_1" >/dev/null
docker kill "${project}_node3_1" >/dev/null
for i in 2 3 4 5 6 7 8; do retry sh -c "docker-compose -p $project $files run --rm -T ctl row get smoke $i 2>/dev/null | grep -q v$i"; done
retry ctl row put smoke 9 after >/dev/null 2>&1
ctl row get smoke 9 | grep -q after
echo "smoke: PASS${tls:+ with mutual TLS} (every row read back after the PCS primary and a data node were killed; a new row written)"
