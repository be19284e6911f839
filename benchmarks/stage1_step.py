"""One BLIP-2 stage-1 training step (contrastive + matching + generation) at BLIP-2 size: videoqf vs LAVIS's way.

Ours: ``Stage1Loss`` over a ``VideoLanguageModel`` whose head is BLIP-2's image Q-Former (the ``blip2`` recipe's
``meanpool`` backend on one frame of cached 257 x 1408 ViT-g tokens): the encoder tokens are projected to
keys/values once per batch and shared by the three passes, and generation continues the query pass's cache.

Reference: what LAVIS ``blip2_qformer.py`` ``Blip2Qformer.forward`` does, written here on transformers'
``Blip2QFormerModel`` / ``Blip2TextEmbeddings`` modules (dropout off on both sides), behind the ``ln_vision``
LayerNorm that LAVIS trains over the frozen ViT's output (ours has it too):
- ITC: a query pass over the image tokens (keeping each layer's query keys/values, LAVIS's ``use_cache=True``)
  and a text-only pass; max-over-queries similarity, label smoothing 0.1;
- ITM: hard negatives drawn from softmax(similarity); ``[queries; text]`` bi-directionally over 3B
  (image, text) pairs, the image tokens' keys/values projected again for all 3B;
- ITG: the caption with [DEC] first, through the text rows of every layer with a causal mask whose keys are
  ``[the query pass's keys/values; text]`` (LAVIS passes ``past_key_values``; transformers 5 has none, so the
  query keys/values are read off the query pass by forward hooks on each self-attention's key / value
  projections and the layer's own modules run the text rows: the same tensors, with their gradients;
  tests/test_stage1_reference.py checks it against the joint pass under LAVIS's decoder mask).

Both sides train all of these weights; the frozen image tokens need no gradient. Timing: forward + backward
of the summed loss, interleaved repeats, medians (``videoqf.measure``).

    python benchmarks/stage1_step.py                    # BLIP-2 size, batch 8, fp32 and bf16 autocast
    python benchmarks/stage1_step.py --quick --no-write
"""
from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel
from transformers.models.blip_2.modeling_blip_2 import Blip2TextEmbeddings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_result  # noqa: E402
from benchmarks.qformer_vs_hf import count_flops  # noqa: E402
from videoqf.data.batch import CACHED_FRAMES  # noqa: E402
from videoqf.measure import interleaved_medians  # noqa: E402
from videoqf.models.config import ModelConfig  # noqa: E402
from videoqf.models.video_lm import VideoLanguageModel  # noqa: E402
from videoqf.objectives.stage1 import Stage1Loss  # noqa: E402

BLIP2 = dict(hidden=768, layers=12, heads=12, ffn=3072, width=1408, queries=32, tokens=257, vocab=30523, embed=256)
QUICK = dict(hidden=64, layers=4, heads=4, ffn=128, width=48, queries=8, tokens=17, vocab=100, embed=32)


class Words:
    """The little of a tokenizer the model reads: its size and the [DEC] id."""

    def __init__(self, size: int):
        self.size, self.bos_token_id = size, size - 1

    def __len__(self) -> int:
        return self.size

    def get_vocab(self) -> dict[str, int]:
        return {f"w{i}": i for i in range(self.size)}


def build_ours(size: dict) -> VideoLanguageModel:
    qformer = dict(hidden_size=size["hidden"], num_layers=size["layers"], num_heads=size["heads"],
                   intermediate_size=size["ffn"], encoder_width=size["width"], num_queries=size["queries"],
                   vocab_size=size["vocab"], hidden_dropout=0.0, attention_dropout=0.0)
    config = ModelConfig(variant="meanpool", backend={"qformer": qformer}, use_audio=False)
    config.objectives.embed_dim = size["embed"]
    return VideoLanguageModel(config, Words(size["vocab"]), encoders=False).train()


