"""Two gloo processes on the CPU compute VTC exactly like one process on the concatenated batch.

Each rank's loss is the mean over its local rows, so the global loss is the mean over ranks.
The gather's backward sums over ranks, so rank r's feature gradient is world_size times the
global-loss gradient of its slice; averaging parameter gradients over ranks (what DDP does)
gives exactly the global-loss parameter gradient.

VTM gathers the ranks' captions, each rank's padded to its own batch's longest: ``gather_texts`` pads them
to one length first.
"""
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from videoqf.objectives.distributed import gather_cat, gather_texts, get_rank, get_world_size
from videoqf.objectives.vtc import VideoTextContrastive
from videoqf.train.engine import end_process, shutdown_distributed

WORLD, B, Q, H, D = 2, 3, 4, 8, 6


def make_inputs():
    gen = torch.Generator().manual_seed(0)
    qo = torch.randn(WORLD * B, Q, H, generator=gen)
    tc = torch.randn(WORLD * B, H, generator=gen)
    # Video 5 has a caption on each rank: a cross-rank same-video pair.
    ids = torch.tensor([5, 1, 2, 5, 3, 4])
    return qo, tc, ids


def make_module():
    torch.manual_seed(0)
    return VideoTextContrastive(H, D, temperature_init=0.1)


@contextmanager
def process_group(rank, init_file):
    """This rank in the gloo group; on success the process ends through ``end_process``, not the interpreter's
    finalization, which a gloo thread still releasing a collective can abort."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        yield
    except BaseException:
        shutdown_distributed()
        raise
    end_process(0)


def worker(rank, init_file, out_dir):
    with process_group(rank, init_file):
        assert get_rank() == rank and get_world_size() == WORLD
        qo, tc, ids = make_inputs()
        local = slice(rank * B, (rank + 1) * B)
        qo_local = qo[local].clone().requires_grad_(True)
        tc_local = tc[local].clone().requires_grad_(True)
        module = make_module()
        out = module(qo_local, tc_local, ids[local])
        out["loss"].backward()
        loss = out["loss"].detach().clone()
        dist.all_reduce(loss)
        params = {}
        for name, p in module.named_parameters():
            g = p.grad.clone()
            dist.all_reduce(g)
            params[name] = g / WORLD
        torch.save(
            {
                "loss": loss / WORLD,
                "qo_grad": qo_local.grad,
                "tc_grad": tc_local.grad,
                "params": params,
                "ids_all": out["video_ids_all"],
                "gathered_qo": gather_cat(qo_local.detach(), with_grad=False),
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )


def test_two_process_vtc_equals_single_process(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)

    qo, tc, ids = make_inputs()
    qo.requires_grad_(True)
    tc.requires_grad_(True)
    module = make_module()
    out = module(qo, tc, ids)
    out["loss"].backward()

    for rank in range(WORLD):
        res = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        local = slice(rank * B, (rank + 1) * B)
        torch.testing.assert_close(res["loss"], out["loss"].detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(res["qo_grad"] / WORLD, qo.grad[local], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(res["tc_grad"] / WORLD, tc.grad[local], atol=1e-5, rtol=1e-5)
        for name, p in module.named_parameters():
            torch.testing.assert_close(res["params"][name], p.grad, atol=1e-5, rtol=1e-5)
        assert torch.equal(res["ids_all"], ids)
        torch.testing.assert_close(res["gathered_qo"], qo.detach())


def texts_worker(rank, init_file, out_dir):
    with process_group(rank, init_file):
        length = 3 + 2 * rank  # each rank pads its batch to its own longest caption
        ids = torch.arange(B * length).view(B, length) + 1 + 100 * rank
        mask = torch.ones(B, length, dtype=torch.bool)
        mask[0, -1] = False
        gathered = gather_texts(ids, mask)
        torch.save({"ids": gathered[0], "mask": gathered[1]}, os.path.join(out_dir, f"texts{rank}.pt"))


def test_texts_of_different_lengths_are_gathered_right_padded_to_the_longest(tmp_path):
    mp.spawn(texts_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=WORLD, join=True)
    longest = 3 + 2 * (WORLD - 1)
    for rank in range(WORLD):
        res = torch.load(tmp_path / f"texts{rank}.pt", weights_only=True)
        assert res["ids"].shape == res["mask"].shape == (WORLD * B, longest)
        for r in range(WORLD):
            length, rows = 3 + 2 * r, slice(r * B, (r + 1) * B)
            assert torch.equal(res["ids"][rows, :length], torch.arange(B * length).view(B, length) + 1 + 100 * r)
            assert not res["mask"][rows, length:].any() and not res["ids"][rows, length:].any()
            assert res["mask"][rows, :length].sum() == B * length - 1
