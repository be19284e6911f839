"""Evaluate a trained ``VideoLanguageModel`` on held-out clips.

- Retrieval (BLIP-2's protocol): contrastive similarity (max over the head's queries), then the top-k
  candidates re-scored by the matching head; text-to-video and video-to-text R@1/5/10.
- Synthetic pairs (``pairs.json``, ``videoqf.eval.synthetic.pair_accuracy``): order accuracy on
  order-swapped pairs scored by the matching head (``order_pair_acc``); with the stage-2 LLM, order and
  sound accuracy scored by the caption's log-likelihood under it (``lm_order_pair_acc``,
  ``lm_sound_pair_acc``). Sound pairs get no matching-head score: every backend's head cross-attends to
  the frames only (``cascaded`` hands its audio tokens to the LLM, as Video-LLaMA does), so both clips of
  a sound pair score exactly alike there.
- Captions (when the model has its stage-2 LLM): CIDEr and BLEU-4 against the references, and on the
  synthetic world the share of generated captions that name the right events in the right order and
  the right sound, the share of the events' words they get right (``event_word_acc``), and that share
  for each word place of an event over all clips (``event_colour_acc``, ``event_shape_acc``,
  ``event_action_acc``, ``event_detail_acc``: which of them a model has learnt).
- ``clips``: the held-out clips evaluated, each once; ``unreadable_skipped``: those that could not be read.
- Head captions (every model): the head Q-Former's own greedy VTG decoding (``head_*``), the same
  caption metrics; they say whether stage 1 grounds the caption before an LLM is involved.
"""
from __future__ import annotations

import torch
from einops import einsum
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader
from tqdm import tqdm

from videoqf.eval.captions import caption_metrics
from videoqf.eval.retrieval import retrieval_metrics, two_stage_retrieval_metrics
from videoqf.eval.synthetic import (EVENT_SLOTS, caption_order_correct, caption_sound_correct, event_slot_counts,
                                    event_word_accuracy, pair_accuracy)
from videoqf.llm.config import MAX_NEW_TOKENS
from videoqf.llm.tokenizer import special_token_ids
from videoqf.models.collate import tokenize
from videoqf.qformer import CrossContext
from videoqf.train.loop import to_device


def concat_contexts(contexts: list[CrossContext]) -> CrossContext:
    """Join per-batch cross-attention contexts along the batch (padding masks made explicit)."""
    def cat_kv(kvs):
        if kvs[0] is None:
            return None
        return [(torch.cat([kv[i][0] for kv in kvs]), torch.cat([kv[i][1] for kv in kvs])) for i in range(len(kvs[0]))]

    kv, time_kv = cat_kv([c.kv for c in contexts]), cat_kv([c.time_kv for c in contexts])
    time = None if contexts[0].time is None else torch.cat([c.time for c in contexts])
    if all(c.mask is None for c in contexts):
        return CrossContext(kv=kv, mask=None, time=time, time_kv=time_kv)
    masks = [c.mask if c.mask is not None else torch.ones(c.batch_size, 1, 1, c.kv[0][0].shape[2], dtype=torch.bool,
                                                         device=c.kv[0][0].device)
             for c in contexts]
    return CrossContext(kv=kv, mask=torch.cat(masks), time=time, time_kv=time_kv)


