"""Train the tiny caption GPT-2 that stands in for the frozen LLM of stage 2.

    python tools/pretrain_lm.py --captions data/annotations.jsonl --tokenizer data/tokenizer \
        --out checkpoints/caption_lm --steps 300

The logic lives in videoqf.llm.pretrain; this is the command line.
"""
from __future__ import annotations

import argparse
from dataclasses import fields

from videoqf.llm.config import CaptionLMConfig
from videoqf.llm.pretrain import pretrain_caption_lm, read_captions
from videoqf.llm.tokenizer import load_tokenizer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", nargs="+", required=True,
                        help="caption files: .jsonl with a 'caption' field, or text with one caption per line")
    parser.add_argument("--tokenizer", required=True, help="local tokenizer.json, or a directory holding one")
    parser.add_argument("--out", required=True, help="output directory (save_pretrained: model + tokenizer)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    defaults = CaptionLMConfig()
    for f in fields(CaptionLMConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(getattr(defaults, f.name)),
                            default=getattr(defaults, f.name), help=f"default {getattr(defaults, f.name)}")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    config = CaptionLMConfig(**{f.name: getattr(args, f.name) for f in fields(CaptionLMConfig)})
    tokenizer = load_tokenizer(args.tokenizer)
    captions = read_captions(args.captions)
    _, losses = pretrain_caption_lm(captions, tokenizer, config, out_dir=args.out, progress=not args.quiet)
    print(f"trained on {len(captions)} captions for {config.steps} steps: loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
          f"saved to {args.out}")


if __name__ == "__main__":
    main()
