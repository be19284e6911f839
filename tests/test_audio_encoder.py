"""FrozenAudioEncoder: Kaldi fbank puts a tone in its mel bin, segment masks, shapes, batch assembly."""
import math

import pytest
import torch

from videoqf.encoders.audio import FrozenAudioEncoder, kaldi_fbank, segment_starts
from videoqf.encoders.config import AudioEncoderConfig

SR = 16_000


def tone(freq, seconds=1.0):
    t = torch.arange(int(seconds * SR)) / SR
    return torch.sin(2 * math.pi * freq * t)


def kaldi_mel(freq):
    return 1127.0 * math.log(1.0 + freq / 700.0)


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return FrozenAudioEncoder(AudioEncoderConfig(allow_random=True, segment_seconds=1.0, max_segments=3))


@pytest.mark.parametrize("freq", [440.0, 1000.0, 3000.0, 6000.0])
def test_tone_energy_in_expected_mel_bin(freq):
    cfg = AudioEncoderConfig()
    fbank = kaldi_fbank(tone(freq), cfg)
    assert fbank.shape == (98, 128)  # 1 + (16000 - 400) // 160 frames
    # Kaldi: num_bins + 2 points equally spaced in mel between 20 Hz and Nyquist; bin i is centred on i + 1.
    low, high = kaldi_mel(20.0), kaldi_mel(SR / 2)
    centres = [low + (i + 1) * (high - low) / (cfg.num_mel_bins + 1) for i in range(cfg.num_mel_bins)]
    expected = min(range(cfg.num_mel_bins), key=lambda i: abs(centres[i] - kaldi_mel(freq)))
    assert int(fbank.mean(0).argmax()) == expected


def test_segment_starts():
    cfg = AudioEncoderConfig(segment_seconds=1.0, max_segments=4)
    assert segment_starts(2 * SR + 399, cfg) == [0, SR]  # trailing 399 samples < one 400-sample window
    assert segment_starts(2 * SR + 400, cfg) == [0, SR, 2 * SR]
    assert segment_starts(10 * SR, cfg) == [0, 3 * SR, 6 * SR, 9 * SR]  # spread over a long clip
    assert segment_starts(100, cfg) == []


def test_shapes_and_masks(encoder):
    waves = torch.randn(3, 5 * SR, generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(waves)
    mask[1, int(1.5 * SR):] = 0
    mask[2] = 0  # a clip without audio
    tokens, seg_mask = encoder(waves, mask)
    frames = encoder.config.spectrogram_frames
    assert frames == 112  # 98 fbank frames padded to a multiple of 16
    assert tokens.shape == (3, 3, 1 + (frames // 16) * (128 // 16), 192)
    assert seg_mask.tolist() == [[True, True, True], [True, True, False], [False, False, False]]
    assert tokens[~seg_mask].abs().max() == 0
    assert tokens[seg_mask].abs().amin(dim=-1).amax() > 0


def test_no_audio_gives_zero_mask(encoder):
    tokens, seg_mask = encoder(None, batch_size=2)
    assert tokens.shape == (2, 3, encoder.num_tokens, 192) and not seg_mask.any() and tokens.abs().max() == 0
    tokens, seg_mask = encoder([tone(440.0), None])
    assert seg_mask.tolist() == [[True, False, False], [False, False, False]]
    assert tokens[1].abs().max() == 0
    with pytest.raises(ValueError, match="batch_size"):
        encoder(None)


def test_a_track_too_short_for_a_segment_gives_none_on_its_own_device(encoder):
    # a batch moved to a GPU joins every clip's segments there, the empty ones too (meta stands for the GPU)
    short = torch.zeros(encoder.config.window_samples - 1, device="meta")
    images = encoder.spectrograms(short)
    assert images.shape == (0, 1, encoder.config.spectrogram_frames, encoder.config.num_mel_bins)
    assert images.device.type == "meta" and images.dtype == torch.float32


def test_batch_rows_equal_single_clip(encoder):
    a, b = tone(440.0, 2.0), tone(3000.0, 1.2)
    tokens, _ = encoder([a, b])
    alone, _ = encoder([b])
    direct = encoder.trunk(encoder.spectrograms(b)[None])[0]
    torch.testing.assert_close(tokens[1, :2], alone[0, :2], rtol=0, atol=1e-5)
    torch.testing.assert_close(tokens[1, :2], direct, rtol=0, atol=1e-5)


def test_frozen_and_needs_weights(encoder):
    encoder.train()
    assert not encoder.trunk.training and not any(p.requires_grad for p in encoder.parameters())
    with pytest.raises(ValueError, match="allow_random"):
        FrozenAudioEncoder(AudioEncoderConfig())
