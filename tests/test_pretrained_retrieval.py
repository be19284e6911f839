"""BLIP-2's stage-1 model in: a transformers ``Blip2ForImageTextRetrieval`` folder and a LAVIS ``blip2`` ``.pth``
load with their ITC / ITM heads, score as transformers does (contrastive similarities and matching
probabilities within 1e-4), and zero-shot retrieval runs through ``tools/evaluate.py`` on them."""
import importlib.util
import json

import pytest
import torch
from einops import einsum
from transformers import AutoProcessor

import _hf_tiny as H
from test_pretrained_lavis import lavis_state
from test_pretrained_tools import evaluate_main
from videoqf.models.collate import tokenize
from videoqf.pretrained import load_pretrained

TEXTS = ["a dog runs on the street", "two cats sit in the house", "a red car"]


@pytest.fixture(scope="module")
def retrieval(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blip2-itm")
    hf, processor = H.build_retrieval(folder)
    inputs = processor(images=list(H.images(3)), text=TEXTS, return_tensors="pt", padding="longest")
    return dict(folder=folder, hf=hf, processor=processor, inputs=inputs)


def reference_scores(hf, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' ITC similarities [images, texts] and ITM match probabilities [pairs] (row i with text i)."""
    with torch.no_grad():
        itc = hf(**inputs, use_image_text_matching_head=False).logits_per_image
        itm = hf(**inputs, use_image_text_matching_head=True).logits_per_image.softmax(-1)[:, 1]
    return itc, itm


def our_scores(model, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    frames = inputs["pixel_values"][:, None]
    batch = {"frames": frames, "frame_mask": torch.ones(frames.shape[:2], dtype=torch.bool)}
    ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
    with torch.no_grad():
        vt = model.encode(batch)
        sim = einsum(model.video_features(vt), model.text_features(ids, mask), "v q d, t d -> v t q").amax(-1)
        return sim, model.matching_scores(vt.context, ids, mask)


def test_retrieval_folder_scores_as_transformers(retrieval):
    model = load_pretrained(retrieval["folder"])
    assert model.bridge is None and model.tokenizer.bos_token == "[DEC]"
    ids, _ = tokenize(model.tokenizer, TEXTS, model.config.max_text_len)  # our texts read as the processor's
    width = retrieval["inputs"]["input_ids"].shape[1]
    assert torch.equal(ids[:, :width], retrieval["inputs"]["input_ids"])
    itc, itm = reference_scores(retrieval["hf"], retrieval["inputs"])
    sim, match = our_scores(model, retrieval["inputs"])
    assert (sim - itc).abs().max() < 1e-4 and (match - itm).abs().max() < 1e-4
    assert itc.std() > 1e-3 and itm.std() > 1e-3, "the scores should differ between pairs, or parity proves little"
    # transformers' class keeps no LM head (ITG): only it starts fresh, and BERT ties its decoder to the words
    assert set(model.pretrained_fresh) == {f"lm_head.{n}" for n in ("dense.weight", "dense.bias", "norm.weight",
                                                                     "norm.bias", "decoder.bias")}


def test_lavis_blip2_stage1_checkpoint_loads_its_heads(retrieval, tmp_path):
    hf = retrieval["hf"]
    with torch.no_grad():  # EVA's attention has no k bias
        width = hf.config.vision_config.hidden_size
        for layer in hf.vision_model.encoder.layers:
            layer.self_attn.qkv.bias[width:2 * width].zero_()
    state = lavis_state(hf, projection="unused")
    state = {k.replace("vision_projection", "vision_proj").replace("text_projection", "text_proj"): v
             for k, v in state.items()}
    for key in ("word_embeddings", "position_embeddings"):  # LAVIS keeps them inside its BERT
        state[f"Qformer.bert.embeddings.{key}.weight"] = state.pop(f"embeddings.{key}.weight")
    hidden, vocab = hf.config.qformer_config.hidden_size, hf.config.qformer_config.vocab_size
    generator = torch.Generator().manual_seed(1)
    head = {"Qformer.cls.predictions.transform.dense.weight": torch.randn(hidden, hidden, generator=generator),
            "Qformer.cls.predictions.transform.dense.bias": torch.randn(hidden, generator=generator),
            "Qformer.cls.predictions.transform.LayerNorm.weight": 1 + torch.randn(hidden, generator=generator) / 10,
            "Qformer.cls.predictions.transform.LayerNorm.bias": torch.randn(hidden, generator=generator),
            "Qformer.cls.predictions.bias": torch.randn(vocab, generator=generator)}
    head["Qformer.cls.predictions.decoder.weight"] = state["Qformer.bert.embeddings.word_embeddings.weight"]
    head["Qformer.cls.predictions.decoder.bias"] = head["Qformer.cls.predictions.bias"]
    state.update(head, temp=torch.tensor(0.05))
    torch.save({"model": state}, tmp_path / "blip2.pth")
    retrieval["processor"].tokenizer.save_pretrained(tmp_path / "bert")

    with pytest.raises(ValueError, match="qformer_tokenizer"):
        load_pretrained(tmp_path / "blip2.pth")
    model = load_pretrained(tmp_path / "blip2.pth", qformer_tokenizer=tmp_path / "bert", vision_heads=4,
                            qformer_heads=4)
    assert model.bridge is None and model.pretrained_fresh == []
    itc, itm = reference_scores(hf, retrieval["inputs"])
    sim, match = our_scores(model, retrieval["inputs"])
    assert (sim - itc).abs().max() < 1e-4 and (match - itm).abs().max() < 1e-4
    lm = model.backend.head.lm_head
    assert torch.equal(lm.dense.weight, head["Qformer.cls.predictions.transform.dense.weight"])
    assert torch.equal(lm.decoder.bias, head["Qformer.cls.predictions.bias"])
    assert lm.decoder.weight is model.backend.head.text_embeddings.word.weight
    assert model.retrieval_heads.vtc.temperature.item() == pytest.approx(0.05)


def test_evaluate_tool_retrieves_with_the_checkpoint_heads(retrieval, make_video, tmp_path, capsys):
    rows = [{"video": make_video(f"clip{i}.mp4", num_frames=16), "caption": t} for i, t in enumerate(TEXTS)]
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert evaluate_main()(["--checkpoint", str(retrieval["folder"]), "--data", str(data), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert 0.0 <= metrics["t2v_r1"] <= 1.0 and "cider" not in metrics


def test_caption_tool_refuses_a_model_without_llm(retrieval, make_video):
    spec = importlib.util.spec_from_file_location("caption_tool", "tools/caption.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit, match="no LLM"):
        module.main([make_video("clip.mp4", num_frames=16), "--checkpoint", str(retrieval["folder"])])
