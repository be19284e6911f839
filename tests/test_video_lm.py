"""The assembled model (frozen encoders -> backend -> retrieval heads / frozen LLM) on synthetic clips, its
losses (videoqf.objectives) and its parameter groups (videoqf.models.groups)."""
import copy
from dataclasses import replace

import pytest
import torch

from _tiny import model_config
from videoqf.data.config import DataConfig, build_dataset
from videoqf.data.synthetic import load_tokenizer
from videoqf.models.collate import CaptionCollate, tokenize
from videoqf.models.groups import GroupError, lock
from videoqf.models.video_lm import VideoLanguageModel
from videoqf.objectives import ModelWithLoss, build_objective
from videoqf.objectives.caption import CaptionLoss
from videoqf.objectives.stage1 import Stage1Loss

VARIANTS = ["cascaded", "spatiotemporal", "framewise", "meanpool", "pooled"]


@pytest.fixture(scope="module")
def batch(synthetic_dir, tmp_path_factory):
    tok = load_tokenizer(synthetic_dir)
    data = build_dataset(DataConfig(annotations=f"{synthetic_dir}/train.jsonl", num_frames=4), image_size=64,
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    return tok, CaptionCollate(tok, 40)([data[i] for i in range(4)])


@pytest.mark.parametrize("variant", VARIANTS)
def test_both_objectives_train_the_locked_parts(variant, batch, tmp_path):
    tok, b = batch
    torch.manual_seed(0)
    model = VideoLanguageModel(model_config(variant, tmp_path), tok)
    for objective, groups in (("stage1", ["backend", "retrieval_heads"]), ("caption", ["backend", "projector"])):
        trainable = lock(model, groups)
        model.zero_grad(set_to_none=True)
        out = ModelWithLoss(model, build_objective(objective, model))(b)
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert grads <= set(trainable)
        assert not any(n.startswith(("vision.", "audio.", "bridge.llm.")) for n in trainable)
        assert any(n.startswith("backend.") for n in grads)
        if objective == "stage1":
            assert set(out["logs"]) >= {"vtc", "vtm", "vtg"}
            assert any(n.startswith("retrieval_heads.") for n in grads)
        else:
            assert any(n.startswith("bridge.projector.") for n in grads)
            assert not any(n.startswith("retrieval_heads.") for n in trainable)


def test_lock_trains_exactly_the_named_groups_and_names_what_is_wrong(batch, tmp_path):
    tok, _ = batch
    cfg = model_config("cascaded", tmp_path)
    cfg.backend["video_qformer"] = {"num_layers": 3}  # head.top is the last layer whatever the depth
    model = VideoLanguageModel(cfg, tok)
    trainable = set(lock(model, ["backend", "retrieval_heads"], ["frame_qformer"]))
    assert not any(n.startswith(("backend.frame_qformer.", "backend.ln_vision.")) for n in trainable)
    assert any(n.startswith("backend.head.") for n in trainable)
    model.train()
    assert not model.backend.frame_qformer.training and model.backend.head.training  # frozen means eval mode
    top = set(lock(model, ["head.top"]))
    assert top and all(n.startswith("backend.head.layers.2.") for n in top)
    assert not any(p.requires_grad for p in model.vision.parameters())  # never trainable, whatever the groups
    with pytest.raises(GroupError, match="'projecter'"):
        lock(model, ["projecter"])
    with pytest.raises(GroupError, match="trains nothing"):
        lock(model, ["frame_qformer"], ["backend"])
    silent = VideoLanguageModel(replace(cfg, backend={**cfg.backend, "audio": False}, use_audio=False), tok)
    with pytest.raises(GroupError, match="'audio_branch'"):
        lock(silent, ["audio_branch"])


def test_frozen_encoders_are_a_function_of_the_config(batch, tmp_path):
    tok, _ = batch
    cfg = model_config("cascaded", tmp_path)
    torch.manual_seed(1)
    a = VideoLanguageModel(cfg, tok)
    torch.manual_seed(2)
    b = VideoLanguageModel(cfg, tok)
    assert a.vision.weight_hash() == b.vision.weight_hash()
    assert a.audio.weight_hash() == b.audio.weight_hash()


@pytest.mark.parametrize("aware", [True, False])
def test_the_instruction_changes_the_video_tokens_only_when_instruction_aware(aware, batch, tmp_path):
    tok, b = batch
    cfg = model_config("spatiotemporal", tmp_path)
    cfg.llm.instruction_aware = aware
    cfg.llm.own_head = False  # the plain head's tokens, bit for bit (a copy reads them through folded projections)
    torch.manual_seed(0)
    model = VideoLanguageModel(cfg, tok).eval()
    prompts = {p: [p] * 4 for p in ("a video of", "what happens first")}
    with torch.no_grad():
        tokens = {p: model.encode_for_llm(b, v).tokens for p, v in prompts.items()}
        plain = model.encode(b).tokens
        losses = {p: CaptionLoss()(model, {**b, "prompt": v})["loss"] for p, v in prompts.items()}
        captions = model.caption(b, prompts["a video of"], max_new_tokens=3)
    a, c = tokens.values()
    assert (a - c).abs().amax() > 1e-3 if aware else torch.equal(a, c) and torch.equal(a, plain)
    assert losses["a video of"] != losses["what happens first"]  # the LLM reads the prompt either way
    assert len(captions) == 4


def test_instruction_templates_are_drawn_per_item_and_seeded(synthetic_dir):
    tok = load_tokenizer(synthetic_dir)
    templates = ["describe the clip", "what happens", "say what you see"]
    collate = CaptionCollate(tok, 40, instructions=templates, seed=3)
    drawn = [collate.instruction(i) for i in range(60)]
    assert drawn == [CaptionCollate(tok, 40, instructions=templates, seed=3).instruction(i) for i in range(60)]
    assert set(drawn) == set(templates)
    assert drawn != [CaptionCollate(tok, 40, instructions=templates, seed=4).instruction(i) for i in range(60)]


def test_standardised_features_have_zero_mean_unit_std_over_the_fit_items(batch, tmp_path):
    tok, b = batch
    cfg = replace(model_config("cascaded", tmp_path), standardize_features=True)
    model = VideoLanguageModel(cfg, tok)
    raw = model.raw_frame_features(b)
    assert torch.equal(model.frame_features(b), raw)  # identity before fitting
    model.fit_feature_statistics([b])
    out = model.frame_features(b)[b["frame_mask"]]  # [R, N, D]
    assert out.mean(0).abs().max() < 1e-4
    assert (out.std(0) - 1).abs().max() < 1e-2
    names = set(model.state_dict())
    assert {"vision_norm.mean", "vision_norm.std", "audio_norm.mean"} <= names  # saved with the learned weights


def test_head_captions_decode_greedily_with_the_cache(batch, tmp_path):
    """The head's cached greedy VTG decoding equals recomputing the whole prefix at every step."""
    tok, b = batch
    torch.manual_seed(0)
    model = VideoLanguageModel(model_config("cascaded", tmp_path), tok).eval()
    with torch.no_grad():
        vt = model.encode(b)
        got = model.head_captions(vt, eos_token_id=-1, pad_token_id=tok.pad_token_id, max_new_tokens=6)
        ids = torch.full((b["frame_mask"].shape[0], 1), tok.bos_token_id)
        for _ in range(6):
            out = model.backend.head(context=vt.context, text_ids=ids, mode="causal")
            ids = torch.cat([ids, model.backend.head.lm_logits(out.text_output)[:, -1:].argmax(-1)], dim=1)
    assert got.shape == (b["frame_mask"].shape[0], 6)
    assert torch.equal(got, ids[:, 1:])


def test_captions_are_padded_to_the_batch_longest_and_cut_at_max_len(batch):
    tok, b = batch
    lengths = b["text_mask"].sum(1)
    assert b["text_ids"].shape[1] == int(lengths.max()) < 40
    assert bool(b["text_mask"][lengths.argmax()].all())
    ids, mask = tokenize(tok, b["caption"], 10)
    assert ids.shape == mask.shape == (len(b["caption"]), 10) and bool(mask.all())


def test_stage1_loss_does_not_depend_on_caption_padding_and_leaves_the_audio_branch_out(batch, tmp_path):
    tok, b = batch
    torch.manual_seed(0)
    model = VideoLanguageModel(model_config("cascaded", tmp_path), tok)
    loss = Stage1Loss(model.config.objectives)
    calls = []
    model.backend.audio_branch.register_forward_hook(lambda *args: calls.append(1))
    pad = 9
    padded = {**b, "text_ids": torch.cat([b["text_ids"], b["text_ids"].new_zeros(len(b["caption"]), pad)], 1),
              "text_mask": torch.cat([b["text_mask"], b["text_mask"].new_zeros(len(b["caption"]), pad)], 1)}
    losses = []
    for inputs in (b, padded):
        torch.manual_seed(1)  # the same hard negatives
        losses.append(loss(model, inputs)["loss"].detach())
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=0)
    assert calls == []
    model.encode(b)  # the hook sees the branch where its tokens are used
    assert calls == [1]


