import json
import subprocess

import pytest

from bespoke import preflight
from bespoke.preflight import ERROR, OK, WARN, Gpu
from bespoke.workspace import CACHE_VARS

GB = 1e9


def terms(ws, **kw):
    args = dict(ws=ws, hub_cache=ws / ".cache/hub", images=203, resolution=(1024, 1024), epochs=10, save_every=1,
                dim=128, save_precision=None, model_cached=False)
    args.update(kw)
    return preflight.disk_terms(**args)


def test_disk_terms_for_the_users_run(tmp_path):
    t = {x.name.split(" (")[0]: x.bytes for x in terms(tmp_path)}
    assert t["base model download"] == preflight.BASE_MODEL_BYTES
    assert abs(t["LoRA files"] - 18.2 * GB) < 1e6  # 10 x 1.82 GB
    assert 203 * 262_144 < t["prepared images + latents"] < 0.1 * GB  # 61 MB: PNGs + fp32 latents


def test_disk_terms_scale_with_dim_precision_and_cache(tmp_path):
    full = {x.name.split(" (")[0]: x.bytes for x in terms(tmp_path)}
    half = {x.name.split(" (")[0]: x.bytes for x in terms(tmp_path, save_precision="bf16", model_cached=True)}
    dim64 = {x.name.split(" (")[0]: x.bytes for x in terms(tmp_path, dim=64)}
    assert half["LoRA files"] == full["LoRA files"] / 2 and "base model download" not in half
    assert dim64["LoRA files"] == full["LoRA files"] / 2


