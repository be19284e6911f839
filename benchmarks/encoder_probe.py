"""Which block of the frozen (random) vision encoder to read: what each block tells a linear probe.

The embedded default has no pretrained ViT offline, so its frozen encoder is a random one. BLIP-2 reads
the second-to-last block of a PRETRAINED ViT; for a random one the question is whether the later blocks
add anything the Q-Former could use. This fits ridge probes (kernel form, on the standardised tokens of
all sampled frames, as the default standardises them) that read each event's colour, shape and action
(appears / moves left|right|up|down / turns) of the synthetic clips, for event slots 1-3, and reports
the held-out accuracy per block next to chance.

    python benchmarks/encoder_probe.py                      # blocks 0,1,3,6,10 of vit_tiny at 96 px
    python benchmarks/encoder_probe.py --blocks 1,10 --train 300
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_result  # noqa: E402
from videoqf.data.samplers import build_sampler  # noqa: E402
from videoqf.data.synthetic import SyntheticConfig  # noqa: E402
from videoqf.data.synthetic.vocab import COLOURS, SHAPES  # noqa: E402
from videoqf.data.video import load_clip  # noqa: E402
from videoqf.encoders.config import VisionEncoderConfig  # noqa: E402
from videoqf.encoders.vision import FrozenVisionEncoder  # noqa: E402
from videoqf.eval.probes import ATTRIBUTES, EVENT_ACTIONS, SLOTS, event_labels, ridge_accuracy  # noqa: E402
from videoqf.recipes.synthetic import prepare_synthetic, synthetic_dir  # noqa: E402

def main(argv=None) -> str:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", default="0,1,3,6,10")
    ap.add_argument("--model", default="vit_tiny_patch16_224")
    ap.add_argument("--image-size", type=int, default=96)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--train", type=int, default=600, help="training clips the probes are fitted on")
    ap.add_argument("--test", type=int, default=100, help="held-out clips they are scored on")
    ap.add_argument("--ridge", type=float, default=0.1, help="ridge, relative to the mean kernel diagonal")
    ap.add_argument("--seed", type=int, default=0, help="frozen_init_seed of the random encoder")
    args = ap.parse_args(argv)
    world = SyntheticConfig(num=1000, seed=0)
    data = prepare_synthetic(synthetic_dir(world), world)
    blocks = [int(b) for b in args.blocks.split(",")]
    encoders = {}
    for block in blocks:
        torch.manual_seed(args.seed)  # every block reads the same random weights (as the default seeds them)
        encoders[block] = FrozenVisionEncoder(VisionEncoderConfig(model_name=args.model, allow_random=True,
                                                                  image_size=args.image_size, block_index=block))
    clip_cfg = next(iter(encoders.values())).data_config
    sampler = build_sampler("uniform", num_frames=args.frames)

    def split(name: str, count: int):
        records = [json.loads(line) for line in (data / f"{name}.jsonl").read_text().splitlines()][:count]
        frames = torch.stack([load_clip(data / r["video"], sampler, audio=False, **clip_cfg).frames
                              for r in tqdm(records, desc=f"decoding {name}")])
        return frames, torch.tensor([event_labels(r) for r in records])

    train_frames, train_y = split("train", args.train)
    test_frames, test_y = split("test", args.test)
    rows = []
    for block, encoder in encoders.items():
        train_t = torch.cat([encoder(chunk) for chunk in train_frames.split(50)]).double()
        test_t = encoder(test_frames).double()
        mean, std = train_t.mean(0), train_t.std(0) + 1e-5
        train_x, test_x = ((train_t - mean) / std).flatten(1), ((test_t - mean) / std).flatten(1)
        accs = [ridge_accuracy(train_x, train_y[:, j], test_x, test_y[:, j], args.ridge)
                for j in range(SLOTS * len(ATTRIBUTES))]
        rows.append((block, accs))
        print(f"block {block}: mean {sum(accs) / len(accs):.3f}", flush=True)
    chance = [1 / len(COLOURS), 1 / len(SHAPES), 1 / len(EVENT_ACTIONS)] * SLOTS
    head = " | ".join(f"{a} {k + 1}" for k in range(SLOTS) for a in ATTRIBUTES)
    lines = [f"| block | {head} | mean |", "|---:|" + "---:|" * (SLOTS * len(ATTRIBUTES) + 1)]
    for block, accs in [("chance", chance), *rows]:
        lines.append(f"| {block} | " + " | ".join(f"{a:.2f}" for a in accs) + f" | {sum(accs) / len(accs):.3f} |")
    body = (f"Random `{args.model}` at {args.image_size} px (frozen_init_seed {args.seed}), {args.frames} uniformly "
            f"sampled frames per clip; ridge probes on the standardised tokens of all frames, fitted on {args.train} "
            f"training clips of the synthetic world, accuracy on {args.test} held-out clips per event slot.\n\n"
            + "\n".join(lines))
    print(body)
    print("wrote", write_result("encoder_probe", "Which frozen-encoder block to read (random ViT)", body))
    return body


if __name__ == "__main__":
    main()