def test_flatten_projector_takes_the_backends_token_count_and_keeps_every_llm_token(batch, tmp_path):
    tok, b = batch
    cfg = model_config("cascaded", tmp_path)
    cfg.llm.projector.kind = "flatten"
    model = VideoLanguageModel(cfg, tok)
    count = model.backend.num_output_tokens(4, audio=cfg.use_audio)
    assert model.bridge.projector.num_tokens == count
    lock(model, ["projector"])
    out = CaptionLoss()(model, b)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.bridge.projector.net.weight.grad.abs().sum() > 0
    vt = model.encode(b)
    token_mask = vt.mask.clone()
    token_mask[0, -1] = False  # as a silent clip's audio slot: each LLM token mixes the real ones, none is dropped
    embeds, mask, _ = model.bridge._assemble(vt.tokens, token_mask, [[1]] * len(b["caption"]), None,
                                             padding_side="right")
    assert embeds.shape[1] == count + 1 and bool(mask.all())

    framewise = model_config("framewise", tmp_path)
    framewise.llm.projector.kind = "flatten"
    with pytest.raises(ValueError, match="fixed number of video tokens"):
        VideoLanguageModel(framewise, tok)


def test_own_head_is_what_the_llm_reads_and_stage_2_leaves_the_retrieval_head_alone(batch, tmp_path):
    tok, b = batch
    cfg = model_config("cascaded", tmp_path)
    cfg.llm.own_head = True
    torch.manual_seed(0)
    model = VideoLanguageModel(cfg, tok).eval()
    model.copy_head_for_llm()
    vt = model.encode(b)
    torch.testing.assert_close(model.encode_for_llm(b, None, encoded=vt).tokens, vt.tokens)  # a fresh copy

    with torch.no_grad():
        for p in model.llm_head.layers[-1].parameters():
            p.add_(0.1 * torch.randn_like(p))
    head = vt.head_queries
    for read in (model.encode_for_llm(b, None, encoded=vt), model.encode_for_llm(b, None)):
        assert (read.tokens[:, :head] - vt.tokens[:, :head]).abs().max() > 1e-3
        torch.testing.assert_close(read.tokens[:, head:], vt.tokens[:, head:])  # the audio tokens
    torch.testing.assert_close(model.encode(b).tokens, vt.tokens)

    lock(model, ["projector", "llm_head.top"])
    model.train()
    CaptionLoss()(model, b)["loss"].backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("llm_head.layers.") for n in grads)
    assert not any(n.startswith("backend.head.") for n in grads)
    lock(model, ["backend", "retrieval_heads"])
    assert not any(p.requires_grad for p in model.llm_head.parameters())

    cfg.llm.instruction_aware = True  # the copy's text branch reads the instruction, as the head's would
    aware = VideoLanguageModel(cfg, tok).eval()
    with torch.no_grad():
        first, other = (aware.encode_for_llm(b, [p] * 4).tokens for p in ("a video of", "what happens first"))
    assert (first - other).abs().amax() > 1e-3

    framewise = model_config("framewise", tmp_path)
    framewise.llm.own_head = True
    with pytest.raises(ValueError, match="not one pass of its head"):
        VideoLanguageModel(framewise, tok)


