"""LAVIS .pth checkpoints: a tiny random BLIP-2 (OPT) and InstructBLIP (LLaMA) written in LAVIS's key layout
(EVA's q / v biases, ``Qformer.bert.*`` with ``attention.self``, ``ln_vision``, ``opt_proj`` / ``llm_proj``), loaded
with the LLM from a local folder, caption as the transformers model they were made from."""
import pytest
import torch
from transformers import AutoProcessor

import _hf_tiny as H
from videoqf.pretrained import load_pretrained

PROMPTS = ["what is in this picture ?", "describe the video in a short caption ."]
VIT = {"layer_norm1": "norm1", "layer_norm2": "norm2", "self_attn.qkv.weight": "attn.qkv.weight",
       "self_attn.projection": "attn.proj", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}


def lavis_state(hf, projection: str) -> dict:
    """LAVIS's names for the tensors of a transformers Blip2 / InstructBlip model (its LLM left out)."""
    out = {}
    width = hf.config.vision_config.hidden_size
    for key, value in hf.state_dict().items():
        if key.startswith("language_model."):
            continue
        if key.startswith("vision_model.encoder.layers."):
            i, rest = key[len("vision_model.encoder.layers."):].split(".", 1)
            if rest == "self_attn.qkv.bias":
                out[f"visual_encoder.blocks.{i}.attn.q_bias"] = value[:width].clone()
                out[f"visual_encoder.blocks.{i}.attn.v_bias"] = value[2 * width:].clone()
                continue
            prefix = next(p for p in VIT if rest.startswith(p))
            out[f"visual_encoder.blocks.{i}.{VIT[prefix]}{rest[len(prefix):]}"] = value
        elif key.startswith("vision_model."):
            name = {"embeddings.class_embedding": "visual_encoder.cls_token",
                    "embeddings.position_embedding": "visual_encoder.pos_embed"}.get(key[len("vision_model."):])
            if name is None:
                name = key.replace("vision_model.embeddings.patch_embedding", "visual_encoder.patch_embed.proj")
                name = name.replace("vision_model.post_layernorm", "ln_vision")
            out[name] = value
        elif key.startswith("qformer."):
            name = key[len("qformer."):].replace("attention.attention.", "attention.self.")
            name = name.replace("embeddings.layernorm.", "embeddings.LayerNorm.").replace("layernorm.",
                                                                                          "embeddings.LayerNorm.")
            out["Qformer.bert." + name.replace("embeddings.embeddings.", "embeddings.")] = value
        elif key.startswith("language_projection."):
            out[projection + key[len("language_projection"):]] = value
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("name,projection", [("blip2-opt", "opt_proj"), ("instructblip-llama", "llm_proj")])
def test_lavis_checkpoint_captions_as_the_model_it_was_made_from(name, projection, tmp_path):
    family, _ = H.PAIRS[name]
    hf, _ = H.build(name, tmp_path / "hf")
    with torch.no_grad():  # EVA's attention has no k bias
        for layer in hf.vision_model.encoder.layers:
            width = hf.config.vision_config.hidden_size
            layer.self_attn.qkv.bias[width:2 * width].zero_()
    torch.save({"model": lavis_state(hf, projection)}, tmp_path / "lavis.pth")
    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    hf.language_model.save_pretrained(tmp_path / "llm")
    processor.tokenizer.save_pretrained(tmp_path / "llm")
    extra = {"qformer_tokenizer": tmp_path / "hf" / "qformer_tokenizer"} if family != "blip2" else {}
    ours = load_pretrained(tmp_path / "lavis.pth", llm=tmp_path / "llm", vision_heads=4, qformer_heads=4, **extra)

    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    images = list(H.images(2))
    inputs = processor(images=images, text=PROMPTS, return_tensors="pt", padding="longest")
    if family != "blip2":
        q = processor.qformer_tokenizer(PROMPTS, padding="longest", padding_side="right", return_tensors="pt")
        inputs["qformer_input_ids"], inputs["qformer_attention_mask"] = q["input_ids"], q["attention_mask"]
    ref = hf.generate(**inputs, max_new_tokens=6)[:, inputs["input_ids"].shape[1]:]
    expected = [s.strip() for s in processor.batch_decode(ref, skip_special_tokens=True)]
    batch = {"frames": inputs["pixel_values"][:, None], "frame_mask": torch.ones(2, 1, dtype=torch.bool)}
    assert ours.caption(batch, PROMPTS, max_new_tokens=6) == expected and any(expected)


def test_lavis_needs_its_llm_folder_and_rejects_unknown_keys(tmp_path):
    torch.save({"model": {"query_tokens": torch.zeros(1, 4, 32), "opt_proj.weight": torch.zeros(8, 32)}},
               tmp_path / "x.pth")
    with pytest.raises(FileNotFoundError, match="LLM"):
        load_pretrained(tmp_path / "x.pth", llm=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="LLM"):
        load_pretrained(tmp_path / "x.pth")
    torch.save({"model": {"query_tokens": torch.zeros(1, 4, 32), "text_decoder.weight": torch.zeros(2, 32)}},
               tmp_path / "y.pth")
    with pytest.raises(KeyError, match="text_decoder"):
        load_pretrained(tmp_path / "y.pth")
