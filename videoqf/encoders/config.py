"""Typed configs for the frozen encoders (vision: BLIP-2's EVA ViT-g or any timm ViT; audio: AST-style).

References: BLIP-2 (Li et al., 2023) takes the second-to-last block of EVA ViT-g; Video-LLaMA (Zhang et al.,
2023) encodes up to 8 two-second audio segments; AST (Gong et al., 2021) embeds Kaldi fbank patches with a ViT.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DTYPES = ("auto", "float32", "bfloat16", "float16")


def _check_common(kind: str, dtype: str, chunk_size: int) -> None:
    if dtype not in DTYPES:
        raise ValueError(f"{kind}.dtype={dtype!r}: expected one of {DTYPES}")
    if chunk_size < 1:
        raise ValueError(f"{kind}.chunk_size={chunk_size}: must be >= 1")


@dataclass
class VisionEncoderConfig:
    """A frozen timm vision transformer that maps frames to patch tokens.

    model_name: any timm ViT-family name, optionally with a pretrained tag (it selects the data config),
        e.g. ``vit_tiny_patch16_224`` (tests) or ``eva_giant_patch14_224.clip_ft_in1k`` (BLIP-2-like).
    weights: a weight file (``.safetensors``, or a torch state dict read with ``weights_only=True``), or a
        directory holding ``model.safetensors`` / ``pytorch_model.bin`` (a local Hugging Face cache repo
        folder ``models--org--name`` works too). None is an error unless ``allow_random``.
    allow_random: permit random weights when ``weights`` is None (tests and the synthetic demo only).
    image_size: input size (int or (H, W)); None keeps the timm model's default.
    in_chans: input channels (3 for frames, 1 for spectrograms).
    block_index: whose block output to return; -2 is BLIP-2's choice. Later blocks are never built.
    chunk_size: frames per forward pass, bounding activation memory for long clips.
    dtype: weight/compute dtype; "auto" is bf16 (else fp16) when CUDA is available, fp32 otherwise.
    drop_keys: key prefixes removed from the checkpoint before strict loading (e.g. ``("head.",)`` for a
        classifier checkpoint); everything else must match exactly.
    model_kwargs: extra keyword arguments for ``timm.create_model`` (e.g. ``{"drop_path_rate": 0.0}``).
    """

    model_name: str = "vit_tiny_patch16_224"
    weights: str | None = None
    allow_random: bool = False
    image_size: int | tuple[int, int] | None = None
    in_chans: int = 3
    block_index: int = -2
    chunk_size: int = 32
    dtype: str = "auto"
    drop_keys: tuple[str, ...] = ()
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_common("vision", self.dtype, self.chunk_size)


@dataclass
class AudioEncoderConfig:
    """An AST-style frozen audio encoder: Kaldi fbank of fixed-length segments -> timm ViT patch tokens.

    The spectrogram of a segment is ``[frames, num_mel_bins]``, zero-padded in time to a multiple of the
    patch size, and normalised as AST does: ``(fbank - fbank_mean) / (2 * fbank_std)``.
    model_name / weights / allow_random / block_index / chunk_size / dtype / drop_keys: as for vision; the
        ViT is built with ``in_chans=1`` and ``img_size=(frames, num_mel_bins)``.
    segment_seconds: length of one segment; max_segments: at most this many per clip (Video-LLaMA: 8),
        spread evenly over the clip when it is longer.
    """

    model_name: str = "vit_tiny_patch16_224"
    weights: str | None = None
    allow_random: bool = False
    block_index: int = -1
    chunk_size: int = 32
    dtype: str = "auto"
    drop_keys: tuple[str, ...] = ()
    sample_rate: int = 16_000
    num_mel_bins: int = 128
    frame_shift_ms: float = 10.0
    frame_length_ms: float = 25.0
    segment_seconds: float = 2.0
    max_segments: int = 8
    patch_size: int = 16
    fbank_mean: float = -4.2677393  # AudioSet statistics published with AST
    fbank_std: float = 4.5689974

    def __post_init__(self) -> None:
        _check_common("audio", self.dtype, self.chunk_size)
        if self.max_segments < 1:
            raise ValueError(f"audio.max_segments={self.max_segments}: must be >= 1")
        if self.segment_samples < self.window_samples:
            raise ValueError(
                f"audio.segment_seconds={self.segment_seconds} is shorter than one "
                f"{self.frame_length_ms} ms fbank window"
            )

    @property
    def segment_samples(self) -> int:
        return round(self.segment_seconds * self.sample_rate)

    @property
    def window_samples(self) -> int:
        return round(self.frame_length_ms * self.sample_rate / 1000)

    @property
    def shift_samples(self) -> int:
        return round(self.frame_shift_ms * self.sample_rate / 1000)

    @property
    def spectrogram_frames(self) -> int:
        """Fbank frames of one segment (Kaldi ``snip_edges``), rounded up to a multiple of the patch."""
        frames = 1 + (self.segment_samples - self.window_samples) // self.shift_samples
        return -(-frames // self.patch_size) * self.patch_size
