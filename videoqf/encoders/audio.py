"""Frozen AST-style audio encoder: Kaldi fbank over fixed-length segments, then a frozen timm ViT.

Follows AST (Gong et al., 2021) for the spectrogram (128 mel bins, 25 ms Hanning window, 10 ms shift,
htk-compatible log-mel, zero time padding, ``(x - mean) / (2 * std)`` normalisation) and Video-LLaMA
(Zhang et al., 2023) for cutting a clip's audio into up to 8 segments of 2 s, each encoded on its own.
The ViT is a ``FrozenVisionEncoder`` with ``in_chans=1`` over ``[frames, mel_bins]`` images.

Notation: B batch, L samples, S = max_segments, F fbank frames, M mel bins, N tokens, D width.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torchaudio.compliance import kaldi

from videoqf.encoders.config import AudioEncoderConfig, VisionEncoderConfig
from videoqf.encoders.vision import FrozenVisionEncoder

AudioBatch = torch.Tensor | Sequence[torch.Tensor | None] | None


def kaldi_fbank(waveform: torch.Tensor, config: AudioEncoderConfig) -> torch.Tensor:
    """waveform [L] (mono, ``config.sample_rate``) -> log-mel fbank [F, M], as AST computes it."""
    waveform = waveform.float()
    return kaldi.fbank(
        (waveform - waveform.mean())[None],
        htk_compat=True,
        sample_frequency=config.sample_rate,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=config.num_mel_bins,
        dither=0.0,
        frame_shift=config.frame_shift_ms,
        frame_length=config.frame_length_ms,
    )


def segment_starts(num_samples: int, config: AudioEncoderConfig) -> list[int]:
    """Sample offsets of the segments of a clip: consecutive, or ``max_segments`` spread evenly over a
    longer clip. A trailing piece shorter than one fbank window is not a segment."""
    seg = config.segment_samples
    count = sum(1 for start in range(0, num_samples, seg) if num_samples - start >= config.window_samples)
    if count <= config.max_segments:
        return [i * seg for i in range(count)]
    return torch.linspace(0, num_samples - seg, config.max_segments).round().long().tolist()


class FrozenAudioEncoder(nn.Module):
    """audio -> (tokens [B, S, N, D], segment_mask [B, S]); segments without audio are zeros, mask 0.

    Frozen like the vision encoder (eval mode, no grad, weights from a local file unless allow_random).
    """

    def __init__(self, config: AudioEncoderConfig):
        super().__init__()
        self.config = config
        self.trunk = FrozenVisionEncoder(
            VisionEncoderConfig(
                model_name=config.model_name,
                weights=config.weights,
                allow_random=config.allow_random,
                image_size=(config.spectrogram_frames, config.num_mel_bins),
                in_chans=1,
                block_index=config.block_index,
                chunk_size=config.chunk_size,
                dtype=config.dtype,
                drop_keys=config.drop_keys,
            )
        )

    @property
    def output_dim(self) -> int:
        return self.trunk.output_dim

    @property
    def num_tokens(self) -> int:
        return self.trunk.num_tokens

    def weight_hash(self) -> str:
        return self.trunk.weight_hash()

    def spectrograms(self, waveform: torch.Tensor) -> torch.Tensor:
        """waveform [L] -> normalised segment spectrograms [s, 1, F, M], s <= max_segments (may be 0)."""
        cfg = self.config
        images = []
        for start in segment_starts(waveform.shape[0], cfg):
            fbank = kaldi_fbank(waveform[start : start + cfg.segment_samples], cfg)
            fbank = F.pad(fbank, (0, 0, 0, cfg.spectrogram_frames - fbank.shape[0]))
            images.append((fbank - cfg.fbank_mean) / (2 * cfg.fbank_std))
        if not images:
            return waveform.new_zeros(0, 1, cfg.spectrogram_frames, cfg.num_mel_bins, dtype=torch.float32)
        return rearrange(torch.stack(images), "s f m -> s 1 f m")

    def _waveforms(
        self, audio: AudioBatch, audio_mask: torch.Tensor | None, batch_size: int | None
    ) -> list[torch.Tensor | None]:
        if audio is None:
            if batch_size is None:
                raise ValueError("audio=None needs batch_size to size the all-zero output")
            return [None] * batch_size
        if isinstance(audio, torch.Tensor):
            if audio.dim() != 2:
                raise ValueError(f"audio must be [B, L] waveforms, got shape {tuple(audio.shape)}")
            if audio_mask is None:
                return list(audio)
            if audio_mask.shape != audio.shape:
                raise ValueError(
                    f"audio_mask shape {tuple(audio_mask.shape)} != audio shape {tuple(audio.shape)}"
                )
            return [wave[mask.bool()] for wave, mask in zip(audio, audio_mask)]
        return list(audio)

    @torch.no_grad()
    def forward(
        self,
        audio: AudioBatch,
        audio_mask: torch.Tensor | None = None,
        *,
        batch_size: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of clips' audio.

        audio: waveforms [B, L] with ``audio_mask`` [B, L] (1 = real sample); or a list of [L] waveforms
            or None (no audio track); or None for a batch without audio (then ``batch_size`` is needed).
        Returns tokens [B, S, N, D] (trunk dtype, trunk device) and segment_mask [B, S] (bool).
        """
        waves = self._waveforms(audio, audio_mask, batch_size)
        cfg = self.config
        weight = self.trunk.model.patch_embed.proj.weight
        tokens = torch.zeros(
            len(waves), cfg.max_segments, self.num_tokens, self.output_dim,
            dtype=weight.dtype, device=weight.device,
        )
        segment_mask = torch.zeros(len(waves), cfg.max_segments, dtype=torch.bool, device=weight.device)
        images = [self.spectrograms(w) if w is not None else None for w in waves]
        counts = [0 if im is None else im.shape[0] for im in images]
        if sum(counts) == 0:
            return tokens, segment_mask
        stacked = torch.cat([im for im in images if im is not None])
        encoded = self.trunk(stacked[None])[0]  # the trunk chunks the segments: [sum(counts), N, D]
        for b, (count, chunk) in enumerate(zip(counts, encoded.split(counts))):
            tokens[b, :count] = chunk
            segment_mask[b, :count] = True
        return tokens, segment_mask
