"""Released-weights parity: a transformers BLIP-2 / InstructBLIP / InstructBLIP-Video folder loaded with
``load_pretrained`` captions exactly as transformers' processor + ``generate`` do, for five tiny random
checkpoint / LLM pairs (see tests/_hf_tiny.py), greedy and 3-beam, a batch of two different prompts; the
Q-Former outputs and the LLM's logits agree within 1e-4 in fp32."""
import pytest
import torch
from transformers import AutoProcessor

import _hf_tiny as H
from videoqf.pretrained import load_pretrained

PROMPTS = ["what is in this picture ?", "describe the video in a short caption ."]
CAPTIONS = ["a dog runs on the street", "two cats"]


@pytest.fixture(scope="module", params=list(H.PAIRS))
def pair(request, tmp_path_factory):
    name = request.param
    family, kind = H.PAIRS[name]
    folder = tmp_path_factory.mktemp(name)
    H.build(name, folder)
    processor = AutoProcessor.from_pretrained(folder)
    if processor.tokenizer.pad_token is None:  # LLaMA's: transformers needs one to batch; we do not
        processor.tokenizer.pad_token = processor.tokenizer.eos_token
    hf = H.CLASSES[family].from_pretrained(folder).eval()
    ours = load_pretrained(folder)
    video = family == "instructblipvideo"
    return dict(name=name, kind=kind, instruct=family != "blip2", video=video, processor=processor, hf=hf,
                ours=ours, images=list(H.images(2, H.FRAMES if video else None)))


def processor_inputs(pair, images, prompts) -> dict:
    """The processor's inputs, with the Q-Former's instruction padded on the right.

    transformers' InstructBLIP processors pad the instruction on the side of the LLM tokenizer (left for
    LLaMA), which shifts BERT's absolute positions, so a padded prompt is read unlike the same prompt alone;
    LAVIS pads it on the right, as we do, which is what transformers computes for a prompt alone."""
    inputs = pair["processor"](images=images, text=prompts, return_tensors="pt", padding="longest")
    if pair["instruct"]:
        q = pair["processor"].qformer_tokenizer(prompts, padding="longest", padding_side="right", return_tensors="pt")
        inputs["qformer_input_ids"], inputs["qformer_attention_mask"] = q["input_ids"], q["attention_mask"]
    return inputs


def our_batch(pixel_values: torch.Tensor) -> dict:
    frames = pixel_values if pixel_values.dim() == 5 else pixel_values[:, None]  # an image is a one-frame clip
    return {"frames": frames, "frame_mask": torch.ones(frames.shape[:2], dtype=torch.bool)}


@pytest.mark.parametrize("num_beams", [1, 3])
def test_captions_equal_transformers(pair, num_beams):
    inputs = processor_inputs(pair, pair["images"], PROMPTS)
    ref = pair["hf"].generate(**inputs, max_new_tokens=6, num_beams=num_beams)
    if pair["kind"] != "t5":  # a decoder-only LM's output starts with the prompt
        ref = ref[:, inputs["input_ids"].shape[1]:]
    expected = [s.strip() for s in pair["processor"].batch_decode(ref, skip_special_tokens=True)]
    got = pair["ours"].caption(our_batch(inputs["pixel_values"]), PROMPTS, max_new_tokens=6, num_beams=num_beams)
    assert got == expected
    assert any(expected), "the tiny model should say something, or the comparison proves little"


def test_qformer_outputs_and_llm_logits_match(pair):
    processor, hf, ours = pair["processor"], pair["hf"], pair["ours"]
    inputs = processor_inputs(pair, pair["images"], PROMPTS)
    with torch.no_grad():
        extra = ({"qformer_input_ids": inputs["qformer_input_ids"],
                  "qformer_attention_mask": inputs["qformer_attention_mask"]} if pair["instruct"] else {})
        features = hf.get_video_features if pair["video"] else hf.get_image_features
        ref_q = features(inputs["pixel_values"], return_dict=True, **extra).qformer_outputs
        ref_q = ref_q.last_hidden_state[:, : H.QUERIES].reshape(2, -1, ref_q.last_hidden_state.shape[-1])
        vt = ours.encode_for_llm(our_batch(inputs["pixel_values"]), PROMPTS)
        assert vt.tokens.shape == ref_q.shape
        assert (vt.tokens - ref_q).abs().max() < 1e-4

        for i in range(2):  # one sample at a time: the two sides pad differently, the logits must not care
            ref_kw = {"pixel_values": inputs["pixel_values"][i:i + 1]}
            if pair["instruct"]:
                ref_kw.update({k: v[i:i + 1] for k, v in extra.items()})
            if pair["kind"] == "t5":
                enc = processor(images=pair["images"][i:i + 1], text=PROMPTS[i:i + 1], return_tensors="pt")
                labels = processor.tokenizer(CAPTIONS[i:i + 1], return_tensors="pt")["input_ids"]
                ref_kw.update(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels)
            else:
                enc = processor(images=pair["images"][i:i + 1], text=[f"{PROMPTS[i]} {CAPTIONS[i]}"],
                                return_tensors="pt")
                ref_kw.update(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            ref = hf(**ref_kw).logits
            got = ours.bridge(vt.tokens[i:i + 1], vt.mask[i:i + 1], CAPTIONS[i:i + 1], PROMPTS[i:i + 1]).logits
            got = got[:, : ref.shape[1]]  # ours goes on to the caption's EOS
            assert got.shape == ref.shape
            assert (got - ref).abs().max() < 1e-4


def test_loader_reads_the_llm_tokenizer_as_it_is(pair):
    """OPT's BOS is its `</s>`, LLaMA's tokenizer has no pad, T5's no BOS; the Q-Former keeps its own."""
    ours = pair["ours"]
    llm_tok, special = ours.bridge.tokenizer, ours.bridge.special
    if pair["kind"] == "opt":
        assert special.bos == special.eos == llm_tok.convert_tokens_to_ids("</s>")
    if pair["kind"] == "llama":
        assert llm_tok.pad_token is None and special.pad == special.eos
    if pair["kind"] == "t5":
        assert special.bos is None and llm_tok.bos_token is None
    head = ours.backend.head
    assert all(p.dtype == torch.float32 for p in head.parameters())
    if pair["instruct"]:
        assert ours.tokenizer is not llm_tok and ours.tokenizer.bos_token == "[DEC]"
        assert ours.tokenizer.convert_tokens_to_ids("[DEC]") == 30522
        assert head.lm_head.decoder.weight is head.text_embeddings.word.weight  # BERT's tie survives loading
    else:  # no Q-Former tokenizer, no text side: nothing fresh is held that captioning never reads
        assert ours.tokenizer is None and head.lm_head is None and head.text_embeddings is None
