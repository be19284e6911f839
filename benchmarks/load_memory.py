"""Peak memory of ``load_pretrained`` on a random checkpoint of about 1 GB at BLIP-2's layout.

    python benchmarks/load_memory.py --folder /tmp/blip2-1gb

The checkpoint (made once, in its own process): transformers' ``Blip2ForConditionalGeneration`` with BLIP-2's
Q-Former at full size (12 layers, 768 wide, 32 queries), a 12-layer 768-wide vision tower and a 125M OPT,
fp32, written in 200 MB shards with its processor. Each load runs in a fresh process that reads its own peak
RSS (``ru_maxrss``) before and after: transformers' ``from_pretrained`` of the folder alone, then
``load_pretrained`` (which starts with that same call). Goal: peak RSS <= 1.3 x the weight files' size.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_result  # noqa: E402

MAKE = r"""
import sys, torch
from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor, BlipImageProcessor
sys.path.insert(0, "tests")
from _hf_tiny import llm_tokenizer
torch.manual_seed(0)
tok = llm_tokenizer("opt")
config = Blip2Config(
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=14),
    qformer_config=dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        cross_attention_frequency=2),
    text_config=dict(model_type="opt", vocab_size=50272, hidden_size=768, num_hidden_layers=12, ffn_dim=3072,
                     num_attention_heads=12, word_embed_proj_dim=768, max_position_embeddings=2048,
                     bos_token_id=2, eos_token_id=2, pad_token_id=1),
    num_query_tokens=32, image_token_index=len(tok) - 1)
model = Blip2ForConditionalGeneration(config)
model.save_pretrained(sys.argv[1], max_shard_size="200MB")
processor = Blip2Processor(BlipImageProcessor(size={"height": 224, "width": 224}), tok, num_query_tokens=32)
processor.save_pretrained(sys.argv[1])
"""

MEASURE = r"""
import json, resource, sys
from transformers import Blip2ForConditionalGeneration
import videoqf.pretrained
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if sys.argv[2].startswith("transformers"):
    dtype = "bfloat16" if sys.argv[2].endswith("bf16") else "auto"
    model = Blip2ForConditionalGeneration.from_pretrained(sys.argv[1], local_files_only=True, dtype=dtype)
else:
    dtype = {"dtype": sys.argv[2]} if sys.argv[2] != "stored" else {}
    model = videoqf.pretrained.load_pretrained(sys.argv[1], **dtype)
loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for p in model.parameters():  # read every weight once: mapped pages count only once read
    p.sum()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tensors = {id(t): t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]}
print(json.dumps({"before_kib": before, "loaded_kib": loaded, "peak_kib": after, "tensor_bytes": sum(tensors.values())}))
"""


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "?")


def measure(folder: Path, how: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(folder), how], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", required=True, help="where the random checkpoint is (made there if absent)")
    args = ap.parse_args(argv)
    folder = Path(args.folder)
    if not (folder / "config.json").is_file():
        subprocess.run([sys.executable, "-c", MAKE, str(folder)], check=True,
                       cwd=Path(__file__).resolve().parent.parent)
    size = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    shards = len(list(folder.glob("*.safetensors")))
    rows, peaks = [], {}
    for how in ("transformers", "stored", "transformers-bf16", "bf16"):
        m = measure(folder, how)
        peaks[how] = m["peak_kib"] - m["before_kib"]
        before, loaded, peak = (m[k] * 1024 for k in ("before_kib", "loaded_kib", "peak_kib"))
        name = {"transformers": "transformers `from_pretrained` alone", "stored": "`load_pretrained` (stored fp32)",
                "transformers-bf16": "transformers `from_pretrained(dtype=bfloat16)` alone",
                "bf16": "`load_pretrained(dtype='bf16')`"}[how]
        rows.append(f"| {name} | {m['tensor_bytes'] / 2**30:.2f} | {before / 2**30:.2f} | {loaded / 2**30:.2f} | "
                    f"{peak / 2**30:.2f} | {(peak - before) / size:.2f} | {(peak - before) / m['tensor_bytes']:.2f} |")
    body = (f"Random `Blip2ForConditionalGeneration` at BLIP-2's layout (Q-Former full size, 12-layer 768-wide vision "
            f"tower, 125M OPT), {size / 2**30:.2f} GiB of fp32 weights in {shards} safetensors shards. One fresh "
            "process per row; peak RSS is `ru_maxrss`, read after the imports, after the load, and after reading "
            "every tensor once (weights mapped from the files count only once read). `lscpu` model name: "
            f"{cpu_model()}.\n\n"
            "| load | model's tensors (GiB) | RSS after imports (GiB) | peak RSS, loaded (GiB) | peak RSS, every "
            "tensor read (GiB) | (peak - imports) / files | (peak - imports) / model's tensors |\n"
            "| --- | --- | --- | --- | --- | --- | --- |\n" + "\n".join(rows) + "\n\n"
            f"Peak growth over transformers' own load of the same folder in the same dtype: stored "
            f"{peaks['stored'] / peaks['transformers']:.2f}x, bf16 {peaks['bf16'] / peaks['transformers-bf16']:.2f}x "
            "(the fp32 -> bf16 cast of fp32 files happens inside transformers' `from_pretrained`, which both rows call).")
    print(body)
    print(write_result("load_memory", "Loading released weights: peak memory (benchmarks/load_memory.py)", body))
    return 0


if __name__ == "__main__":
    sys.exit(main())
