#!/usr/bin/env bash
# Cross-checks the wasmstub findings (results/findings.toml) under a real, private containerd (default: the host's
# 1.6.20), side by side with the Go runc v2 shim. Root only. Usage: results/repro/wasmstub-under-containerd.sh [PAYLOAD]
# PAYLOAD: the static payload binary (default: the one harness/build.rs built under target/).
set -uo pipefail
payload=${1:-$(find "$(dirname "$0")/../../target" -path '*payload-target*' -name payload -type f -perm -u+x | head -1)}
[ -x "$payload" ] || { echo "no payload binary (cargo build -p shimcompat first, or pass its path)"; exit 2; }
for tool in containerd ctr curl xxd ss tar sha256sum; do command -v "$tool" >/dev/null || { echo "needs $tool"; exit 2; }; done
d=$(mktemp -d /tmp/wsrepro.XXXXXX)
sockets_before=$(ls /run/containerd/s 2>/dev/null)
mkdir -p "$d/rootfs" && cp "$payload" "$d/rootfs/payload"
cat >"$d/config.toml" <<EOT
version = 2
root = "$d/root"
state = "$d/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/c.sock"
[ttrpc]
  address = "$d/c.sock.ttrpc"
[debug]
  address = "$d/debug.sock"
EOT
PATH="$d/bin:$PATH" containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
cd_pid=$!
CTR=(ctr --address "$d/c.sock" --namespace repro)
ctr() { command "${CTR[@]}" "$@"; }
for _ in $(seq 50); do [ -S "$d/c.sock" ] && break; sleep 0.1; done
# grpc METHOD HEX: one unary call to containerd's gRPC API (curl over HTTP/2; HEX is the protobuf request), prints
# the status and message containerd answered. Used where ctr has no command for a step (Create without Start).
grpc() {
  local hex=$2 t
  t=$(mktemp -d "$d/grpc.XXXX")
  { printf '\x00'; printf "%08x" $(( ${#hex} / 2 )) | xxd -r -p; printf "%s" "$hex" | xxd -r -p; } >"$t/req"
  curl -s --http2-prior-knowledge --unix-socket "$d/c.sock" -H 'content-type: application/grpc' -H 'te: trailers' \
    -H "containerd-namespace: repro" --data-binary @"$t/req" -D "$t/hdr" -o /dev/null "http://localhost$1"
  grep -iE '^grpc-(status|message)' "$t/hdr" | tr -d '\r' | tr '\n' ' '
}
# pbid ID [MORE]: a request whose field 1 (container_id) is ID, followed by the hex of MORE fields.
pbid() { printf '0a%02x%s%s' "${#1}" "$(printf %s "$1" | xxd -p | tr -d '\n')" "${2:-}"; }
tasks=/containerd.services.tasks.v1.Tasks
# The Go runc v2 shim under a name other than io.containerd.runc.v2, for which ctr sends runtimeoptions.v1.Options.
mkdir -p "$d/bin" && ln -s "$(command -v containerd-shim-runc-v2)" "$d/bin/containerd-shim-runcalias-v2"
: >"$d/empty.toml"
printf '#!/bin/sh\necho "logger started for $CONTAINER_ID"\ncat <&3 5>&- >"%s/logger.out" &\nexec 5>&-\nwait\n' "$d" >"$d/logger"
chmod +x "$d/logger"
# An OCI image holding /payload (one uncompressed layer), for the step that needs a snapshot (an overlay rootfs).
img() {
  local o=$d/oci l c m
  mkdir -p "$o/blobs/sha256"
  tar -C "$d/rootfs" --owner=0 --group=0 -cf "$d/layer.tar" payload
  l=$(sha256sum "$d/layer.tar" | cut -d' ' -f1); mv "$d/layer.tar" "$o/blobs/sha256/$l"
  printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$l" >"$d/c.json"
  c=$(sha256sum "$d/c.json" | cut -d' ' -f1); mv "$d/c.json" "$o/blobs/sha256/$c"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
    "$c" "$(stat -c %s "$o/blobs/sha256/$c")" "$l" "$(stat -c %s "$o/blobs/sha256/$l")" >"$d/m.json"
  m=$(sha256sum "$d/m.json" | cut -d' ' -f1); mv "$d/m.json" "$o/blobs/sha256/$m"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"io.containerd.image.name":"docker.io/shimcompat/repro:1"}}]}' \
    "$m" "$(stat -c %s "$o/blobs/sha256/$m")" >"$o/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$o/oci-layout"
  tar -C "$o" -cf "$d/image.tar" oci-layout index.json blobs
  ctr image import "$d/image.tar" >/dev/null
}
cleanup() {
  for id in $(ctr task ls -q 2>/dev/null); do ctr task kill -s KILL "$id" >/dev/null 2>&1; done
  sleep 0.5
  for id in $(ctr task ls -q 2>/dev/null); do ctr task delete -f "$id" >/dev/null 2>&1; done
  for id in $(ctr container ls -q 2>/dev/null); do ctr container delete "$id" >/dev/null 2>&1; done
  kill "$cd_pid" 2>/dev/null; wait "$cd_pid" 2>/dev/null
  pkill -KILL -f "payload (forever|sleep|cat)" 2>/dev/null; pkill -KILL -f -- "-namespace repro " 2>/dev/null
  umount -R "$d/state" 2>/dev/null; rm -rf "$d"
  # Sockets of shims killed here (a SIGKILLed shim cannot remove its own): new ones nobody listens on.
  listening=$(ss -xlH 2>/dev/null | awk '{print $5}')
  for s in $(ls /run/containerd/s 2>/dev/null); do
    grep -qx "$s" <<<"$sockets_before" && continue
    grep -q "/run/containerd/s/$s" <<<"$listening" || rm -f "/run/containerd/s/$s"
  done
}
trap cleanup EXIT
trap "exit 130" INT TERM
img
for rt in io.containerd.runc.v2 io.containerd.wasmstub.v1; do
  echo "=== $rt ($(containerd --version | awk '{print $3}'))"
  echo "--- environment (lifecycle::init_gets_process_env): ctr run --env PROBE=set"
  ctr run --rm --runtime "$rt" --env PROBE=set --rootfs "$d/rootfs" "env-${rt##*.}" /payload env PROBE env TTRPC_ADDRESS 2>&1 | sed 's/^/    /'
  id="pid-${rt//./-}"
  ctr run -d --runtime "$rt" --rootfs "$d/rootfs" "$id" /payload forever >/dev/null 2>&1
  sleep 0.5
  echo "--- task pid (lifecycle::*pid*): ctr task ls, and the process actually running /payload"
  ctr task ls 2>&1 | grep "$id" | sed 's/^/    /'
  echo "    /payload forever pids: $(pgrep -f '^/payload forever' | tr '\n' ' ')"
  shim=$(pgrep -f -- "-id $id " | head -1)
  echo "--- SIGKILL of the shim (pid $shim), then containerd's cleanup (cli::delete_after_sigkill_*)"
  kill -9 "$shim"; sleep 2
  ctr task ls 2>&1 | grep "$id" | sed 's/^/    after: /'
  echo "    /payload forever still running: $(pgrep -f '^/payload forever' | tr '\n' ' ')"
  pkill -KILL -f '^/payload forever'; sleep 0.3
  ctr task delete -f "$id" >/dev/null 2>&1; ctr container delete "$id" >/dev/null 2>&1
  sfx=${rt//./-}
  echo "--- Kill of an exited task (kill::exited_task_not_found): ctr run -d ... exit 0, then ctr task kill"
  ctr run -d --runtime "$rt" --rootfs "$d/rootfs" "exited-$sfx" /payload exit 0 >/dev/null 2>&1; sleep 0.5
  ctr task kill -s KILL "exited-$sfx" 2>&1 | sed 's/^/    /'; echo "    ctr exit status: ${PIPESTATUS[0]}"
  ctr task delete "exited-$sfx" >/dev/null 2>&1; ctr container delete "exited-$sfx" >/dev/null 2>&1
  echo "--- created task, pending Wait, Kill, Delete (kill::created_task, wait::created_blocks_until_killed): Tasks API"
  id="created-$sfx"
  ctr container create --runtime "$rt" --rootfs "$d/rootfs" "$id" /payload forever
  echo "    Create: $(grpc $tasks/Create "$(pbid "$id")")"
  echo "    ctr task ls: $(ctr task ls | grep "$id" | tr -s ' ')   (running process of the created container: $(pgrep -f -- '^/payload forever' | tr '\n' ' ')$(pgrep -P "$(pgrep -f -- "-id $id " | head -1)" 2>/dev/null | tr '\n' ' '))"
  ( echo "    Wait (pending since Create) returned: $(grpc $tasks/Wait "$(pbid "$id")")" ) &
  waiter=$!; sleep 0.5
  echo "    Kill SIGKILL: $(grpc $tasks/Kill "$(pbid "$id" 1809)")"; sleep 1
  echo "    Delete: $(grpc $tasks/Delete "$(pbid "$id")")"; sleep 4; wait "$waiter"
  echo "    shim processes 4 s after Delete: $(pgrep -f -- "-id $id " | tr '\n' ' ')"
  pkill -KILL -f -- "-id $id "; ctr container delete "$id" >/dev/null 2>&1
  echo "--- stdin closed (io::stdin_*: CloseIO): (sleep 1; echo hi) | ctr run ... cat (ctr attaches stdin and sends CloseIO at its EOF; 10 s limit)"
  (sleep 1; echo hi) | timeout -s KILL 10 "${CTR[@]}" run --rm --runtime "$rt" --rootfs "$d/rootfs" "stdin-$sfx" /payload cat 2>&1 | sed 's/^/    /'
  echo "    ctr exit status: ${PIPESTATUS[1]} (137: cat still running after 10 s, ctr killed)"
  ctr task kill -s KILL "stdin-$sfx" >/dev/null 2>&1; sleep 0.5
  ctr task delete -f "stdin-$sfx" >/dev/null 2>&1; ctr container delete "stdin-$sfx" >/dev/null 2>&1
  echo "--- overlay rootfs from an image snapshot (rootfs::unmounted_by_delete): mounts under the task's bundle"
  ctr run -d --runtime "$rt" docker.io/shimcompat/repro:1 "img-$sfx" /payload forever >/dev/null 2>&1; sleep 0.5
  echo "    while running: $(grep -c "$d/state/.*/img-$sfx/rootfs" /proc/self/mountinfo) mount(s) at the bundle's rootfs"
  ctr task kill -s KILL "img-$sfx" >/dev/null 2>&1; sleep 0.5
  ctr task delete "img-$sfx" 2>&1 | sed 's/^/    task delete: /'
  echo "    after ctr task delete: $(grep -c "$d/state/.*/img-$sfx/rootfs" /proc/self/mountinfo) mount(s); bundle dir: $(ls -d "$d"/state/*/repro/img-"$sfx" 2>/dev/null || echo gone)"
  ctr container delete "img-$sfx" >/dev/null 2>&1
  echo "--- log URIs (io::binary_logger, io::file_uri_output): ctr run --log-uri binary://... and file://..."
  rm -f "$d/logger.out" "$d/file.out"
  timeout -s KILL 15 "${CTR[@]}" run --rm --runtime "$rt" --log-uri "binary://$d/logger" --rootfs "$d/rootfs" "blog-$sfx" /payload echo via-logger 2>&1 | sed 's/^/    /'
  echo "    ctr exit status: ${PIPESTATUS[0]}; logger got: $(cat "$d/logger.out" 2>/dev/null || echo '(nothing: no logger.out)')"
  timeout -s KILL 15 "${CTR[@]}" run --rm --runtime "$rt" --log-uri "file://$d/file.out" --rootfs "$d/rootfs" "flog-$sfx" /payload echo via-file 2>&1 | sed 's/^/    /'
  echo "    ctr exit status: ${PIPESTATUS[0]}; file got: $(cat "$d/file.out" 2>/dev/null || echo '(no such file)')"
done
echo "--- runtimeoptions.v1.Options with an empty config file (options::runtime_options_accepted): ctr --runtime-config-path"
for rt in io.containerd.runcalias.v2 io.containerd.wasmstub.v1; do
  echo "    $rt:"
  timeout -s KILL 15 "${CTR[@]}" run --rm --runtime "$rt" --runtime-config-path "$d/empty.toml" --rootfs "$d/rootfs" "opts-${rt//./-}" /payload echo ok 2>&1 | sed 's/^/      /'
  echo "      ctr exit status: ${PIPESTATUS[0]}"
  ctr container delete "opts-${rt//./-}" >/dev/null 2>&1
done
echo "--- state left under /run/containerd/wasmstub/repro: $(ls /run/containerd/wasmstub/repro 2>/dev/null | tr '\n' ' ')"
rm -rf /run/containerd/wasmstub/repro
rmdir /run/containerd/runc/repro 2>/dev/null
