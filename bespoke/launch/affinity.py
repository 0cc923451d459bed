"""One process per GPU on a shared host: each process's threads on CPU cores of its own, near its GPU.

A fast-profile step is bound by the host launching kernels (bench/RESULTS.md), so two processes that the
scheduler moves across each other's cores, or onto the far socket, lose steps. The CPUs near a GPU are in
sysfs (`/sys/bus/pci/devices/<pci address>/local_cpulist`); the processes whose GPUs share those CPUs split
them by physical core, in local-rank order, as torchrun's `--numa-binding=exclusive` does (accelerate, which
launches sd-scripts, has no such option). Only CPUs this process may already use are taken.
"""

from __future__ import annotations

import os
from pathlib import Path

SYS = Path("/sys")


def parse_cpulist(text: str) -> set[int]:
    """'0-3,8,10-11' -> {0, 1, 2, 3, 8, 10, 11} (the kernel's cpulist format)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def near_cpus(pci_address: str, allowed: set[int], sys_root: Path = SYS) -> set[int]:
    """The allowed CPUs local to the PCI device (all allowed ones where sysfs does not say)."""
    try:
        local = parse_cpulist((sys_root / "bus/pci/devices" / pci_address / "local_cpulist").read_text())
    except (OSError, ValueError):
        return set(allowed)
    return (local & allowed) or set(allowed)


def cores(cpus: set[int], sys_root: Path = SYS) -> list[list[int]]:
    """`cpus` grouped by physical core (hyperthread siblings together), in CPU order."""
    groups: dict[tuple, list[int]] = {}
    for cpu in sorted(cpus):
        topo = sys_root / f"devices/system/cpu/cpu{cpu}/topology"
        try:
            core = (int((topo / "physical_package_id").read_text()), int((topo / "core_id").read_text()))
        except (OSError, ValueError):
            core = (-1, cpu)
        groups.setdefault(core, []).append(cpu)
    return sorted(groups.values())


def share(gpu_cpus: list[set[int]], rank: int, sys_root: Path = SYS) -> set[int]:
    """The CPUs for local rank `rank`, given each local rank's near CPUs: the ranks with the same near CPUs
    split them by whole physical cores, in rank order (the first ranks get one more where they don't divide)."""
    mine = gpu_cpus[rank]
    peers = [r for r, c in enumerate(gpu_cpus) if c == mine]
    groups = cores(mine, sys_root)
    if len(groups) < len(peers):  # fewer cores than processes: share them all
        return set(mine)
    k, extra = divmod(len(groups), len(peers))
    i = peers.index(rank)
    start = i * k + min(i, extra)
    return {cpu for group in groups[start:start + k + (i < extra)] for cpu in group}


def pci_address(props) -> str:
    return f"{props.pci_domain_id:04x}:{props.pci_bus_id:02x}:{props.pci_device_id:02x}.0"


def bind() -> str | None:
    """Pin this process (all its threads so far, and those it starts) to its share of CPUs; one line saying
    so, or None where there is nothing to do (one process, no CUDA)."""
    rank, world = int(os.environ.get("LOCAL_RANK", -1)), int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    if rank < 0 or world < 2:
        return None
    import torch

    if not torch.cuda.is_available() or torch.cuda.device_count() < world:
        return None
    allowed = os.sched_getaffinity(0)
    gpu_cpus = [near_cpus(pci_address(torch.cuda.get_device_properties(r)), allowed) for r in range(world)]
    cpus = share(gpu_cpus, rank)
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except OSError:  # a thread that ended meanwhile
            pass
    return f"rank {rank} on {len(cpus)} CPUs near GPU {rank} ({min(cpus)}-{max(cpus)})"
