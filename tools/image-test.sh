#!/usr/bin/env bash
# The image's checks, in a real container runtime: `make image-test` runs them with podman against the
# image it built here, the image workflow with docker against the image it pushed.
#   tools/image-test.sh IMAGE        (ENGINE=podman|docker, default: docker if it answers, else podman)
# Each check prints "ok  <what>" or stops the script with "FAIL  <what>" and the evidence.
set -euo pipefail
image="${1:?usage: tools/image-test.sh IMAGE}"
engine="${ENGINE:-$(docker info > /dev/null 2>&1 && echo docker || echo podman)}"
work="$(mktemp -d)"
name="bespoke-image-test-$$"
cleanup() { "$engine" rm -f "$name" > /dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
ok() { echo "ok    $*"; }
fail() { echo "FAIL  $*"; [ -n "${2:-}" ] || true; "$engine" logs "$name" 2>&1 | tail -40 || true; exit 1; }
# A free loopback port for each published container port.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() {  # wait_for SECONDS COMMAND...: until COMMAND succeeds
  local deadline=$((SECONDS + $1)); shift
  until "$@" > /dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}
status_stage() { python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$work/ws/output/status.json" "${1:-stage}"; }

echo "image-test: $image with $engine"
"$engine" run --rm "$image" bespoke --version > "$work/version"
ok "bespoke --version: $(cat "$work/version")"
test "$("$engine" run --rm "$image" cat /opt/sd-scripts/.bespoke-commit)" = "$(cat bespoke/SD_SCRIPTS_COMMIT)" \
  || fail "sd-scripts in the image is not at bespoke/SD_SCRIPTS_COMMIT"
ok "sd-scripts at the pin"
"$engine" run --rm "$image" python -m entrypoint --verify-image || fail "python -m entrypoint --verify-image"
ok "python -m entrypoint --verify-image (tokenizers, versions, the lock, imports)"

# --- bespoke smoke-test: the real pipeline on CPU (interrupt, resume, no-op after DONE, evaluate) --------
"$engine" run --rm "$image" bespoke smoke-test > "$work/smoke.log" 2>&1 || { tail -40 "$work/smoke.log"; fail "bespoke smoke-test"; }
grep -E "^  (ok|FAIL)" "$work/smoke.log"
grep -q "smoke test passed" "$work/smoke.log" || fail "bespoke smoke-test did not pass"
ok "bespoke smoke-test in the container"

# --- the fast profile's compile path on the image's torch (CPU, aot_eager): an API break in it shows here ---
"$engine" run --rm -v "$PWD/tests/scripts:/checks:ro" "$image" python /checks/compiled_blocks.py /opt/sd-scripts \
  > "$work/compiled.log" 2>&1 || { tail -40 "$work/compiled.log"; fail "compiled blocks on the image's torch"; }
python3 -c 'import json, sys; g = json.loads([l for l in open(sys.argv[1]) if l.startswith("{")][-1]); print(g["torch"], g["unique_graphs"], "graphs")' \
  "$work/compiled.log" > "$work/compiled"
ok "compiled blocks train like eager ones on the image's torch: $(cat "$work/compiled")"

# --- the entrypoint as PID 1: TensorBoard on 6006, sshd on 22 with the container's environment ---------
mkdir -p "$work/ws"
ssh-keygen -q -t ed25519 -N "" -f "$work/id"
tb_port="$(free_port)"; ssh_port="$(free_port)"
"$engine" run -d --name "$name" -v "$work/ws:/workspace" -p "127.0.0.1:$tb_port:6006" -p "127.0.0.1:$ssh_port:22" \
  -e PUBLIC_KEY="$(cat "$work/id.pub")" -e RUNPOD_POD_ID=image-test -e BESPOKE_ON_FINISH=sleep "$image" > /dev/null
pid1="$("$engine" exec "$name" cat /proc/1/cmdline | tr '\0' ' ')"
case "$pid1" in  # the image's CMD (bespoke run) follows as the entrypoint's arguments
  "/usr/bin/tini -- /opt/venv/bin/python -m entrypoint "*) ;;
  *) fail "PID 1 is not tini running the entrypoint: $pid1" ;;
