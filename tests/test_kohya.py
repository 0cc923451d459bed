import pytest

from bespoke import kohya
from bespoke.errors import BespokeError

ARGV = ["--network_dim=128"]


def test_launch_one_gpu():
    argv = kohya.launch_argv("/opt/sd-scripts/sdxl_train_network.py", ARGV, 1, python="python")
    assert argv == ["python", "-m", "accelerate.commands.launch", "--dynamo_backend", "no", "--num_processes", "1",
                    "--num_machines", "1", "--mixed_precision", "bf16", "/opt/sd-scripts/sdxl_train_network.py",
                    "--network_dim=128"]


def test_launch_every_gpu():
    argv = kohya.launch_argv("s.py", ARGV, 2, python="python")
    assert argv[5:9] == ["--num_processes", "2", "--multi_gpu", "--num_machines"]


def test_launch_cpu_mode():
    argv = kohya.launch_argv("s.py", ARGV, 0, python="python")
    assert "--cpu" in argv and argv[argv.index("--num_processes") + 1] == "1" and "--multi_gpu" not in argv


def test_launch_multi_node():
    m = kohya.Machines(num_machines=2, machine_rank=1, main_process_ip="10.0.0.1", main_process_port=29500)
    argv = kohya.launch_argv("s.py", ARGV, 8, python="python", machines=m)
    joined = " ".join(argv)
    assert "--num_processes 16 --multi_gpu --num_machines 2" in joined
    assert "--machine_rank 1 --main_process_ip 10.0.0.1 --main_process_port 29500" in joined


# Each known failure on a line as sd-scripts, torch or the OS print it.
CAPTURED = {
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB. GPU 0 has a total capacity of "
    "79.19 GiB of which 6.75 MiB is free.": "out of memory",
    "AssertionError: No data found. Please verify arguments (train_data_dir must be the parent of folders with "
    "images) / 画像がありません。": "found no images",
    "ModuleNotFoundError: No module named 'xformers'": "xformers",
    "NotImplementedError: No operator found for `memory_efficient_attention_forward` with inputs:": "xformers",
    "RuntimeError: CUDA Setup failed despite GPU being available. Please run the following command to get more "
    "information: python -m bitsandbytes": "bitsandbytes",
    "RuntimeError: NaN detected in latents: /workspace/training_data/10_bespoke_baby/p0.png": "NaN latents",
    "steps:  12%|█▏        | 1200/10150 [30:00<3:43:45,  1.50s/it, avr_loss=nan]": "loss became NaN",
    "OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the "
    "cached files.": "offline",
    "OSError: [Errno 28] No space left on device": "disk is full",
    "torch._inductor.exc.InductorError: OSError: CUDA_HOME environment variable is not set. Please set it to your "
    "CUDA install root.": "C++ kernel launcher",
    "torch._inductor.exc.InductorError: CppCompileError: C++ compile error": "C++ kernel launcher",
    "torch._dynamo.exc.BackendCompilerFailed: backend='inductor' raised:": "torch.compile failed",
}


@pytest.mark.parametrize("line, expect", CAPTURED.items())
def test_known_errors(line, expect):
    what, fix = kohya.explain(["INFO starting", "Traceback (most recent call last):", "  File \"x.py\"", line])
    assert expect.lower() in what.lower() and fix


def test_unknown_error_is_none():
    assert kohya.explain(["ValueError: something else"]) is None
    assert kohya.last_error_line(["x", "ValueError: something else", "  File ..."]) == "ValueError: something else"


def test_locate_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(BespokeError) as e:
        kohya.locate({kohya.ENV_DIR: str(tmp_path)})
    assert "make sd-scripts" in e.value.fix and "image" in e.value.fix


def test_commit_mismatch_warns_with_both(tmp_path):
    (tmp_path / "sdxl_train_network.py").write_text("")
    (tmp_path / kohya.COMMIT_FILE).write_text("f" * 40)
    (f,) = kohya.check({kohya.ENV_DIR: str(tmp_path)})
    assert f.severity == "warn" and "ffffffffffff" in f.message and kohya.pinned_commit()[:12] in f.message
    (tmp_path / kohya.COMMIT_FILE).write_text(kohya.pinned_commit())
    (f,) = kohya.check({kohya.ENV_DIR: str(tmp_path)})
    assert f.severity == "ok"


def test_a_startup_warning_does_not_explain_an_unrelated_crash():
    tail = [
        "WARNING xformers is not available, falling back",  # printed at start-up
        "INFO loading model",
        "Traceback (most recent call last):",
        '  File "train_network.py", line 602, in train',
        "KeyError: 'ss_network_dim'",
        "Traceback (most recent call last):",
        '  File "accelerate/commands/launch.py", line 795, in simple_launcher',
        "subprocess.CalledProcessError: Command '[...]' returned non-zero exit status 1.",
    ]
    assert kohya.explain(tail) is None
    assert kohya.last_error_line(tail) == "KeyError: 'ss_network_dim'"


def test_the_child_traceback_before_accelerates_is_the_one_explained():
    tail = ["Traceback (most recent call last):", '  File "x.py"',
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.",
            "Traceback (most recent call last):", '  File "launch.py"',
            "subprocess.CalledProcessError: Command '[...]' returned non-zero exit status 1."]
    assert "out of memory" in kohya.explain(tail)[0]


def test_locate_makes_a_relative_setting_absolute(tmp_path, monkeypatch):
    """The child runs with sd-scripts as its working directory: a relative path would point nowhere."""
    sd = tmp_path / "sd"
    sd.mkdir()
    (sd / "sdxl_train_network.py").write_text("")
    monkeypatch.chdir(tmp_path)
    found = kohya.locate({kohya.ENV_DIR: "sd"})
    assert found.path == sd and found.script.is_absolute()
