"""videoqf's QFormer vs transformers' Blip2QFormerModel (sdpa), same weights, side by side in one run.

Measures forward and forward+backward time (interleaved repeats, medians), the memory a training step
holds for backward (bytes of tensors autograd saves; on a GPU, peak allocated memory too), and the
achieved FLOP/s as a fraction of a large fp32 matmul's FLOP/s measured in the same run.

    python benchmarks/qformer_vs_hf.py            # BLIP-2 size, batch 8
    python benchmarks/qformer_vs_hf.py --quick    # tiny sizes, seconds (used by the tests)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count
from transformers import Blip2QFormerConfig, Blip2QFormerModel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import matmul_flops, write_result  # noqa: E402
from videoqf.measure import interleaved_medians, saved_bytes  # noqa: E402
from videoqf.qformer import QFormer  # noqa: E402


def build_pair(*, hidden, layers, heads, ffn, width, queries, device, dtype):
    cfg = Blip2QFormerConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                             intermediate_size=ffn, cross_attention_frequency=2, encoder_hidden_size=width,
                             attn_implementation="sdpa", hidden_dropout_prob=0.0,
                             attention_probs_dropout_prob=0.0)  # dropout off: both compute one function
    torch.manual_seed(0)
    hf = Blip2QFormerModel(cfg)
    query_tokens = torch.randn(1, queries, hidden) * 0.02
    ours = QFormer.from_hf_blip2(hf, query_tokens=query_tokens)
    for m in (hf, ours):
        m.to(device=device, dtype=dtype).train()
    return hf, ours, query_tokens.to(device=device, dtype=dtype).requires_grad_()


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _sdpa_cpu_backward_flops(grad_out_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


# FlopCounterMode has formulas for the GPU SDPA kernels only; the fused CPU kernel does the same work
CPU_SDPA_FLOPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
                  torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _sdpa_cpu_backward_flops}


def count_flops(fn) -> int:
    with FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FLOPS) as counter:
        fn()
    return counter.get_total_flops()


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--note", default="", help="a line on the machine's state (e.g. other jobs running)")
    ap.add_argument("--no-write", action="store_true", help="print the table without writing results/")
    args = ap.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if args.quick:
        size = dict(hidden=64, layers=4, heads=4, ffn=128, width=48, queries=8)
        tokens = 17
    else:  # BLIP-2: BERT-base Q-Former, EVA ViT-g features (257 tokens of width 1408)
        size = dict(hidden=768, layers=12, heads=12, ffn=3072, width=1408, queries=32)
        tokens = 257
    hf, ours, query_tokens = build_pair(device=device, dtype=dtype, **size)
    enc = torch.randn(args.batch, tokens, size["width"], device=device, dtype=dtype)  # frozen: no grad

    def hf_fwd():
        return hf(query_embeds=query_tokens.expand(args.batch, -1, -1), encoder_hidden_states=enc).last_hidden_state

    def ours_fwd():
        return ours(enc).query_output

    with torch.no_grad():
        diff = (hf_fwd().float() - ours_fwd().float()).abs().max().item()

    def step(fwd, leaves):
        def run():  # a training step's gradients start empty (zero_grad(set_to_none=True)), not accumulated
            for p in leaves:
                p.grad = None
            fwd().float().square().mean().backward()
        return run

    def infer(fwd):
        def run():
            with torch.no_grad():
                fwd()
        return run

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = interleaved_medians({"hf_fwd": infer(hf_fwd), "ours_fwd": infer(ours_fwd),
                                 "hf_step": step(hf_fwd, [*hf.parameters(), query_tokens]),
                                 "ours_step": step(ours_fwd, list(ours.parameters()))},
                                repeats=args.repeats, sync=sync)
    flops = {name: {"fwd": count_flops(f), "step": count_flops(step(f, []))}  # forward: the same work with grad on
             for name, f in (("hf", hf_fwd), ("ours", ours_fwd))}
    n = 2048 if not args.quick else 512
    peak_flops = matmul_flops(n, device=device, dtype=dtype, repeats=args.repeats, sync=sync)
    mem = {name: saved_bytes(lambda f=f: f().float().square().mean()) for name, f in
           (("hf", hf_fwd), ("ours", ours_fwd))}
    for m in (hf, ours):
        m.zero_grad(set_to_none=True)
    gpu_peak = ""
    if device.type == "cuda":
        peaks = {}
        for name, f in (("hf", hf_fwd), ("ours", ours_fwd)):
            torch.cuda.reset_peak_memory_stats()
            step(f)()
            peaks[name] = torch.cuda.max_memory_allocated() / 2**20
        gpu_peak = (f"| peak GPU memory, training step (MiB) | {peaks['hf']:.0f} | {peaks['ours']:.0f} | "
                    f"{peaks['hf'] / peaks['ours']:.2f}x |\n")

    label = "tiny (quick)" if args.quick else "BLIP-2 size (12 layers, 768 wide, 32 queries, 257x1408 tokens)"
    table = (
        f"{label}, batch {args.batch}, {args.dtype} on {device.type}; max |ours - hf| = {diff:.2e}\n\n"
        "Forward is inference (no_grad), forward+backward a training step. "
        + ("Ours folds the cross-attention key/value projections into the queries (videoqf.modules.attention."
           "attend_folded); " if ours.folds_cheaper else "Both project the encoder tokens to keys and values "
           "(ours in one matrix product for every cross-attention layer; folding them into the queries would not "
           "save 4x the FLOPs here, QFormer.folds_cheaper); ")
        + f"transformers projects the encoder tokens per layer.{(' ' + args.note) if args.note else ''}\n\n"
        "| measure | transformers Blip2QFormerModel (sdpa) | videoqf QFormer | ratio (hf / ours) |\n"
        "|---|---|---|---|\n"
        f"| forward (ms, median of {args.repeats}) | {times['hf_fwd'] * 1e3:.1f} | {times['ours_fwd'] * 1e3:.1f} | "
        f"{times['hf_fwd'] / times['ours_fwd']:.2f}x |\n"
        f"| forward+backward (ms) | {times['hf_step'] * 1e3:.1f} | {times['ours_step'] * 1e3:.1f} | "
        f"{times['hf_step'] / times['ours_step']:.2f}x |\n"
        f"| activations saved for backward (MiB) | {mem['hf'] / 2**20:.1f} | {mem['ours'] / 2**20:.1f} | "
        f"{mem['hf'] / mem['ours']:.2f}x |\n"
        f"{gpu_peak}"
        f"| FLOPs per forward / forward+backward (GFLOP) | {flops['hf']['fwd'] / 1e9:.1f} / "
        f"{flops['hf']['step'] / 1e9:.1f} | {flops['ours']['fwd'] / 1e9:.1f} / {flops['ours']['step'] / 1e9:.1f} | "
        f"{flops['hf']['step'] / flops['ours']['step']:.2f}x |\n"
        f"| achieved FLOP/s, forward+backward (fraction of a {n}x{n} matmul's {peak_flops / 1e9:.0f} GFLOP/s) | "
        f"{flops['hf']['step'] / times['hf_step'] / peak_flops:.2f} | "
        f"{flops['ours']['step'] / times['ours_step'] / peak_flops:.2f} | |\n"
    )
    print(table)
    if not args.no_write and not args.quick:
        suffix = "" if device.type == "cpu" and args.dtype == "float32" else f"-{device.type}-{args.dtype}"
        print("wrote", write_result(f"qformer_vs_hf{suffix}", "Q-Former: videoqf vs transformers", table))
    return table


if __name__ == "__main__":
    main()