esac
ok "PID 1: tini -- python -m entrypoint"
wait_for 120 curl -fsS "http://127.0.0.1:$tb_port/data/runs" || fail "TensorBoard does not answer on 6006"
ok "TensorBoard answers on 6006 ($(curl -fsS "http://127.0.0.1:$tb_port/data/runs"))"
ssh_in() {
  ssh -i "$work/id" -p "$ssh_port" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR root@127.0.0.1 "$@"
}
wait_for 60 ssh_in true || fail "no ssh login on 22"
test "$(ssh_in bespoke --version)" = "$(cat "$work/version")" || fail "bespoke --version over ssh"
seen="$(ssh_in 'echo "$PATH|$HF_HOME|$BESPOKE_WORKSPACE|$RUNPOD_POD_ID"')"
case "$seen" in
  /opt/venv/bin:*"|/workspace/.cache/huggingface|/workspace|image-test") ;;
  *) fail "the ssh session lacks the container's environment: $seen" ;;
esac
ok "ssh login on 22 runs bespoke --version and sees the environment ($seen)"

# With no data the run fails at once: BESPOKE_ON_FINISH=sleep keeps the container up, status.json says why.
wait_for 120 grep -q '"stage": "failed"' "$work/ws/output/status.json" || fail "status.json does not say failed"
sleep 2
test "$("$engine" inspect -f '{{.State.Running}}' "$name")" = true || fail "BESPOKE_ON_FINISH=sleep did not sleep"
ok "BESPOKE_ON_FINISH=sleep: the failed run is in status.json ($(status_stage last_error | cut -c1-80)...), the container sleeps"
"$engine" stop -t 20 "$name" > /dev/null
ok "docker stop while sleeping: exit $("$engine" inspect -f '{{.State.ExitCode}}' "$name")"
"$engine" rm -f "$name" > /dev/null

# BESPOKE_ON_FINISH=exit: the container exits with the run's code.
set +e
"$engine" run --rm -v "$work/ws:/workspace" -e BESPOKE_ON_FINISH=exit -e BESPOKE_TENSORBOARD=0 "$image" > "$work/exit.log" 2>&1
code=$?
set -e
[ "$code" != 0 ] && grep -q "exiting (BESPOKE_ON_FINISH=exit)" "$work/exit.log" || { cat "$work/exit.log"; fail "BESPOKE_ON_FINISH=exit"; }
ok "BESPOKE_ON_FINISH=exit: exits with the failed run's code ($code)"

# An invalid BESPOKE_ON_FINISH sleeps (no restart loop) with the error in the log and status.json.
"$engine" run -d --name "$name" -v "$work/ws:/workspace" -e BESPOKE_ON_FINISH=hibernate -e BESPOKE_TENSORBOARD=0 "$image" > /dev/null
wait_for 120 grep -q on_finish_error "$work/ws/output/status.json" || fail "no on_finish_error in status.json"
test "$("$engine" inspect -f '{{.State.Running}}' "$name")" = true || fail "an invalid BESPOKE_ON_FINISH did not sleep"
# The log is read into a file and then searched: `logs | grep -q` fails under pipefail when grep stops
# reading early, and the line may follow status.json by a moment.
logged() { "$engine" logs "$name" > "$work/hibernate.log" 2>&1; grep -q "error: BESPOKE_ON_FINISH='hibernate'" "$work/hibernate.log"; }
wait_for 30 logged || fail "the log does not name the invalid value"
ok "BESPOKE_ON_FINISH=hibernate: sleeps, the error in the log and status.json"
"$engine" stop -t 20 "$name" > /dev/null
echo "image-test: all checks passed"