def test_disk_terms_scale_the_lora_by_the_base_models_parameters(tmp_path):
    import numpy as np
    from safetensors.numpy import save_file

    model = tmp_path / "tiny.safetensors"  # 1/1000 of SDXL base's parameters, in fp32
    n = int(preflight.BASE_MODEL_PARAMS / 1000)
    save_file({"a": np.zeros((n // 2,), np.float32), "b": np.zeros((1, n - n // 2), np.float32)}, str(model))
    assert preflight.model_params(model) == n
    assert preflight.model_params(tmp_path / "nope.safetensors") is None
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 64)
    assert preflight.model_params(tmp_path / "junk.safetensors") is None
    for shape in ('["x"]', '7', '[null]', '{"a": 1}'):  # headers that parse but hold no numeric shape
        header = f'{{"t": {{"dtype": "F32", "shape": {shape}, "data_offsets": [0, 4]}}}}'.encode()
        (tmp_path / "odd.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + b"\0" * 4)
        assert preflight.model_params(tmp_path / "odd.safetensors") is None, shape
    full = {x.name.split(" (")[0]: x.bytes for x in terms(tmp_path)}
    tiny = {x.name.split(" (")[0]: x.bytes for x in terms(tmp_path, model_params=preflight.model_params(model))}
    assert abs(tiny["LoRA files"] - full["LoRA files"] / 1000) < 1e3


def test_disk_terms_count_the_files_train_expects(tmp_path):
    every3 = {x.name.split(" (")[0]: x.bytes for x in terms(tmp_path, save_every=3)}
    assert abs(every3["LoRA files"] - 4 * 1.82 * GB) < 1e6  # epochs 3, 6, 9 and the last, 10


def test_disk_check_errors_with_the_numbers(tmp_path):
    ts = terms(tmp_path)
    need = sum(t.bytes for t in ts) * 1.1
    ok = preflight.check_disk(ts, free=lambda p: int(need) + 1)
    assert [f.severity for f in ok if f.severity != "info"] == [OK]
    bad = preflight.check_disk(ts, free=lambda p: int(need) - 10**9)
    (err,) = [f for f in bad if f.severity == ERROR]
    assert f"need {need / GB:.1f} GB" in err.message and "save_precision=bf16" in err.fix
    assert sum(f.severity == "info" for f in bad) == len(ts)  # one line per term


def test_caches_go_under_the_workspace_unless_set(tmp_path):
    env = {"HF_HOME": "/root/.cache/huggingface"}
    findings = preflight.apply_cache_env(tmp_path, env)
    assert env["HF_HOME"] == "/root/.cache/huggingface"
    assert env["TRITON_CACHE_DIR"] == str(tmp_path.resolve() / ".cache/triton")
    assert set(CACHE_VARS) <= set(env)
    (w,) = findings
    assert w.severity == WARN and "HF_HOME" in w.message and "unset HF_HOME" in w.fix


def test_workspace_missing_and_not_a_volume(tmp_path):
    (f,) = preflight.check_workspace(tmp_path / "nope")
    assert f.severity == ERROR and "mount a volume" in f.fix
    findings = preflight.check_workspace(tmp_path, root=tmp_path)
    assert [x.severity for x in findings] == [OK, WARN]
    assert "not a volume" in findings[1].message


def test_gpu_findings_without_torch_or_gpu():
    (f,) = preflight.check_gpus(None, [])
    assert f.severity == WARN and f.message == "torch not installed"
    (f,) = preflight.check_gpus([], [])
    assert f.severity == WARN and "no CUDA GPU" in f.message


def test_gpu_without_bf16_names_the_fp16_override():
    findings = preflight.check_gpus([Gpu(0, "Tesla T4", 15, (7, 5))], ["sm_75", "sm_80"])
    (err,) = [f for f in findings if f.severity == ERROR]
    assert "no bf16" in err.message and "mixed_precision=fp16" in err.fix


def test_new_gpu_on_an_old_torch():
    findings = preflight.check_gpus([Gpu(0, "RTX 5090", 32, (12, 0))], ["sm_80", "sm_86", "sm_90"])
    (err,) = [f for f in findings if f.severity == ERROR]
    assert "RTX 5090" in err.message and "sm_120" in err.message


def test_runs_on():
    assert preflight.runs_on((9, 0), ["sm_80", "sm_90"])
    assert preflight.runs_on((8, 9), ["sm_80", "sm_86"])
    assert not preflight.runs_on((12, 0), ["sm_80", "sm_90"])
    assert preflight.runs_on((12, 0), ["sm_90", "compute_90"])  # PTX JIT
    assert preflight.runs_on((12, 0), ["sm_100", "sm_120"])


def test_probe_runs_in_its_own_process():
    import importlib.util
    import sys

    code = "import sys; from bespoke import preflight; preflight.probe(); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)  # the launcher never imports torch, nor CUDA
    found = preflight.probe()
    if importlib.util.find_spec("torch") is None:
        assert found["torch"] is None and preflight.gpus(found) is None
    else:
        assert found["torch"] and isinstance(found["device_count"], int)


def test_probe_failure_is_a_finding_not_a_crash():
    def broken(argv, timeout):
        raise subprocess.TimeoutExpired(argv, timeout)

    found = preflight.probe(run=broken)
    assert "GPU probe failed" in found["error"] and preflight.gpus(found) is None


class FakePod:
    """Fake processes for preflight.probe: nvidia-smi lists `smi`; the probe process answers `answer`."""

    def __init__(self, smi: str | None, answer: dict):
        self.smi, self.answer, self.probes = smi, answer, 0

    def __call__(self, argv, timeout):
        if argv[0] == "nvidia-smi":
            if self.smi is None:
                raise FileNotFoundError("nvidia-smi")
            return subprocess.CompletedProcess(argv, 0, self.smi, "")
        self.probes += 1
        return subprocess.CompletedProcess(argv, 0, json.dumps(self.answer) + "\n", "")


H100_ANSWER = {"torch": "2.11.0", "device_count": 1, "arch_list": ["sm_90"], "xformers": {"ok": True},
               "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_gb": 79.2, "capability": [9, 0]}]}
H100_SMI = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-4d1c)\n"


def test_probe_answer_is_kept_for_the_same_gpus_and_libraries(tmp_path):
    pod = FakePod(H100_SMI, H100_ANSWER)
    first = preflight.probe(imports_only=True, run=pod, cache=tmp_path)
    again = preflight.probe(imports_only=True, run=pod, cache=tmp_path)
    assert first == again == H100_ANSWER and pod.probes == 1
    preflight.probe(run=pod, cache=tmp_path)  # the full probe (kernels too) is another answer
    assert pod.probes == 2
    pod.smi = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-77ab)\n"  # another machine
    preflight.probe(imports_only=True, run=pod, cache=tmp_path)
    assert pod.probes == 3


