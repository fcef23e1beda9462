#!/usr/bin/env bash
# containerd with stasis as its own runtime type, io.containerd.stasis.v2:
# a private containerd (its own root, state and socket, so the system's is
# untouched) finds containerd-shim-stasis-v2 on its PATH. The script imports
# a busybox image built locally, runs a shell loop whose counter lives only
# in memory, checkpoints the container with `ctr container checkpoint
# --task`, deletes it, restores it into a new container (the count goes on),
# execs into it, and cleans up.
#
# For a system containerd, install both binaries on its PATH instead:
#   install -m 0755 target/x86_64-unknown-linux-gnu/release/{stasis,containerd-shim-stasis-v2} /usr/local/bin/
# and select the runtime with `ctr run --runtime io.containerd.stasis.v2 ...`,
# or for the CRI (Kubernetes RuntimeClass handler "stasis"), in
# /etc/containerd/config.toml (containerd 1.x, version = 2):
#   [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.stasis]
#     runtime_type = "io.containerd.stasis.v2"
#
# Needs root, containerd (apt-get install containerd), /bin/busybox, jq and
# a built workspace (make build).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-$PWD/target/x86_64-unknown-linux-gnu/release}
WORK=$(mktemp -d /tmp/stasis-ctrd-demo.XXXXXX)
SOCK=$WORK/containerd.sock
NS=stasis-demo
IMAGE=docker.io/library/stasis-demo-busybox:latest
CKPT=stasis.demo/checkpoint/counter:1
CTRD_PID=

ctr() {
  echo "+ ctr $*" >&2
  command ctr --address "$SOCK" --namespace "$NS" "$@"
}

cleanup() {
  for t in $(command ctr --address "$SOCK" --namespace "$NS" tasks ls -q 2>/dev/null); do
    command ctr --address "$SOCK" --namespace "$NS" tasks delete --force "$t" >/dev/null 2>&1 || true
  done
  for c in $(command ctr --address "$SOCK" --namespace "$NS" containers ls -q 2>/dev/null); do
    command ctr --address "$SOCK" --namespace "$NS" containers delete "$c" >/dev/null 2>&1 || true
  done
  if [ -n "$CTRD_PID" ]; then kill "$CTRD_PID" 2>/dev/null; wait "$CTRD_PID" 2>/dev/null || true; fi
  grep -o " $WORK[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# 1. A private containerd: no CRI, everything under $WORK.
mkdir -p "$WORK"/{root,state,opt,xdg}
cat > "$WORK/config.toml" <<TOML
version = 2
root = "$WORK/root"
state = "$WORK/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/opt"
TOML
# STASIS_SHIM_ROOT: the shim's --root for stasis (default /run/containerd/stasis).
PATH=$BIN:$PATH XDG_RUNTIME_DIR=$WORK/xdg STASIS_SHIM_ROOT=$WORK/stasis-root containerd --config "$WORK/config.toml" >"$WORK/containerd.log" 2>&1 &
CTRD_PID=$!
for _ in $(seq 100); do command ctr --address "$SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done

# 2. A busybox image as an OCI layout tarball (one uncompressed layer).
L=$WORK/layout; mkdir -p "$L/blobs/sha256" "$WORK/rootfs"/{bin,dev,etc,proc,sys,tmp}
cp /bin/busybox "$WORK/rootfs/bin/"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$WORK/rootfs/bin/$a"; done
blob() { local d; d=$(sha256sum "$1" | cut -d' ' -f1); mv "$1" "$L/blobs/sha256/$d"; echo "$d"; }
size() { stat -c %s "$L/blobs/sha256/$1"; }
tar --numeric-owner --owner=0 --group=0 -C "$WORK/rootfs" -cf "$WORK/layer" .
LAYER=$(blob "$WORK/layer")
jq -n --arg l "sha256:$LAYER" '{architecture:"amd64",os:"linux",config:{Env:["PATH=/bin"],Cmd:["sh"]},
  rootfs:{type:"layers",diff_ids:[$l]}}' > "$WORK/config"
CONFIG=$(blob "$WORK/config")
jq -n --arg c "sha256:$CONFIG" --argjson cs "$(size "$CONFIG")" --arg l "sha256:$LAYER" --argjson ls "$(size "$LAYER")" \
  '{schemaVersion:2,mediaType:"application/vnd.oci.image.manifest.v1+json",
    config:{mediaType:"application/vnd.oci.image.config.v1+json",digest:$c,size:$cs},
    layers:[{mediaType:"application/vnd.oci.image.layer.v1.tar",digest:$l,size:$ls}]}' > "$WORK/manifest"
MANIFEST=$(blob "$WORK/manifest")
jq -n --arg m "sha256:$MANIFEST" --argjson ms "$(size "$MANIFEST")" --arg n "$IMAGE" \
  '{schemaVersion:2,manifests:[{mediaType:"application/vnd.oci.image.manifest.v1+json",digest:$m,size:$ms,
    platform:{architecture:"amd64",os:"linux"},
    annotations:{"io.containerd.image.name":$n,"org.opencontainers.image.ref.name":"latest"}}]}' > "$L/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$L/oci-layout"
tar -C "$L" -cf "$WORK/image.tar" oci-layout index.json blobs
ctr images import "$WORK/image.tar"

# 3. Run a counter that exists only in the shell's memory.
ctr run -d --null-io --runtime io.containerd.stasis.v2 "$IMAGE" counter \
  sh -c 'i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.2; done'
sleep 2
echo "counter before the checkpoint: $(ctr tasks exec --exec-id peek counter cat /tmp/count)"

# 4. Checkpoint (task and container state) into an image, then delete it.
ctr containers checkpoint --task counter "$CKPT"
ctr tasks kill --signal SIGKILL counter
sleep 0.5
ctr tasks delete counter
ctr containers delete counter

# 5. Restore into a new container: the restored shell counts on from its memory.
ctr containers restore --live counter-2 "$CKPT" </dev/null >/dev/null
sleep 1
echo "restored counter:             $(ctr tasks exec --exec-id peek counter-2 cat /tmp/count)"
ctr tasks ls

# 6. Kill and delete; the shim exits by itself.
ctr tasks kill --signal SIGKILL counter-2
sleep 0.5
ctr tasks delete counter-2
ctr containers delete counter-2
