#!/usr/bin/env bash
# Cross-checks the wasmstub findings (results/findings.toml) under a real, private containerd (default: the host's
# 1.6.20), side by side with the Go runc v2 shim. Root only. Usage: results/repro/wasmstub-under-containerd.sh [PAYLOAD]
# PAYLOAD: the static payload binary (default: the one harness/build.rs built under target/).
set -uo pipefail
payload=${1:-$(find "$(dirname "$0")/../../target" -path '*payload-target*' -name payload -type f -perm -u+x | head -1)}
[ -x "$payload" ] || { echo "no payload binary (cargo build -p shimcompat first, or pass its path)"; exit 2; }
d=$(mktemp -d /tmp/wsrepro.XXXXXX)
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
containerd --config "$d/config.toml" >"$d/containerd.log" 2>&1 &
cd_pid=$!
ctr() { command ctr --address "$d/c.sock" --namespace repro "$@"; }
for _ in $(seq 50); do [ -S "$d/c.sock" ] && break; sleep 0.1; done
cleanup() {
  for id in $(ctr task ls -q 2>/dev/null); do ctr task kill -s KILL "$id" >/dev/null 2>&1; done
  sleep 0.5
  for id in $(ctr task ls -q 2>/dev/null); do ctr task delete -f "$id" >/dev/null 2>&1; done
  for id in $(ctr container ls -q 2>/dev/null); do ctr container delete "$id" >/dev/null 2>&1; done
  kill "$cd_pid" 2>/dev/null; wait "$cd_pid" 2>/dev/null
  pkill -KILL -f "payload (forever|sleep)" 2>/dev/null
  umount -R "$d/state" 2>/dev/null; rm -rf "$d"
}
trap cleanup EXIT
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
done
echo "--- state left under /run/containerd/wasmstub/repro: $(ls /run/containerd/wasmstub/repro 2>/dev/null | tr '\n' ' ')"
rm -rf /run/containerd/wasmstub/repro
