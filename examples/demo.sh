#!/usr/bin/env bash
# A container lifecycle driven through stasis exactly as one would drive runc:
# build a busybox bundle, `run -d`, `state`, `list`, then `checkpoint` it away,
# `restore` it (its counter goes on where it was), `kill`, `delete`.
# Needs root, runc, /bin/busybox, jq and a built stasis (`make demo` does all).
set -euo pipefail
cd "$(dirname "$0")/.."

STASIS=${STASIS:-$PWD/target/x86_64-unknown-linux-gnu/release/stasis}
WORK=$(mktemp -d /tmp/stasis-demo.XXXXXX)
ROOT=$WORK/state      # --root: keeps the demo's containers apart from runc's
BUNDLE=$WORK/bundle
IMAGE=$WORK/image     # for checkpoint/restore
ID=stasis-demo-$$

st() {
  echo "+ stasis $*" >&2
  "$STASIS" --root "$ROOT" "$@"
}

cleanup() {
  "$STASIS" --root "$ROOT" delete --force "$ID" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

status() { "$STASIS" --root "$ROOT" state "$ID" | jq -r .status; }

# A busybox rootfs and runc's default config, made non-interactive.
mkdir -p "$BUNDLE"/rootfs/{bin,dev,etc,proc,sys,tmp}
cp /bin/busybox "$BUNDLE/rootfs/bin/"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$BUNDLE/rootfs/bin/$applet"
done
runc spec --bundle "$BUNDLE"
jq '.process.terminal = false
    | .process.args = ["sh", "-c", "i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 1; done"]
    | .root.readonly = false' "$BUNDLE/config.json" > "$WORK/config.json"
mv "$WORK/config.json" "$BUNDLE/config.json"

# `run -d` hands its stdio to the container: give it files, not a terminal.
echo "+ stasis run -d --bundle $BUNDLE $ID" >&2
if ! "$STASIS" --root "$ROOT" run -d --bundle "$BUNDLE" "$ID" </dev/null >"$WORK/out.log" 2>"$WORK/err.log"; then
  cat "$WORK/err.log" >&2
  exit 1
fi
sleep 2
st state "$ID"
echo
st list
echo "counter inside the container: $(cat "$BUNDLE/rootfs/tmp/counter")"

# Checkpoint: the container is dumped and removed.
st checkpoint --image-path "$IMAGE" "$ID"
before=$(cat "$BUNDLE/rootfs/tmp/counter")
echo "checkpointed at counter $before; state now: $("$STASIS" --root "$ROOT" state "$ID" 2>&1 | tail -1)"
"$STASIS" inspect "$IMAGE" | sed -n '1,20p'

# Restore: a new container from the same bundle, with the same pids, going on
# from the checkpoint (its stdio is this script's new files, as with runc).
echo "+ stasis restore -d --image-path $IMAGE --bundle $BUNDLE $ID" >&2
if ! "$STASIS" --root "$ROOT" restore -d --image-path "$IMAGE" --bundle "$BUNDLE" "$ID" </dev/null >"$WORK/out2.log" 2>"$WORK/err2.log"; then
  cat "$WORK/err2.log" >&2
  exit 1
fi
st state "$ID"
echo
sleep 2.5
after=$(cat "$BUNDLE/rootfs/tmp/counter")
echo "counter after restore: $after (was $before)"
if [ "$after" -le "$before" ]; then
  echo "demo: the restored container did not go on counting" >&2
  exit 1
fi
st ps "$ID"

st kill "$ID" KILL
for _ in $(seq 100); do
  [ "$(status)" = stopped ] && break
  sleep 0.1
done
echo "status after kill: $(status)"
st delete "$ID"
echo "demo: ok"