def test_probe_answer_is_not_kept_without_gpus_nvidia_smi_or_working_libraries(tmp_path):
    no_smi = FakePod(None, H100_ANSWER)
    for _ in range(2):
        preflight.probe(imports_only=True, run=no_smi, cache=tmp_path)
    no_gpu = FakePod(H100_SMI, {**H100_ANSWER, "device_count": 0, "gpus": []})
    for _ in range(2):
        preflight.probe(imports_only=True, run=no_gpu, cache=tmp_path)
    broken = FakePod(H100_SMI, {**H100_ANSWER, "xformers": {"ok": False, "error": "ImportError: libcudart.so.12"}})
    for _ in range(2):
        preflight.probe(imports_only=True, run=broken, cache=tmp_path)
    assert no_smi.probes == 2 and no_gpu.probes == 2 and broken.probes == 2 and not list(tmp_path.iterdir())


def test_a_damaged_kept_probe_answer_is_probed_again(tmp_path):
    pod = FakePod(H100_SMI, H100_ANSWER)
    preflight.probe(imports_only=True, run=pod, cache=tmp_path)
    (kept,) = tmp_path.iterdir()
    kept.write_text("{not json")
    assert preflight.probe(imports_only=True, run=pod, cache=tmp_path) == H100_ANSWER and pod.probes == 2
    assert json.loads(kept.read_text()) == H100_ANSWER


PROBED_BROKEN = {"torch": "2.10.0+cu128", "device_count": 1, "gpus": [], "arch_list": [],
                 "xformers": {"ok": False, "error": "NotImplementedError: No operator found"},
                 "bitsandbytes": {"ok": False, "error": "RuntimeError: CUDA Setup failed"}}
PROBED_OK = {"torch": "2.10.0+cu128", "xformers": {"ok": True, "version": "0.0.34", "ran": True},
             "bitsandbytes": {"ok": True, "version": "0.50.2", "ran": True}}


def test_library_findings_from_the_probe():
    bad = {f.check: f for f in preflight.check_libraries(PROBED_BROKEN, gpu_present=True)}
    assert bad["xformers"].severity == WARN and "--sdpa" in bad["xformers"].fix
    assert bad["bitsandbytes"].severity == ERROR and "CUDA Setup failed" in bad["bitsandbytes"].message
    cpu = {f.check: f for f in preflight.check_libraries(PROBED_BROKEN, gpu_present=False)}
    assert cpu["bitsandbytes"].severity == WARN  # never an error without a GPU
    good = {f.check: f for f in preflight.check_libraries(PROBED_OK, gpu_present=True)}
    assert good["xformers"].message == "xformers 0.0.34 (attention ran)"
    assert good["bitsandbytes"].message == "bitsandbytes 0.50.2 (AdamW8bit ran)"


@pytest.mark.gpu
@pytest.mark.skipif(not (preflight.gpus(preflight.probe()) or []), reason="needs a CUDA GPU: run on the GPU machine")
def test_libraries_run_a_kernel_on_the_gpu():
    found = preflight.probe()
    findings = {f.check: f for f in preflight.check_libraries(found, gpu_present=True)}
    assert findings["bitsandbytes"].severity == OK and "ran" in findings["bitsandbytes"].message
    assert found["gpus"] and found["arch_list"]