def _as_cached(model, batch) -> dict:
    """``batch`` as the feature cache brings it: the frozen encoders' outputs instead of decoded media."""
    with torch.no_grad():
        audio, audio_mask = model.raw_audio_features(batch)
        out = {k: v for k, v in batch.items() if k not in ("frames", "audio", "audio_mask")}
        out["frame_features"] = model.raw_frame_features(batch)
    if audio is not None:
        out["audio_features"], out["audio_feature_mask"] = audio, audio_mask
    return out


@pytest.mark.parametrize("variant", ["cascaded", "spatiotemporal"])
def test_the_llms_own_head_reads_the_backends_head_inputs_as_it_reads_a_full_encode(variant, batch, tmp_path):
    tok, b = batch
    cfg = model_config(variant, tmp_path)
    cfg.llm.own_head = True
    if variant == "spatiotemporal":
        cfg.backend = {**cfg.backend, "timed_experts": ["temporal", "semantic"]}  # the time rides beside the tokens
    torch.manual_seed(0)
    model = VideoLanguageModel(cfg, tok).eval()
    assert model.backend.splits_at_head
    with torch.no_grad():
        for p in model.llm_head.parameters():
            p.add_(0.05 * torch.randn_like(p))
        split, full = model.encode_for_llm(b, None), model.encode_for_llm(b, None, encoded=model.encode(b))
    torch.testing.assert_close(split.tokens, full.tokens)
    assert torch.equal(split.mask, full.mask)
    assert (split.context.time is not None) == (variant == "spatiotemporal")