class LavisStage1(nn.Module):
    """LAVIS's ``Blip2Qformer`` stage-1 forward on transformers' Q-Former modules (see the module docstring)."""

    def __init__(self, size: dict):
        super().__init__()
        cfg = Blip2QFormerConfig(hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                                 num_attention_heads=size["heads"], intermediate_size=size["ffn"],
                                 cross_attention_frequency=2, encoder_hidden_size=size["width"],
                                 vocab_size=size["vocab"], use_qformer_text_input=True, attn_implementation="sdpa",
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.bert = Blip2QFormerModel(cfg)
        self.embeddings = Blip2TextEmbeddings(cfg)
        self.ln_vision = nn.LayerNorm(size["width"])  # LAVIS trains it over the frozen ViT's output
        self.query_tokens = nn.Parameter(torch.randn(1, size["queries"], size["hidden"]) * 0.02)
        self.vision_proj = nn.Linear(size["hidden"], size["embed"])
        self.text_proj = nn.Linear(size["hidden"], size["embed"])
        self.itm_head = nn.Linear(size["hidden"], 2)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.lm_transform = nn.Sequential(nn.Linear(size["hidden"], size["hidden"]), nn.GELU(),
                                          nn.LayerNorm(size["hidden"], eps=cfg.layer_norm_eps))
        self.lm_bias = nn.Parameter(torch.zeros(size["vocab"]))  # decoder weight tied to the word embeddings
        self.heads, self.bos = size["heads"], size["vocab"] - 1
        self._past: list[list[torch.Tensor]] = []
        for layer in self.bert.encoder.layer:
            att = layer.attention.attention
            att.key.register_forward_hook(self._keep)
            att.value.register_forward_hook(self._keep)

    def _keep(self, module, args, output) -> None:
        if self._past is not None:
            self._past.append(output)

    def _run_queries(self, image: torch.Tensor):
        """Query pass over image [B, N, W] -> (query output [B, Q, H], per layer (key, value) [B, Q, H])."""
        self._past = []
        out = self.bert(query_embeds=self.query_tokens.expand(image.shape[0], -1, -1),
                        encoder_hidden_states=image).last_hidden_state
        kept, self._past = self._past, None
        return out, list(zip(kept[0::2], kept[1::2]))

    def _causal_text(self, ids: torch.Tensor, mask: torch.Tensor, past) -> torch.Tensor:
        """LAVIS's ITG text pass with ``past_key_values``: text rows of every layer, keys [past queries; text]."""
        batch, length = ids.shape
        x = self.bert.dropout(self.bert.layernorm(self.embeddings(input_ids=ids)))
        queries = past[0][0].shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        allowed = torch.cat([torch.ones(length, queries, dtype=torch.bool, device=ids.device), causal], dim=1)
        allowed = allowed[None] & torch.cat([torch.ones(batch, queries, dtype=torch.bool, device=ids.device),
                                             mask.bool()], dim=1)[:, None]

        def heads(t):
            return t.view(batch, t.shape[1], self.heads, -1).transpose(1, 2)

        for layer, (k_past, v_past) in zip(self.bert.encoder.layer, past):
            att = layer.attention.attention
            k = torch.cat([k_past, att.key(x)], dim=1)
            v = torch.cat([v_past, att.value(x)], dim=1)
            y = F.scaled_dot_product_attention(heads(att.query(x)), heads(k), heads(v), attn_mask=allowed[:, None])
            x = layer.feed_forward_chunk(layer.attention.output(y.transpose(1, 2).flatten(2), x))
        return x

    def forward(self, image: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, generator) -> torch.Tensor:
        batch = image.shape[0]
        image = self.ln_vision(image)
        query_output, past = self._run_queries(image)
        image_feats = F.normalize(self.vision_proj(query_output), dim=-1)  # [B, Q, D]
        text_output = self.bert(query_embeds=self.embeddings(input_ids=ids), query_length=0,
                                attention_mask=mask).last_hidden_state
        text_feat = F.normalize(self.text_proj(text_output[:, 0]), dim=-1)  # [B, D]

        temp = self.temp.clamp(0.001, 0.5)
        sim_i2t = torch.einsum("iqd,td->itq", image_feats, text_feat).amax(-1) / temp
        sim_t2i = torch.einsum("td,iqd->tiq", text_feat, image_feats).amax(-1) / temp
        targets = torch.arange(batch, device=image.device)
        loss_itc = (F.cross_entropy(sim_i2t.float(), targets, label_smoothing=0.1)
                    + F.cross_entropy(sim_t2i.float(), targets, label_smoothing=0.1)) / 2

        with torch.no_grad():
            eye = torch.eye(batch, dtype=torch.bool, device=image.device)
            w_t2i = F.softmax(sim_t2i.float(), dim=1).masked_fill(eye, 0) + 1e-4 * ~eye
            w_i2t = F.softmax(sim_i2t.float(), dim=1).masked_fill(eye, 0) + 1e-4 * ~eye
            neg_image = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1)
            neg_text = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1)
        ids_all = torch.cat([ids, ids, ids[neg_text]])
        mask_all = torch.cat([mask, mask, mask[neg_text]])
        image_all = torch.cat([image, image[neg_image], image])
        queries = self.query_tokens.expand(3 * batch, -1, -1)
        joint = torch.cat([queries, self.embeddings(input_ids=ids_all)], dim=1)
        joint_mask = torch.cat([torch.ones(queries.shape[:2], dtype=mask.dtype, device=mask.device), mask_all], 1)
        itm = self.bert(query_embeds=joint, query_length=queries.shape[1], attention_mask=joint_mask,
                        encoder_hidden_states=image_all).last_hidden_state[:, :queries.shape[1]]
        itm_labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(image.device)
        loss_itm = F.cross_entropy(self.itm_head(itm).mean(1).float(), itm_labels)

        dec_ids = ids.clone()
        dec_ids[:, 0] = self.bos
        hidden = self._causal_text(dec_ids, mask, past)
        logits = F.linear(self.lm_transform(hidden), self.embeddings.word_embeddings.weight, self.lm_bias)
        labels = ids[:, 1:].masked_fill(~mask[:, 1:].bool(), -100)
        loss_itg = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100,
                                   label_smoothing=0.1)
        return loss_itc + loss_itm + loss_itg


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes for a smoke run")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--text-len", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32 / bf16 (autocast)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="torch.compile both models first")
    ap.add_argument("--note", default="", help="a line on the machine's state (e.g. other jobs running)")
    ap.add_argument("--no-write", action="store_true", help="print the table without writing results/")
    args = ap.parse_args(argv)
    size = QUICK if args.quick else BLIP2
    device = torch.device(args.device)
    torch.manual_seed(0)
    ours, lavis = build_ours(size).to(device), LavisStage1(size).to(device).train()
    loss = Stage1Loss(ours.config.objectives)
    image = torch.randn(args.batch, size["tokens"], size["width"], device=device)  # frozen ViT-g tokens
    ids = torch.randint(1, size["vocab"] - 1, (args.batch, args.text_len), device=device)
    lengths = torch.randint(args.text_len // 2, args.text_len + 1, (args.batch,), device=device)
    mask = torch.arange(args.text_len, device=device)[None] < lengths[:, None]
    batch = {CACHED_FRAMES: image[:, None], "frame_mask": torch.ones(args.batch, 1, dtype=torch.bool, device=device),
             "text_ids": ids, "text_mask": mask, "video_id": torch.arange(args.batch, device=device)}
    gen = torch.Generator(device=device).manual_seed(0)
    run_ours = lambda: loss(ours, batch, generator=gen)["loss"]  # noqa: E731
    run_lavis = lambda: lavis(image, ids, mask.long(), gen)  # noqa: E731
    if args.compile:
        ours.backend.head.compile()
        lavis.bert.compile()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    rows = []
    for precision in args.precisions.split(","):
        dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]

        def step(fn, model, dtype=dtype):
            def run():  # a training step's gradients start empty (zero_grad(set_to_none=True)), not accumulated
                model.zero_grad(set_to_none=True)
                with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
                    value = fn()
                value.backward()
            return run

        times = interleaved_medians({"lavis": step(run_lavis, lavis), "ours": step(run_ours, ours)},
                                    repeats=args.repeats, sync=sync)
        rows.append(f"| {precision}{' autocast' if dtype else ''} | {times['lavis'] * 1e3:.0f} | "
                    f"{times['ours'] * 1e3:.0f} | {times['lavis'] / times['ours']:.2f}x |")
    flops = {name: count_flops(lambda fn=fn: fn().backward()) for name, fn in (("lavis", run_lavis), ("ours", run_ours))}
    params = {name: sum(p.numel() for p in m.parameters() if p.requires_grad) for name, m in
              (("lavis", lavis), ("ours", ours))}
    label = ("tiny (quick)" if args.quick else
             "BLIP-2 size (12 layers, 768 wide, 32 queries, cross-attention every 2nd layer, 257x1408 image tokens)")
    table = (
        f"{label}, batch {args.batch}, text length {args.text_len} (padded rows of {args.text_len // 2} to "
        f"{args.text_len} real tokens), on {device.type}{', torch.compile' if args.compile else ''}; trained "
        f"parameters: reference {params['lavis'] / 1e6:.1f} M, ours {params['ours'] / 1e6:.1f} M.\n\n"
        "One step: ITC/VTC + ITM/VTM (hard negatives, 3B pairs) + ITG/VTG, forward and backward, median of "
        f"{args.repeats} interleaved repeats. FLOPs per step (fp32 count): reference {flops['lavis'] / 1e9:.0f} G, "
        f"ours {flops['ours'] / 1e9:.0f} G ({flops['lavis'] / flops['ours']:.2f}x fewer).{(' ' + args.note) if args.note else ''}\n\n"
        "| precision | LAVIS-style reference on transformers modules (ms) | videoqf Stage1Loss (ms) | "
        "ratio (reference / ours) |\n|---|---:|---:|---:|\n" + "\n".join(rows) + "\n")
    print(table)
    if not args.no_write and not args.quick:
        suffix = ("" if device.type == "cpu" else f"-{device.type}") + ("-compile" if args.compile else "")
        print("wrote", write_result(f"stage1_step{suffix}", "Stage-1 step: videoqf vs LAVIS's three passes", table))
    return table


if __name__ == "__main__":
    main()