def test_compiler_problem_names_what_triton_lacks(tmp_path):
    bin_dir, include = tmp_path / "bin", tmp_path / "include"
    bin_dir.mkdir()
    include.mkdir()
    lacks = preflight.compiler_problem({"PATH": str(bin_dir)}, include=str(include))
    assert "C compiler" in lacks and "Python.h" in lacks
    cc = bin_dir / "cc"
    cc.write_text("#!/bin/sh\n")
    cc.chmod(0o755)
    (include / "Python.h").write_text("")
    assert preflight.compiler_problem({"PATH": str(bin_dir)}, include=str(include)) is None


def test_cpp_launcher_needs_a_cpp_compiler_and_cudas_headers(tmp_path):
    """inductor's C++ launcher includes CUDA's headers, which pip's torch lacks; torch finds them where its
    cpp_extension looks: CUDA_HOME, nvcc's folder, /usr/local/cuda, plus CUDA_INC_PATH."""
    bin_dir, cuda = tmp_path / "bin", tmp_path / "cuda"
    bin_dir.mkdir()
    env = {"PATH": str(bin_dir)}
    lacks = preflight.cpp_launcher_problem(env, default_home=str(tmp_path / "none"))
    assert "C++ compiler" in lacks and "cuda.h" in lacks and "no CUDA_HOME" in lacks
    (bin_dir / "g++").write_text("#!/bin/sh\n")
    (bin_dir / "g++").chmod(0o755)
    for h in ("cuda.h", "cuda_runtime.h", "crt/host_config.h", "cuda_bf16.h", "cuda_fp8.h"):
        (cuda / "include" / h).parent.mkdir(parents=True, exist_ok=True)
        (cuda / "include" / h).write_text("")
    env["CUDA_HOME"] = str(cuda)
    lacks = preflight.cpp_launcher_problem(env)
    assert lacks.startswith("CUDA's headers (nv/target;") and str(cuda / "include") in lacks  # CCCL's
    (tmp_path / "cccl" / "nv").mkdir(parents=True)
    (tmp_path / "cccl" / "nv" / "target").write_text("")
    assert preflight.cpp_launcher_problem({**env, "CUDA_INC_PATH": str(tmp_path / "cccl")}) is None
    (cuda / "bin").mkdir()  # no CUDA_HOME: nvcc's folder, as torch guesses
    (cuda / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (cuda / "bin" / "nvcc").chmod(0o755)
    assert preflight.cuda_home({"PATH": f"{bin_dir}:{cuda / 'bin'}"}) == cuda.resolve()


def test_profile_findings_name_its_compiler_and_memory_needs():
    from bespoke import profiles

    fast, exact = profiles.get("fast"), profiles.get("exact")
    small, big = Gpu(0, "RTX 4090", 23.6, (8, 9)), Gpu(1, "H100", 79.1, (9, 0))
    by = {f.severity: f for f in preflight.check_profile(fast, [small, big], "a C compiler (cc/gcc)")}
    assert "needs a C compiler" in by[ERROR].message and "BESPOKE_COMPILE=off" in by[ERROR].fix
    assert "GPU 0 (RTX 4090) has 24 GiB" in by[WARN].message and "--profile lean" in by[WARN].fix
    (ok,) = preflight.check_profile(fast, [big], None)
    assert ok.severity == OK and "expected 0.28-0.55 s/step on an H200" in ok.message  # check shows the speed
    # lean fits the 24 GB card that fast does not
    (lean,) = preflight.check_profile(profiles.get("lean"), [small], None)
    assert lean.severity == OK and "s/step" in lean.message
    # no C++ launcher: fast still runs, its kernels launched from Python
    (slower,) = preflight.check_profile(fast, [big], None, cpp_launcher="a C++ compiler (c++/g++)")
    assert slower.severity == WARN and "from Python" in slower.message and "g++" in slower.fix
    # exact compiles nothing and fits where it was measured
    assert [f.severity for f in preflight.check_profile(exact, [small], "a C compiler (cc/gcc)")] == [OK]
