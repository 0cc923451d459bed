"""The fast profile's per-step launches: one optimizer update per parameter group, one gradient all-reduce.

sd-scripts' SDXL LoRA has 1,972 parameter tensors. bitsandbytes 0.50's AdamW8bit updates them one by one:
a Python call, a kernel launch and a torch.cuda.synchronize() for each, every step. And sd-scripts
reduces their gradients one by one too (train_network.py's all_reduce_network: accelerate's reduce,
which clones each gradient even on one GPU, and runs one NCCL all-reduce per tensor on several).

Both are elementwise, so they can run on all the tensors at once with the same result, bit for bit:
- `flatten_8bit_groups`: bitsandbytes' blockwise 8-bit state keeps one absmax per 256 elements of a
  tensor. When every tensor of a group has a multiple of 256 elements, their concatenation has the same
  blocks, so one update over a flat copy of the group computes what the per-tensor updates compute. The
  optimizer then owns the flat copy (its state and state_dict are flat); each step copies the weights
  and gradients in and the new weights out, in a few multi-tensor kernels (so the update sees whatever
  else changes the weights: a resume's load, sd-scripts' max-norm regularization). Tensors with no
  gradient at the first step (LoRA on the text-encoder layer SDXL does not use) stay outside, skipped as
  bitsandbytes skips them.
- `bucketed_all_reduce`: all the gradients in one all-reduce (sum, then divided by the number of
  processes, as accelerate's mean), and nothing on one process, where the per-tensor reduce only cloned.
"""

from __future__ import annotations

import contextlib
import os

import torch

from bespoke.launch.patching import rebind

BLOCK = 256  # bitsandbytes' blockwise 8-bit optimizers: one absmax per 256 elements (init_state)
MEMBERS = "bespoke_flat_members"  # param-group key: indices of the group's params the flat copy holds


class FlatGroup:
    """One parameter group's flat copy: `param` holds `members` end to end."""

    def __init__(self, members: list[torch.Tensor]):
        self.members = members
        flat = torch.cat([p.detach().reshape(-1) for p in members])
        self.param = torch.nn.Parameter(flat)
        self.views = self._views(flat)  # into self.param
        self.grad_views: list[torch.Tensor] = []

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Each member's shape over its stretch of a flat tensor."""
        parts = flat.split([p.numel() for p in self.members])
        return [v.view_as(p) for v, p in zip(parts, self.members, strict=True)]

    def gather(self) -> None:
        """The members' weights and gradients into the flat copy."""
        torch._foreach_copy_(self.views, self.members)
        grads = [p.grad for p in self.members]
        if any(g is None for g in grads):
            raise RuntimeError("bespoke flat optimizer: a parameter that had a gradient at the first step has none "
                               "now; run with BESPOKE_FLAT_STEP=off")
        if self.param.grad is None:
            self.param.grad = torch.empty_like(self.param)
            self.grad_views = self._views(self.param.grad)
        torch._foreach_copy_(self.grad_views, grads)

    def scatter_params(self) -> None:
        torch._foreach_copy_(self.members, self.views)


def _eligible(opt, members: list[torch.Tensor]) -> bool:
    """Adam's 8-bit blockwise update (AdamW8bit, the recipe's; the proven case) over tensors that fill whole blocks."""
    args = opt.args
    return (len(members) > 1 and getattr(opt, "optimizer_name", None) == "adam"
            and getattr(args, "optim_bits", 32) == 8 and not getattr(args, "max_unorm", 0.0)
            and not getattr(opt, "is_paged", False)
            and not getattr(opt.mng, "index2config", None)  # no per-parameter overrides
            and len({(p.device, p.dtype) for p in members}) == 1
            and all(p.numel() % BLOCK == 0 and p.numel() >= args.min_8bit_size for p in members))


def _flatten(opt, chosen: list[list[int] | None]) -> list[FlatGroup]:
    """Replace each group's `chosen` params by one flat copy, first in the group; the rest stay as they are."""
    flats = []
    for group, idx in zip(opt.param_groups, chosen, strict=True):
        params = group["params"]
        if not idx:
            group.pop(MEMBERS, None)
            continue
        fg, keep = FlatGroup([params[i] for i in idx]), set(idx)
        group["params"] = [fg.param] + [p for i, p in enumerate(params) if i not in keep]
        group[MEMBERS] = list(idx)
        flats.append(fg)
    opt._bespoke_flat = flats
    return flats


def _flat_groups(opt) -> list[FlatGroup]:
    """At the first step: each group's params that have gradients, flattened where they qualify."""
    flats = getattr(opt, "_bespoke_flat", None)
    if flats is None:
        chosen = []
        for group in opt.param_groups:
            idx = [i for i, p in enumerate(group["params"]) if p.grad is not None]
            chosen.append(idx if _eligible(opt, [group["params"][i] for i in idx]) else None)
        flats = _flatten(opt, chosen)
        print(f"bespoke: {type(opt).__name__} updates {sum(len(fg.members) for fg in flats)} tensors as "
              f"{len(flats)} flat groups", flush=True)
    return flats


