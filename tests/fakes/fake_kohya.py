"""FAKE sd-scripts child process, for tests of the launcher (a fake at the process boundary).

Usage: fake_kohya.py RECORDING MODE [sd-scripts arguments...]
Replays RECORDING (real captured kohya output, '\\r' and all) to stdout, then acts by MODE:
  ok        write the epoch LoRA files and state folders kohya would, exit 0
  fail:N    exit N after the output
  hang      sleep until signalled; on SIGTERM write <output_dir>/fake-got-sigterm and exit 143
Arguments are read like sd-scripts reads them (--name=value), to know where to write.
"""

import signal
import sys
import time
from pathlib import Path


def arg(name, default=None):
    for a in sys.argv[3:]:
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
    return default


def main():
    recording, mode = sys.argv[1], sys.argv[2]
    out = Path(arg("output_dir"))
    name = arg("output_name", "last")
    epochs = int(arg("max_train_epochs", "1"))
    every = int(arg("save_every_n_epochs", "1"))
    resume = arg("resume")
    start_epoch = int(Path(resume).name.split("-")[-2]) if resume else 0

    def on_term(signum, _):
        (out / "fake-got-sigterm").write_text(str(signum))
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    (out / "fake-argv").write_text("\n".join(sys.argv[3:]))
    sys.stdout.buffer.write(Path(recording).read_bytes())
    sys.stdout.flush()
    if mode == "hang":
        while True:
            time.sleep(0.1)
    if mode.startswith("fail:"):
        sys.exit(int(mode.split(":")[1]))
    for e in range(start_epoch + 1, epochs + 1):
        print(f"\nepoch {e}/{epochs}\n", flush=True)
        if e < epochs and e % every:  # sd-scripts saves every n-th epoch and the last
            continue
        lora = out / (f"{name}-{e:06d}.safetensors" if e < epochs else f"{name}.safetensors")
        lora.write_bytes(f"fake lora epoch {e}".encode())
        if e < epochs:
            state = out / f"{name}-{e:06d}-state"
            state.mkdir(exist_ok=True)
            for f in ("train_state.json", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
                      "model.safetensors"):
                (state / f).write_text("{}")


if __name__ == "__main__":
    main()
