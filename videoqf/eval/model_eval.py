"""Evaluate a trained ``VideoLanguageModel`` on held-out clips.

- Retrieval (BLIP-2's protocol): contrastive similarity (max over the head's queries), then the top-k
  candidates re-scored by the matching head; text-to-video and video-to-text R@1/5/10.
- Synthetic pairs (``pairs.json``): order accuracy on order-swapped pairs and sound accuracy on
  sound-swapped pairs, scored by the matching head (``videoqf.eval.synthetic.pair_accuracy``).
- Captions (when the model has its stage-2 LLM): CIDEr and BLEU-4 against the references, and on the
  synthetic world the share of generated captions that name the right events in the right order and
  the right sound.
"""
from __future__ import annotations

import torch
from einops import einsum
from torch.utils.data import DataLoader
from tqdm import tqdm

from videoqf.eval.captions import caption_metrics
from videoqf.eval.retrieval import retrieval_metrics, two_stage_retrieval_metrics
from videoqf.eval.synthetic import caption_order_correct, caption_sound_correct, pair_accuracy
from videoqf.models.collate import tokenize
from videoqf.qformer import CrossContext


def concat_contexts(contexts: list[CrossContext]) -> CrossContext:
    """Join per-batch cross-attention contexts along the batch (padding masks made explicit)."""
    kv = [(torch.cat([c.kv[i][0] for c in contexts]), torch.cat([c.kv[i][1] for c in contexts]))
          for i in range(len(contexts[0].kv))]
    if all(c.mask is None for c in contexts):
        return CrossContext(kv=kv, mask=None)
    masks = [c.mask if c.mask is not None else torch.ones(c.batch_size, 1, 1, c.kv[0][0].shape[2], dtype=torch.bool)
             for c in contexts]
    return CrossContext(kv=kv, mask=torch.cat(masks))


@torch.no_grad()
def evaluate_model(model, dataset, collate, *, rerank_k: int = 16, batch_size: int = 16, pairs: dict | None = None,
                   captions: bool = False, max_new_tokens: int = 32, num_beams: int = 1,
                   progress: bool = True) -> tuple[dict[str, float], list[dict]]:
    """Metrics on ``dataset`` (one item per clip: ``caption_mode="first"``) and per-clip samples
    (path, reference, generated caption)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=0)
    feats, contexts, record_ids, generated = [], [], [], []
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        vt = model.encode(batch)
        feats.append(model.stage1.video_features(vt))
        contexts.append(vt.context)
        record_ids += [dataset.items[int(i)][0] for i in batch["index"]]
        if captions:
            generated += model.caption(batch, plain=vt, max_new_tokens=max_new_tokens, num_beams=num_beams)
    records = [dataset.records[r] for r in record_ids]
    texts, text_to_video = [], []
    for v, rec in enumerate(records):
        texts += rec.captions
        text_to_video += [v] * len(rec.captions)
    max_len = model.config.max_text_len
    ids, mask = tokenize(model.tokenizer, texts, max_len)
    text_feat = torch.cat([model.stage1.text_features(model.backend, ids[i : i + batch_size], mask[i : i + batch_size])
                           for i in range(0, len(texts), batch_size)])
    video_feat = torch.cat(feats)
    sim = einsum(text_feat, video_feat, "t d, v q d -> t v q").amax(-1)
    context = concat_contexts(contexts)

    def match(text_idx: torch.Tensor, video_idx: torch.Tensor) -> torch.Tensor:
        return model.stage1.matching_scores(model.backend, context.select(video_idx), ids[text_idx], mask[text_idx])

    metrics = {f"vtc_{k}": v for k, v in retrieval_metrics(sim, text_to_video).items() if k.endswith("_r1")}
    metrics.update(two_stage_retrieval_metrics(sim, text_to_video, match, rerank_k))
    if pairs:
        clip_ids = [rec.meta.get("id") for rec in records]
        first_text = {}
        for t, v in enumerate(text_to_video):
            first_text.setdefault(clip_ids[v], t)
        video_index = {cid: v for v, cid in enumerate(clip_ids)}
        for kind in ("order", "sound"):
            present = [p for p in pairs.get(kind, []) if p[0] in video_index and p[1] in video_index]
            if present:
                metrics[f"{kind}_pair_acc"] = pair_accuracy(match, present, first_text, video_index)
    samples = [{"path": rec.video, "reference": rec.captions[0]} for rec in records]
    if captions:
        for sample, text in zip(samples, generated):
            sample["generated"] = text
        metrics.update(caption_metrics({i: g for i, g in enumerate(generated)},
                                       {i: rec.captions for i, rec in enumerate(records)}))
        metrics["caption_order_acc"] = sum(caption_order_correct(g, r.captions[0])
                                           for g, r in zip(generated, records)) / len(records)
        metrics["caption_sound_acc"] = sum(caption_sound_correct(g, r.captions[0])
                                           for g, r in zip(generated, records)) / len(records)
    return metrics, samples
