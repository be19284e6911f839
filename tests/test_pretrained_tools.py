"""The inference tools on a released-weights folder: tools/caption.py captions a real mp4 with a tiny saved
transformers Blip2 folder, decoded at the processor's size and normalisation, and names a missing file."""
import argparse
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoProcessor

import _hf_tiny as H
from videoqf.pretrained.inference import inference_device, load_checkpoint
from videoqf.recipes.checkpoint_model import caption_video, clip_batch


@pytest.fixture(scope="module")
def blip2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blip2-opt")
    H.build("blip2-opt", folder)
    return folder


def test_clip_frames_get_the_processors_resize_and_normalisation(blip2_folder, make_video):
    video = make_video("clip.mp4", num_frames=32, size=48, tone_hz=None)  # frame i is flat grey 8 * i
    model, cfg, _ = load_checkpoint(blip2_folder)
    batch = clip_batch(model, cfg, video)
    assert batch["frames"].shape == (1, 1, 3, H.IMAGE_SIZE, H.IMAGE_SIZE)  # an image model reads one frame
    grey = np.full((48, 48, 3), 8 * 15, dtype=np.uint8)  # the uniform sampler's one frame of 32: the middle, 15
    expected = AutoProcessor.from_pretrained(blip2_folder).image_processor(grey, return_tensors="pt")["pixel_values"]
    assert (batch["frames"][0, 0] - expected[0]).abs().max() < 0.1  # what the codec leaves of a flat grey


def test_caption_tool_captions_an_mp4_and_names_the_missing_file(blip2_folder, make_video):
    video = make_video("clip.mp4", num_frames=32, size=48)
    out = subprocess.run([sys.executable, "tools/caption.py", video, "missing.mp4", "--checkpoint", str(blip2_folder),
                          "--json", "--max-new-tokens", "5"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    model, cfg, _ = load_checkpoint(blip2_folder)
    with torch.no_grad():
        expected, _ = caption_video(model, cfg, video, max_new_tokens=5)
    assert rows[0]["path"] == video and rows[0]["caption"] == expected and expected
    assert rows[1]["path"] == "missing.mp4" and "missing.mp4" in rows[1]["error"]
    assert "missing.mp4" in out.stderr


def test_the_tools_run_the_model_and_its_clip_on_the_device_asked(blip2_folder, make_video, monkeypatch):
    # meta stands for a GPU: the model's weights and the decoded clip both go there before the model reads it
    video = make_video("clip.mp4", num_frames=8, size=48)
    model, cfg, _ = load_checkpoint(blip2_folder, device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"}
    seen = {}
    monkeypatch.setattr(model, "caption", lambda batch, **kw: seen.update(batch) or ["x"])
    caption_video(model, cfg, video)
    assert seen["frames"].device.type == "meta" and seen["frames"].dtype == torch.float32


def test_the_device_option_takes_cpu_or_a_visible_gpu_and_names_what_is_wrong():
    assert inference_device("cpu") == torch.device("cpu")
    assert inference_device(None) == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for name in ("tpu", "meta", "cuda:x"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected cpu, cuda or cuda:N"):
            inference_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(argparse.ArgumentTypeError, match="no CUDA device"):
            inference_device("cuda:0")


def evaluate_main():
    """tools/evaluate.py's main, run in this process (a subprocess would import everything again)."""
    spec = importlib.util.spec_from_file_location("evaluate_tool", "tools/evaluate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_evaluate_tool_takes_a_released_folder(tmp_path, synthetic_dir, capsys):
    folder = tmp_path / "instructblip-t5"
    H.build("instructblip-t5", folder)
    main = evaluate_main()
    args = ["--checkpoint", str(folder), "--data", f"{synthetic_dir}/test.jsonl", "--json", "--max-clips", "2"]
    assert main(args) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"cider", "bleu4", "t2v_r1"} <= set(metrics)


def test_evaluate_tool_asks_for_the_qformer_tokenizer_blip2_lacks(blip2_folder, synthetic_dir, capsys):
    with pytest.raises(SystemExit) as exit_:
        evaluate_main()(["--checkpoint", str(blip2_folder), "--data", f"{synthetic_dir}/test.jsonl"])
    assert exit_.value.code == 2 and "--qformer-tokenizer" in capsys.readouterr().err