def concat_tokens(tokens: list[torch.Tensor], masks: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Join per-batch tokens [B, M, H] and masks [B, M] along the batch, padding M with masked tokens."""
    rows = [t for batch in tokens for t in batch]
    return pad_sequence(rows, batch_first=True), pad_sequence([m for batch in masks for m in batch], batch_first=True,
                                                            padding_value=False)


def synthetic_caption_metrics(generated: list[str], references: list[list[str]], prefix: str = "", *,
                              synthetic: bool = True) -> dict[str, float]:
    """CIDEr / BLEU-4 of one generated caption per clip and, on the synthetic world (``synthetic``), its
    event metrics, which parse the world's caption grammar and mean nothing on other captions."""
    metrics = caption_metrics(dict(enumerate(generated)), dict(enumerate(references)))
    firsts = [refs[0] for refs in references]
    for name, fn in (("caption_order_acc", caption_order_correct), ("caption_sound_acc", caption_sound_correct),
                     ("event_word_acc", event_word_accuracy)) if synthetic else ():
        metrics[name] = sum(fn(g, r) for g, r in zip(generated, firsts)) / len(firsts)
    if synthetic:
        counts = [event_slot_counts(g, r) for g, r in zip(generated, firsts)]
        for slot in EVENT_SLOTS:
            total = sum(c[slot][1] for c in counts)
            if total:
                metrics[f"event_{slot}_acc"] = sum(c[slot][0] for c in counts) / total
    return {f"{prefix}{k}": v for k, v in metrics.items()}


@torch.no_grad()
def evaluate_model(model, dataset, collate, *, rerank_k: int = 16, batch_size: int = 16, pairs: dict | None = None,
                   captions: bool = False, max_new_tokens: int = MAX_NEW_TOKENS, num_beams: int = 1,
                   progress: bool = True) -> tuple[dict[str, float], list[dict]]:
    """Metrics on ``dataset`` (one item per clip: ``caption_mode="first"``) and per-clip samples
    (path, reference, generated caption)."""
    model.eval()
    returned: set[int] = set()

    def each_clip_once(items: list[dict]) -> dict | None:
        """The dataset hands back the next readable item in place of an unreadable one; keep each clip once."""
        kept = []
        for item in items:
            if item["index"] not in returned:
                returned.add(item["index"])
                kept.append(item)
        return collate(kept) if kept else None

    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=each_clip_once, num_workers=0)
    # the loader's float32 CPU batches go where the backend computes, in its precision (a bf16 engine casts it)
    param = next(model.backend.parameters())
    device, dtype = param.device, param.dtype
    feats, contexts, records, generated, head_generated = [], [], [], [], []
    llm_tokens, llm_masks, llm_prompts = [], [], []  # what the LLM reads of each clip (captions, pair likelihoods)
    special = special_token_ids(model.tokenizer)
    for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
        if batch is None:
            continue
        batch = to_device(batch, device, dtype)
        vt = model.encode(batch)
        feats.append(model.video_features(vt))
        contexts.append(vt.context)
        records += [dataset.record(int(i)) for i in batch["index"]]
        head_ids = model.head_captions(vt, eos_token_id=special.eos, pad_token_id=special.pad,
                                              max_new_tokens=max_new_tokens)
        head_generated += model.tokenizer.batch_decode(head_ids, skip_special_tokens=True)
        if captions:
            prompts = batch.get("prompt")  # as VideoLanguageModel.caption, with the clips encoded once for both uses
            read = model.encode_for_llm(batch, prompts, encoded=vt)
            generated += model.bridge.generate(read.tokens, read.mask, prompts, max_new_tokens=max_new_tokens,
                                               num_beams=num_beams)
            llm_tokens.append(read.tokens)
            llm_masks.append(read.mask)
            llm_prompts += prompts or []  # the collate gives every batch prompts, or none
    texts, text_to_video = [], []
    for v, rec in enumerate(records):
        texts += rec.captions
        text_to_video += [v] * len(rec.captions)
    max_len = model.config.max_text_len
    ids, mask = (t.to(device) for t in tokenize(model.tokenizer, texts, max_len))
    text_feat = torch.cat([model.text_features(ids[i : i + batch_size], mask[i : i + batch_size])
                           for i in range(0, len(texts), batch_size)])
    video_feat = torch.cat(feats)
    sim = einsum(text_feat.float(), video_feat.float(), "t d, v q d -> t v q").amax(-1).cpu()  # bf16 would tie ranks
    context = concat_contexts(contexts)

    def match(text_idx: torch.Tensor, video_idx: torch.Tensor) -> torch.Tensor:
        video_idx, text_idx = video_idx.to(device), text_idx.to(device)
        return model.matching_scores(context.select(video_idx), ids[text_idx], mask[text_idx]).float().cpu()

    metrics = {"clips": len(records), "unreadable_skipped": dataset.num_bad,
               **{f"skipped_{reason}": n for reason, n in dataset.skipped_counts().items()}}
    metrics.update({f"vtc_{k}": v for k, v in retrieval_metrics(sim, text_to_video).items() if k.endswith("_r1")})
    metrics.update(two_stage_retrieval_metrics(sim, text_to_video, match, rerank_k))
    if pairs:
        clip_ids = [rec.meta.get("id") for rec in records]
        first_text = {}
        for t, v in enumerate(text_to_video):
            first_text.setdefault(clip_ids[v], t)
        video_index = {cid: v for v, cid in enumerate(clip_ids)}
        present = {kind: [p for p in pairs.get(kind, []) if p[0] in video_index and p[1] in video_index]
                   for kind in ("order", "sound")}
        if present["order"]:
            metrics["order_pair_acc"] = pair_accuracy(match, present["order"], first_text, video_index)
        if captions:
            tokens, token_mask = concat_tokens(llm_tokens, llm_masks)

            def likelihood(text_idx: torch.Tensor, video_idx: torch.Tensor) -> torch.Tensor:
                scores = []
                for i in range(0, len(text_idx), batch_size):
                    v, batch_texts = video_idx[i : i + batch_size], [texts[t] for t in text_idx[i : i + batch_size]]
                    prompts = [llm_prompts[j] for j in v.tolist()] if llm_prompts else None  # each clip's own
                    scores.append(model.bridge.caption_log_likelihood(tokens[v], token_mask[v], batch_texts, prompts))
                return torch.cat(scores).float().cpu()

            for kind, kind_pairs in present.items():
                if kind_pairs:
                    metrics[f"lm_{kind}_pair_acc"] = pair_accuracy(likelihood, kind_pairs, first_text, video_index)
    samples = [{"path": rec.video, "reference": rec.captions[0], "head": text}
               for rec, text in zip(records, head_generated)]
    references = [rec.captions for rec in records]
    synthetic = all("spec" in rec.meta for rec in records)  # clips of the synthetic world carry their spec
    metrics.update(synthetic_caption_metrics(head_generated, references, prefix="head_", synthetic=synthetic))
    if captions:
        for sample, text in zip(samples, generated):
            sample["generated"] = text
        metrics.update(synthetic_caption_metrics(generated, references, synthetic=synthetic))
    return metrics, samples
