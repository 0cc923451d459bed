"""The fast profile's flat optimizer and bucketed all-reduce against what they replace, on the CPU.

    python flat_step.py SD_SCRIPTS_DIR      (prints one JSON line; the kohya test reads it)

bitsandbytes' AdamW8bit (its CPU kernels) per tensor, as sd-scripts runs it, then the same with
bespoke.fewsteps' flat groups: the same LoRA-shaped tensors (one never gets a gradient, as LoRA on
SDXL's unused text-encoder layer), two groups with their own learning rates that change every step.
Then a resume: a fresh optimizer loads the flat state after 2 steps and takes the last 2. Then the
all-reduce, over 2 gloo processes: accelerate's per-tensor mean against reduce_mean's one call.
"""

import io
import json
import os
import sys

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SHAPES = [[(128, 320), (640, 128), (128, 2048), (1280, 128)], [(128, 768), (768, 128), (128, 1280)]]
NO_GRAD = (1, 2)  # group 1's last tensor never gets a gradient
STEPS = 4


def params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [[torch.nn.Parameter(torch.randn(s, generator=g) * 0.02) for s in shapes] for shapes in SHAPES]


def grads(step):
    g = torch.Generator().manual_seed(1000 + step)
    return [[torch.randn(s, generator=g) for s in shapes] for shapes in SHAPES]


def make_opt(ps):
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit([{"params": ps[0], "lr": 1e-3}, {"params": ps[1], "lr": 5e-4}], lr=1e-3)


def train(opt, ps, steps):
    for step in steps:
        for gi, gs in enumerate(grads(step)):
            for pi, (p, g) in enumerate(zip(ps[gi], gs, strict=True)):
                p.grad = None if (gi, pi) == NO_GRAD else g.clone()
        for gi, group in enumerate(opt.param_groups):  # a scheduler's change
            group["lr"] = (1e-3, 5e-4)[gi] * (1 - 0.1 * step)
        opt.step()
        opt.zero_grad(set_to_none=True)


def flat_state(opt):
    """Per-tensor state concatenated (reference) or the flat tensor's state, for group 0."""
    st = [opt.state[p] for p in opt.param_groups[0]["params"] if p in opt.state]
    return {k: torch.cat([s[k].reshape(-1) for s in st]) for k in ("state1", "state2", "absmax1", "absmax2")}


def max_diff(a, b):
    return max(float((x - y).detach().abs().max()) for x, y in zip(a, b, strict=True))


def reduce_worker(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    from bespoke.launch.fewsteps import reduce_mean

    g = torch.Generator().manual_seed(rank)
    gs = [torch.randn(s, generator=g) for s in SHAPES[0] + SHAPES[1]]
    ref = []
    for t in gs:  # accelerate's reduce(mean): clone, all_reduce(SUM), /= num_processes
        c = t.clone()
        dist.all_reduce(c, dist.ReduceOp.SUM)
        c /= 2
        ref.append(c)
    reduce_mean(gs)
    out[rank] = max_diff(gs, ref)
    dist.destroy_process_group()


def main():
    sd = sys.argv[1]
    sys.path.insert(0, sd)
    from bespoke.launch import fewsteps

    ref_ps = params()
    ref = make_opt(ref_ps)
    train(ref, ref_ps, range(STEPS))
    ref_state = flat_state(ref)

    fewsteps.flatten_8bit_groups()
    ps = params()
    opt = make_opt(ps)
    train(opt, ps, range(STEPS))
    flat = opt._bespoke_flat
    result = {
        "flat_groups": len(flat),
        "members": [len(fg.members) for fg in flat],
        "param_diff": max_diff(sum(ps, []), sum(ref_ps, [])),
        "state_diff": max(float((flat_state(opt)[k].float() - v.float()).abs().max()) for k, v in ref_state.items()),
        "no_grad_untouched": bool(torch.equal(ps[1][2], params()[1][2])),
        "member_grads_cleared": all(p.grad is None for fg in flat for p in fg.members),
        "state_entries": len(opt.state),
    }

    # resume: 2 steps, save, a fresh optimizer on the saved weights loads the flat state, 2 more steps
    ps2 = params()
    opt2 = make_opt(ps2)
    train(opt2, ps2, range(2))
    buf = io.BytesIO()
    torch.save({"opt": opt2.state_dict(), "weights": [[p.detach().clone() for p in g] for g in ps2]}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    ps3 = params(seed=7)  # other values: the load must bring the saved ones
    with torch.no_grad():
        for g3, gw in zip(ps3, saved["weights"], strict=True):
            for p, w in zip(g3, gw, strict=True):
                p.copy_(w)
    opt3 = make_opt(ps3)
    opt3.load_state_dict(saved["opt"])
    train(opt3, ps3, range(2, STEPS))
    result["resume_param_diff"] = max_diff(sum(ps3, []), sum(ref_ps, []))

    # sd-scripts' all_reduce_network, patched: on one process the gradients stay as they are
    import train_network

    fewsteps.bucketed_all_reduce()

    class OneProcess:
        num_processes = 1

    net = torch.nn.Linear(4, 4)
    net(torch.ones(1, 4)).sum().backward()
    before = net.weight.grad
    train_network.NetworkTrainer.all_reduce_network(None, OneProcess(), net)
    result["one_process_grad_kept"] = net.weight.grad is before

    out = mp.Manager().dict()
    mp.spawn(reduce_worker, args=(29500 + os.getpid() % 1000, out), nprocs=2)
    result["reduce_diff"] = [out[0], out[1]]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
