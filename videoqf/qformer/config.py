"""Configuration of the BERT-style Q-Former (BLIP-2, arXiv:2301.12597, section 3.1)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class QFormerConfig:
    """Sizes and switches of one Q-Former.

    The defaults are BLIP-2's: BERT-base (12 layers, 768 wide, 12 heads, FFN 3072), cross-attention
    every 2nd layer, 32 learned queries, EVA ViT-g features (1408 wide), BERT's uncased vocabulary plus
    the [DEC] token.

    Query routing (feed-forward experts): ``query_experts[i]`` names the expert of the i-th query group,
    whose size is ``query_group_sizes[i]`` (empty sizes: one group of all queries); text positions go
    through ``text_expert``. BLIP-2 is ``query_experts=["query"], text_expert="text"``.

    timed_groups: the query groups (names in ``query_experts``, next to each other) whose cross-attention reads the
    encoder tokens with the context's time embedding added (``encode_context(..., time=)``); the other queries
    read them without.
    """

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    cross_attention_frequency: int = 2
    encoder_width: int = 1408
    num_queries: int = 32
    vocab_size: int = 30523
    max_text_len: int = 512
    layer_norm_eps: float = 1e-12
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    initializer_range: float = 0.02
    text_branch: bool = True
    query_experts: list[str] = field(default_factory=lambda: ["query"])
    query_group_sizes: list[int] = field(default_factory=list)
    text_expert: str = "text"
    timed_groups: list[str] = field(default_factory=list)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"qformer.hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        if self.cross_attention_frequency < 1:
            raise ValueError("qformer.cross_attention_frequency must be >= 1")
        if self.query_group_sizes and len(self.query_group_sizes) != len(self.query_experts):
            raise ValueError(
                f"qformer.query_group_sizes {list(self.query_group_sizes)} must give one size per expert "
                f"in query_experts {list(self.query_experts)}"
            )
        if self.query_group_sizes and sum(self.query_group_sizes) != self.num_queries:
            raise ValueError(
                f"qformer.query_group_sizes sum to {sum(self.query_group_sizes)}, not num_queries={self.num_queries}"
            )
        if not self.query_group_sizes and len(self.query_experts) != 1:
            raise ValueError("qformer.query_group_sizes is required when there is more than one query expert")
        unknown = [g for g in self.timed_groups if g not in self.query_experts]
        if unknown:
            raise ValueError(f"qformer.timed_groups {unknown} are none of query_experts {list(self.query_experts)}")
        where = sorted(self.query_experts.index(g) for g in self.timed_groups)
        if where and where != list(range(where[0], where[0] + len(where))):
            raise ValueError(f"qformer.timed_groups {list(self.timed_groups)} must be next to each other in "
                             f"query_experts {list(self.query_experts)}")

    @property
    def query_routes(self) -> list[tuple[str, int]]:
        sizes = list(self.query_group_sizes) or [self.num_queries]
        return list(zip(self.query_experts, sizes))

    @property
    def timed_queries(self) -> slice | None:
        """The query positions of ``timed_groups`` (None without any)."""
        if not self.timed_groups:
            return None
        names, sizes = zip(*self.query_routes)
        where = [names.index(g) for g in self.timed_groups]
        return slice(sum(sizes[: min(where)]), sum(sizes[: max(where) + 1]))

    def has_cross_attention(self, layer_index: int) -> bool:
        """BLIP-2 / LAVIS / transformers place cross-attention at layers 0, f, 2f, ..."""
        return layer_index % self.cross_attention_frequency == 0

    @property
    def cross_layers(self) -> list[int]:
        return [i for i in range(self.num_layers) if self.has_cross_attention(i)]