def flatten_8bit_groups() -> None:
    """Patch bitsandbytes' 8-bit optimizers (the class, before sd-scripts makes one). Idempotent."""
    from bitsandbytes.optim.optimizer import Optimizer8bit

    if getattr(Optimizer8bit, "_bespoke_flat_patched", False):
        return
    step, zero_grad, load_state_dict = Optimizer8bit.step, Optimizer8bit.zero_grad, Optimizer8bit.load_state_dict

    @torch.no_grad()
    def flat_step(self, closure=None):
        flats = _flat_groups(self)
        for fg in flats:
            fg.gather()
        loss = step(self, closure)
        for fg in flats:
            fg.scatter_params()
        return loss

    def flat_zero_grad(self, set_to_none: bool = True):
        zero_grad(self, set_to_none)
        for fg in getattr(self, "_bespoke_flat", ()):
            for p in fg.members:
                if p.grad is not None:
                    if set_to_none:
                        p.grad = None
                    else:
                        p.grad.zero_()

    def flat_load_state_dict(self, state_dict, *args, **kwargs):
        """A resumed run: flatten as the saved run did before loading its state. (accelerate also reloads
        a fresh optimizer's empty state to move it: that decides nothing.)"""
        if getattr(self, "_bespoke_flat", None) is None:
            saved = [g.get(MEMBERS) for g in state_dict["param_groups"]]
            if any(saved) or state_dict["state"]:  # flat state, or per-tensor state: stay per tensor
                _flatten(self, saved)
        return load_state_dict(self, state_dict, *args, **kwargs)

    rebind(Optimizer8bit, "step", flat_step)
    rebind(Optimizer8bit, "zero_grad", flat_zero_grad)
    rebind(Optimizer8bit, "load_state_dict", flat_load_state_dict)
    Optimizer8bit._bespoke_flat_patched = True
    # torch.optim hooks the step of each optimizer class it makes (a profiler wrapper on the subclass, e.g.
    # AdamW8bit.step): drop those made before the patch, so that the next optimizer hooks flat_step instead
    todo = list(Optimizer8bit.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if getattr(cls.__dict__.get("step"), "hooked", False):
            delattr(cls, "step")


def reduce_mean(grads: list[torch.Tensor]) -> None:
    """All-reduce `grads` in place, in one call per dtype: the sum over processes divided by their number."""
    import torch.distributed as dist

    world = dist.get_world_size()
    by_dtype: dict[tuple, list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault((g.device, g.dtype), []).append(g)
    for same in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in same])
        with _timer.timed(flat):
            dist.all_reduce(flat, dist.ReduceOp.SUM)
        flat /= world
        parts = flat.split([g.numel() for g in same])
        torch._foreach_copy_(same, [v.view_as(g) for v, g in zip(parts, same, strict=True)])


class _AllReduceTimer:
    """BESPOKE_TIME_ALLREDUCE=1 (the GPU bench's diagnosis of multi-GPU scaling): each all-reduce timed by CUDA
    events, read one call later (no added sync), the mean printed every 20 calls by each process."""

    EVERY = 20

    def __init__(self):
        self.on = os.environ.get("BESPOKE_TIME_ALLREDUCE") == "1"
        self.pending: list = []
        self.ms: list[float] = []

    @contextlib.contextmanager
    def timed(self, flat: torch.Tensor):
        if not self.on or not flat.is_cuda:
            yield
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        yield
        end.record()
        for s, e in self.pending:
            e.synchronize()
            self.ms.append(s.elapsed_time(e))
        self.pending = [(start, end)]
        if self.ms and len(self.ms) % self.EVERY == 0:
            print(f"bespoke: rank {os.environ.get('RANK', '?')} all-reduce of {flat.numel() * flat.element_size() / 1e6:.0f} MB: "
                  f"{sum(self.ms[-self.EVERY:]) / self.EVERY:.2f} ms mean over {self.EVERY} steps", flush=True)


_timer = _AllReduceTimer()


def bucketed_all_reduce() -> None:
    """Patch sd-scripts' NetworkTrainer.all_reduce_network (train_network.py; sd-scripts on sys.path)."""
    import train_network

    if getattr(train_network.NetworkTrainer, "_bespoke_bucketed", False):
        return

    def all_reduce_network(self, accelerator, network):
        if accelerator.num_processes == 1:
            return  # accelerate's reduce only clones each gradient on one process
        reduce_mean([p.grad for p in network.parameters() if p.grad is not None])

    rebind(train_network.NetworkTrainer, "all_reduce_network", all_reduce_network)
    train_network.NetworkTrainer._bespoke_bucketed = True
