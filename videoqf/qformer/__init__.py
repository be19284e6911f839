"""BLIP-2's Querying Transformer: ``QFormer``, its config, and importers of BLIP-2 weights."""
from videoqf.qformer.config import QFormerConfig
from videoqf.qformer.convert import load_lavis_state_dict, to_lavis_state_dict
from videoqf.qformer.model import CrossContext, QFormer, QFormerCache, QFormerOutput

__all__ = [
    "QFormer",
    "QFormerConfig",
    "QFormerOutput",
    "QFormerCache",
    "CrossContext",
    "load_lavis_state_dict",
    "to_lavis_state_dict",
]
