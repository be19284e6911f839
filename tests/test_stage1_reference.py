"""The stage-1 benchmark's LAVIS-style reference (benchmarks/stage1_step.py): its ITG text pass, which continues
the query pass's keys/values as LAVIS's ``past_key_values`` do, equals the joint pass over ``[queries; text]``
under LAVIS's decoder mask (queries see queries; text sees every query and the text before it)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.stage1_step import QUICK, LavisStage1  # noqa: E402


def test_itg_with_past_equals_the_joint_causal_pass():
    torch.manual_seed(0)
    ref = LavisStage1(QUICK).eval()
    batch, length, queries = 3, 7, QUICK["queries"]
    image = torch.randn(batch, QUICK["tokens"], QUICK["width"])
    ids = torch.randint(1, QUICK["vocab"] - 1, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        _, past = ref._run_queries(image)
        continued = ref._causal_text(ids, mask, past)
        x = ref.bert.layernorm(torch.cat([ref.query_tokens.expand(batch, -1, -1), ref.embeddings(input_ids=ids)], 1))
        allow = torch.zeros(queries + length, queries + length, dtype=torch.bool)
        allow[:, :queries] = True
        allow[queries:, queries:] = torch.ones(length, length, dtype=torch.bool).tril()
        allow[:queries, queries:] = False
        allow = allow[None] & torch.cat([torch.ones(batch, queries, dtype=torch.bool), mask.bool()], 1)[:, None]
        joint = ref.bert.encoder(x, attention_mask=allow[:, None], encoder_hidden_states=image,
                                 query_length=queries).last_hidden_state[:, queries:]
    assert torch.allclose(continued[mask.bool()], joint[mask.bool()], atol=1e-5)
