"""Configuration of the stage-2 bridge to a frozen LLM (BLIP-2 stage 2 / InstructBLIP) and of
the tiny caption LM that `tools/pretrain_lm.py` trains for the synthetic world."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ARCHS = ("causal", "seq2seq")
MAX_NEW_TOKENS = 32  # generation's default caption length, for the LLM and the head alike
PROJECTOR_KINDS = ("linear", "mlp", "flatten")


@dataclass
class ProjectorConfig:
    """kind: "linear" (BLIP-2's single Linear), "mlp" (Linear-GELU-Linear, as LLaVA-1.5) or "flatten" (one
    Linear from all M video tokens at once to M LLM tokens, so each LLM token may draw on every query; needs a
    backend that hands the LLM a fixed number of tokens).
    hidden_dim: width of the MLP's middle layer; None means the LLM's embedding width."""

    kind: str = "linear"
    hidden_dim: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in PROJECTOR_KINDS:
            raise ValueError(f"ProjectorConfig.kind must be one of {PROJECTOR_KINDS}, got {self.kind!r}")


@dataclass
class LLMConfig:
    """Which frozen LLM, and how the video tokens enter it.

    arch: "causal" (decoder-only, AutoModelForCausalLM) or "seq2seq" (T5 / Flan-T5,
    AutoModelForSeq2SeqLM). Exactly one of `path` (a LOCAL directory written by save_pretrained)
    and `model_config` (keyword arguments of `AutoConfig.for_model`, `model_type` included:
    random weights, for tests) is set. tokenizer_path: local tokenizer directory or
    tokenizer.json; None means `path`.
    prompt: the default prompt, used when a batch brings none. instruction_aware: InstructBLIP's
    option; the bridge then hands the prompt back for the Q-Former's text branch.
    max_text_len: prompts and captions are truncated to this many tokens.
    own_head: the LLM reads the queries of its own copy of the backend's head, made from the stage-1 head when
    the caption stage starts and trained there (its ``train: [llm_head.top]``), instead of the head itself.
    BLIP-2 trains the whole Q-Former in stage 2; here the original head keeps what stage 1 taught it, so
    retrieval (VTC / VTM on the head) does not drift with the captioning loss.
    """

    arch: str = "causal"
    path: str | None = None
    model_config: dict[str, Any] | None = None
    tokenizer_path: str | None = None
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    prompt: str = ""
    instruction_aware: bool = False
    max_text_len: int = 64
    own_head: bool = False

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"LLMConfig.arch must be one of {ARCHS}, got {self.arch!r}")
        if (self.path is None) == (self.model_config is None):
            raise ValueError("LLMConfig needs exactly one of `path` (local directory) and `model_config`")
        if self.model_config is not None and "model_type" not in self.model_config:
            raise ValueError("LLMConfig.model_config needs a 'model_type' key (e.g. 'gpt2', 't5')")
        if isinstance(self.projector, dict):
            self.projector = ProjectorConfig(**self.projector)


@dataclass
class CaptionLMConfig:
    """The tiny GPT-2 trained on captions (a stand-in for a pretrained LLM in the synthetic world)."""

    n_layer: int = 2
    n_embd: int = 128
    n_head: int = 4
    max_len: int = 128  # positions: room for up to ~90 video tokens before a caption in stage 2
    # Each caption starts at a random position in [0, max_len - its length]: stage 2 puts it after the
    # video tokens, and positions never trained would keep their random init (a caption of ~25 tokens
    # trains only positions 0-27 otherwise).
    random_offset: bool = True
    # Soft-prompt pre-training (videoqf/llm/prefix_encoder.py): each caption is decoded from this many
    # vectors a caption encoder makes from it (0: captions alone), except a plain_fraction of them, which
    # start from nothing; the LM then reads a soft prompt as stage 2 gives it one (docs/decisions.md).
    prefix_slots: int = 12
    # plain examples lower how well the LM decodes captions from their own prefix, the ceiling of stage 2
    plain_fraction: float = 0.0
    # N(0, init_std) weights, not GPT-2's 0.02 (tuned for 768 wide): at 128 wide the decoder learns to read
    # the prefix far faster
    init_std: float = 0.08
    # GPT-2's dropout and tanh-approximated GELU cost a fifth of each step and lower the prefix ceiling
    dropout: float = 0.0
    activation: str = "gelu"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-3  # twice this fails to learn the prefix (docs/decisions.md)
    weight_decay: float = 0.01
    warmup_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"CaptionLMConfig.n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.steps <= 0 or self.batch_size <= 0:
            raise ValueError("CaptionLMConfig.steps and batch_size must be positive")
        if self.prefix_slots < 0 or not 0.0 <= self.plain_fraction <= 1.0:
            raise ValueError("CaptionLMConfig needs prefix_slots >= 0 and plain_fraction in [0, 1]")
