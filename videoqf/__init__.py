"""videoqf: video-language models built on BLIP-2's Querying Transformer (Q-Former)."""

__version__ = "0.1.0"
