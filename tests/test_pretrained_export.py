"""Export round trip: a released folder loaded with ``load_pretrained``, changed (as fine-tuning would), written
with ``export_hf`` and read back by transformers, captions as our model does, greedy and 3-beam."""
import pytest
import torch
from transformers import AutoProcessor

import _hf_tiny as H
from videoqf.pretrained import export_hf, load_pretrained

PROMPTS = ["what is in this picture ?", "describe the video in a short caption ."]


@pytest.mark.parametrize("name", ["blip2-opt", "instructblip-t5", "instructblipvideo-llama"])
def test_export_hf_round_trip_captions(name, tmp_path):
    family, kind = H.PAIRS[name]
    H.build(name, tmp_path / "released")
    ours = load_pretrained(tmp_path / "released")
    torch.manual_seed(1)
    with torch.no_grad():  # what training changes: the head, ln_vision and the projector
        for p in [*ours.backend.parameters(), *ours.bridge.projector.parameters()]:
            p.add_(torch.randn_like(p) * 0.05)
    video = family == "instructblipvideo"
    ours.export_hf(tmp_path / "exported", video=video)  # the method; the function is the same code

    hf = H.CLASSES[family].from_pretrained(tmp_path / "exported").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "exported")
    if processor.tokenizer.pad_token is None:
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    inputs = processor(images=list(H.images(2, H.FRAMES if video else None)), text=PROMPTS, return_tensors="pt",
                       padding="longest")
    if family != "blip2":  # right-padded instructions, as in test_pretrained_parity.processor_inputs
        q = processor.qformer_tokenizer(PROMPTS, padding="longest", padding_side="right", return_tensors="pt")
        inputs["qformer_input_ids"], inputs["qformer_attention_mask"] = q["input_ids"], q["attention_mask"]
    pixels = inputs["pixel_values"]
    frames = pixels if video else pixels[:, None]
    batch = {"frames": frames, "frame_mask": torch.ones(frames.shape[:2], dtype=torch.bool)}
    for num_beams in (1, 3):
        ref = hf.generate(**inputs, max_new_tokens=6, num_beams=num_beams)
        if kind != "t5":
            ref = ref[:, inputs["input_ids"].shape[1]:]
        expected = [s.strip() for s in processor.batch_decode(ref, skip_special_tokens=True)]
        assert ours.caption(batch, PROMPTS, max_new_tokens=6, num_beams=num_beams) == expected
    # the export carries the change: the released model captions otherwise
    released = H.CLASSES[family].from_pretrained(tmp_path / "released").eval()
    assert not torch.equal(released.query_tokens, hf.query_tokens)


def test_export_refuses_what_transformers_cannot_express(tmp_path):
    H.build("blip2-opt", tmp_path / "released")
    ours = load_pretrained(tmp_path / "released", variant="meanpool")
    with pytest.raises(ValueError, match="framewise"):
        export_hf(ours, tmp_path / "out")
