"""bespoke.launch.affinity: which CPUs each GPU's process gets, read from a sysfs tree written here."""

from pathlib import Path

import pytest

from bespoke.launch import affinity


def fake_sys(root: Path, gpus: dict[str, str], cores: dict[int, tuple[int, int]]) -> Path:
    """A sysfs with PCI devices (address -> local_cpulist) and CPUs (cpu -> (package, core))."""
    for address, cpulist in gpus.items():
        d = root / "bus/pci/devices" / address
        d.mkdir(parents=True)
        (d / "local_cpulist").write_text(cpulist + "\n")
    for cpu, (package, core) in cores.items():
        t = root / f"devices/system/cpu/cpu{cpu}/topology"
        t.mkdir(parents=True)
        (t / "physical_package_id").write_text(f"{package}\n")
        (t / "core_id").write_text(f"{core}\n")
    return root


@pytest.mark.parametrize("text, cpus", [("0-3,8,10-11\n", {0, 1, 2, 3, 8, 10, 11}), ("5", {5}), ("", set()),
                                        ("0-1,1-2", {0, 1, 2})])
def test_parse_cpulist(text, cpus):
    assert affinity.parse_cpulist(text) == cpus


def test_two_gpus_on_one_node_split_its_cores_keeping_hyperthreads_together(tmp_path):
    # 8 logical CPUs: cores 0-3, each with a sibling 4-7 (Linux's usual numbering)
    sys_root = fake_sys(tmp_path, {"0000:1a:00.0": "0-7", "0000:1b:00.0": "0-7"},
                        {c: (0, c % 4) for c in range(8)})
    near = [affinity.near_cpus(a, set(range(8)), sys_root) for a in ("0000:1a:00.0", "0000:1b:00.0")]
    assert affinity.share(near, 0, sys_root) == {0, 4, 1, 5}
    assert affinity.share(near, 1, sys_root) == {2, 6, 3, 7}


def test_gpus_on_different_sockets_each_keep_their_own_node(tmp_path):
    cores = {c: (c // 4, c % 4) for c in range(8)}
    sys_root = fake_sys(tmp_path, {"0000:1a:00.0": "0-3", "0000:9a:00.0": "4-7"}, cores)
    near = [affinity.near_cpus(a, set(range(8)), sys_root) for a in ("0000:1a:00.0", "0000:9a:00.0")]
    assert [affinity.share(near, r, sys_root) for r in (0, 1)] == [{0, 1, 2, 3}, {4, 5, 6, 7}]


def test_uneven_cores_go_to_the_first_ranks_and_too_few_are_shared(tmp_path):
    sys_root = fake_sys(tmp_path, {}, {c: (0, c) for c in range(5)})
    near = [set(range(5))] * 2
    assert [affinity.share(near, r, sys_root) for r in (0, 1)] == [{0, 1, 2}, {3, 4}]
    three = [set(range(2))] * 3  # 2 cores, 3 processes: nobody is left without a CPU
    assert affinity.share(three, 2, sys_root) == {0, 1}


def test_only_allowed_cpus_are_taken_and_missing_sysfs_means_all_allowed(tmp_path):
    sys_root = fake_sys(tmp_path, {"0000:1a:00.0": "0-15"}, {})
    assert affinity.near_cpus("0000:1a:00.0", {2, 3, 20}, sys_root) == {2, 3}
    assert affinity.near_cpus("0000:ff:00.0", {2, 3}, sys_root) == {2, 3}  # no such device in sysfs
    assert affinity.near_cpus("0000:1a:00.0", {20, 21}, sys_root) == {20, 21}  # none allowed nearby: keep what we have


def test_bind_does_nothing_for_one_process(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert affinity.bind() is None  # before torch is imported: the core environment has none
