"""Stage-1 training speed from the feature cache vs from decoding video, on the synthetic set.

The embedded default's sizes: its cascaded model (configs/synthetic.yaml + configs/variants/cascaded.yaml), its
world's clips (96 px, 24 frames at 8 fps) and its batch (32); the same batches of the same items. A step is
loading + collating the batch, forward, backward and an optimizer step; the loading alone (for video: decoding
and the frozen encoders, which a cached batch has done already) is timed too, which says where the speed-up
stops. Timed round-robin (``interleaved_medians``); clips/s = batch size / median step time.
Usage: python benchmarks/cache_vs_video.py [--clips 64] [--batch 32] [--repeats 5]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from videoqf.measure import interleaved_medians  # noqa: E402
from videoqf.config import load_config  # noqa: E402
from videoqf.data.cached import collate_cached  # noqa: E402
from videoqf.data.config import DataConfig, build_dataset, cache_spec  # noqa: E402
from videoqf.data.extract import extract_features  # noqa: E402
from videoqf.data.synthetic import SyntheticConfig, generate, load_tokenizer  # noqa: E402
from videoqf.experiment import ExperimentConfig  # noqa: E402
from videoqf.models.collate import CaptionCollate  # noqa: E402
from videoqf.models.groups import lock  # noqa: E402
from videoqf.models.video_lm import VideoLanguageModel  # noqa: E402
from videoqf.objectives import ModelWithLoss, build_objective  # noqa: E402
from videoqf.recipes.features import clip_overrides  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--note", default="", help="a line on the machine's state (e.g. other jobs running)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cache_bench_"))
    generate(str(tmp / "syn"), SyntheticConfig(num=args.clips, seed=0),
             progress=False)
    tok = load_tokenizer(str(tmp / "syn"))
    torch.manual_seed(0)
    files = [ROOT / "configs" / "synthetic.yaml", ROOT / "configs" / "variants" / "cascaded.yaml"]
    cfg = load_config(ExperimentConfig, files, ["model.llm=null"]).model  # stage 1 only
    model = VideoLanguageModel(cfg, tok)
    lock(model, ["backend", "retrieval_heads"])
    stage1 = ModelWithLoss(model, build_objective("stage1", model))
    data = DataConfig(annotations=str(tmp / "syn" / "train.jsonl"), num_frames=8)
    spec = cache_spec(data, model.vision, model.audio)
    video = build_dataset(data, **clip_overrides(model.vision))
    extract_features(video, model.vision, model.audio, tmp / "feats", sampler_name=spec.sampler,
                     sampler_seed=spec.sampler_seed, num_frames=spec.num_frames, progress=False)
    cached = build_dataset(replace(data, features=str(tmp / "feats")), expected_spec=spec,
                           **clip_overrides(model.vision))
    collates = {"video": CaptionCollate(tok, 40), "cache": CaptionCollate(tok, 40, base=collate_cached)}
    sources = {"video": video, "cache": cached}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    state = {name: 0 for name in sources}

    def load(name: str) -> dict:
        first = state[name] * args.batch % (len(video) - args.batch + 1)
        state[name] += 1
        return collates[name]([sources[name][i] for i in range(first, first + args.batch)])

    def step(name: str):
        def run() -> None:
            opt.zero_grad(set_to_none=True)
            stage1(load(name))["loss"].backward()
            opt.step()
        return run

    def load_only(name: str):
        def run() -> None:
            batch = load(name)
            with torch.no_grad():  # what a cached batch brings along: the frozen encoders' features
                model.frame_features(batch), model.audio_features(batch)
        return run

    times = interleaved_medians({**{name: step(name) for name in sources},
                                 **{f"{name} load": load_only(name) for name in sources}}, repeats=args.repeats)
    rate = {name: args.batch / times[name] for name in sources}
    compute = max(times["cache"] - times["cache load"], 1e-9)
    body = (f"Stage-1 steps of the embedded default's cascaded model (vit_tiny frozen encoders at 96 px, 8 frames, "
            f"audio on), batch {args.batch}, {len(video)} training clips of a synthetic world like the default's, "
            f"median of {args.repeats} interleaved steps each (load + collate + forward + backward + AdamW); 'load' "
            "is loading + collating + the frozen encoders alone (cached features skip the encoders)."
            f"{(' ' + args.note) if args.note else ''}\n\n"
            "| source | s/step | load s/batch | clips/s | speed-up |\n| --- | ---: | ---: | ---: | ---: |\n"
            + "".join(f"| {n} | {times[n]:.3f} | {times[n + ' load']:.3f} | {rate[n]:.1f} | "
                      f"{rate[n] / rate['video']:.2f}x |\n" for n in sources)
            + f"\nThe step without loading takes about {compute:.3f} s, so no loader can make cached training more "
              f"than {times['video'] / compute:.1f}x faster than training from video here.\n")
    print(body)
    print(write_result("cache", "Training from the feature cache vs from video", body))


if __name__ == "__main__":
    main()