@pytest.mark.parametrize("variant", ["cascaded", "spatiotemporal"])
def test_a_caption_stage_keeps_each_clips_frozen_head_inputs_and_trains_as_it_would_without(variant, batch, tmp_path):
    tok, b = batch
    cfg = model_config(variant, tmp_path)
    cfg.llm.own_head = True
    torch.manual_seed(0)
    model = VideoLanguageModel(cfg, tok)
    model.copy_head_for_llm()
    cached = _as_cached(model, b)
    groups = ["projector", "llm_head.top"] + (["audio_branch"] if variant == "cascaded" else [])
    lock(model, groups)
    model.train()
    twin = copy.deepcopy(model)
    calls, made = [0], model.head_inputs
    model.head_inputs = lambda batch: (calls.__setitem__(0, calls[0] + 1), made(batch))[1]
    kept, fresh = CaptionLoss(), CaptionLoss()
    fresh.memo.usable = False  # made anew every step
    optimizers = [torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5) for m in (model, twin)]
    for step in range(3):  # the same clips each step: from the second on the memo serves them
        losses = []
        for loss, m, opt in zip((kept, fresh), (model, twin), optimizers):
            torch.manual_seed(step)
            out = loss(m, cached)["loss"]
            opt.zero_grad()
            out.backward()
            opt.step()
            losses.append(out.item())
        assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-6)
    assert kept.memo.usable and set(kept.memo.rows) == set(zip(b["path"], b["index"].tolist()))
    assert calls == [2]  # the first step made them twice (the check that they are fixed), the others read them

    shorter = {**cached, "frame_features": cached["frame_features"][:, :3], "frame_mask": cached["frame_mask"][:, :3],
               "index": cached["index"] + 100}
    kept(model, shorter)  # clips of another frame count: the memo stops keeping
    assert kept.memo.usable is False and not kept.memo.rows
    decoded = CaptionLoss()
    decoded(model, b)  # decoded video may be sampled afresh each epoch
    assert decoded.memo.usable is None and not decoded.memo.rows
    lock(model, ["backend", "projector"])  # what makes the head inputs trains: nothing is kept
    training = CaptionLoss()
    training(model, cached)
    assert training.memo.usable is False and not training.memo.rows
