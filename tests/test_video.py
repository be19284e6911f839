"""load_clip: exact indices/timestamps, pixel content, windows, audio (16 kHz, FFT), bad files."""
import os
import shutil

import av
import decord
import numpy as np
import pytest
import torch

from videoqf.data.readers import read_audio
from videoqf.data.samplers import build_sampler
from videoqf.data.synthetic import COLOURS, object_states
from videoqf.data.synthetic.media import write_mp4
from videoqf.data.synthetic.vocab import BACKGROUND
from videoqf.data.video import AUDIO_SAMPLE_RATE, VideoDecodeError, load_clip

RAW = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # frames come back in [0, 1]


def _rgb_at(frame: torch.Tensor, centre, size: int) -> np.ndarray:
    x, y = int(centre[0] * size), int(centre[1] * size)
    return (frame[:, y, x] * 255).numpy()


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_indices_timestamps_and_grey_levels(make_video, backend):
    path = make_video(num_frames=32, fps=8)
    clip = load_clip(path, build_sampler("uniform", num_frames=8), image_size=32, backend=backend, **RAW)
    expected = [1, 5, 9, 13, 17, 21, 25, 29]
    assert clip.frame_indices.tolist() == expected
    torch.testing.assert_close(clip.timestamps, torch.tensor(expected, dtype=torch.float32) / 8)
    assert clip.frames.shape == (8, 3, 32, 32) and clip.frame_mask.all()
    # frame i is flat grey 8 * i: the decoded pixel says which frame was decoded
    grey = clip.frames.mean(dim=(1, 2, 3)) * 255
    assert torch.allclose(grey, 8 * clip.frame_indices.float(), atol=2.0)
    assert clip.window == (0.0, 4.0)


def test_normalisation_and_resize(make_video):
    path = make_video(num_frames=8, size=48)
    clip = load_clip(path, build_sampler("middle", num_frames=1), image_size=24, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert clip.frames.shape == (1, 3, 24, 24)
    index = clip.frame_indices.item()
    assert torch.allclose(clip.frames, torch.full_like(clip.frames, (8 * index / 255 - 0.5) / 0.25), atol=0.05)


def test_synthetic_pixels_match_the_spec(synthetic_dir, synthetic_records):
    for record in synthetic_records["train"][:3]:
        spec, size = record["spec"], record["size"]
        clip = load_clip(os.path.join(synthetic_dir, record["video"]), build_sampler("uniform", num_frames=6),
                         image_size=size, **RAW)
        shown = 0
        for frame, index in zip(clip.frames, clip.frame_indices.tolist()):
            objects = object_states(spec, index)  # none before an "appears" instant of its own event
            shown += len(objects)
            for obj in objects:
                np.testing.assert_allclose(_rgb_at(frame, obj["centre"], size), obj["rgb"], atol=24)
            np.testing.assert_allclose(_rgb_at(frame, (0.02, 0.02), size), BACKGROUND, atol=12)
        assert shown >= 2, "the sampled frames show objects (every clip has two events or more)"


def test_event_boundary_frames(synthetic_dir, synthetic_records):
    """An 'appears' object is absent one frame before its instant and present at it; a turn flips colour."""
    checked = 0
    for record in synthetic_records["train"] + synthetic_records["test"]:
        for event in record["spec"]["events"]:
            if event["action"] == "moves":
                continue
            at = event["at"]
            clip = load_clip(os.path.join(synthetic_dir, record["video"]), build_sampler("uniform", num_frames=2),
                             start=(at - 1) / 8, end=(at + 1) / 8, image_size=record["size"], **RAW)
            assert clip.frame_indices.tolist() == [at - 1, at]
            before, after = (_rgb_at(f, event["from"], record["size"]) for f in clip.frames)
            expect_before = BACKGROUND if event["action"] == "appears" else COLOURS[event["colour"]]
            expect_after = COLOURS[event.get("new_colour", event["colour"])]
            np.testing.assert_allclose(before, expect_before, atol=24)
            np.testing.assert_allclose(after, expect_after, atol=24)
            checked += 1
    assert checked >= 3


def test_window_selects_frames_and_audio(make_video):
    path = make_video(num_frames=32, fps=8)
    clip = load_clip(path, build_sampler("uniform", num_frames=4), start=1.0, end=2.0, image_size=16)
    assert clip.frame_indices.tolist() == [8, 10, 12, 14]  # midpoints of 2-frame segments, rounded down
    assert clip.window == (1.0, 2.0)
    assert clip.audio.shape == (AUDIO_SAMPLE_RATE,) and clip.audio_mask.all()


def test_audio_window_equals_decords_own_slice(make_video):
    """read_audio decodes only the window (PyAV seeks, with a pre-roll); its samples are those of decord's
    whole-track decoding, to within 1e-5 of a unit-scale signal (the decoder's state after the pre-roll; a missing
    pre-roll is off by ~0.03)."""
    _assert_window_is_decords(make_video(num_frames=32, fps=8), 44_100)


def _assert_window_is_decords(path: str, rate: int) -> None:
    reader = decord.AudioReader(path, sample_rate=-1, mono=True)
    lo, hi = round(1.25 * rate), round(2.5 * rate)
    reference = torch.from_numpy(reader[lo:hi].asnumpy()[0]).float()
    window = read_audio(path, 1.25, 2.5, rate=rate)
    assert window.shape == (hi - lo,) and reference.abs().max() > 0.1
    torch.testing.assert_close(window, reference, atol=1e-5, rtol=0)


def test_a_stereo_track_is_mixed_down_as_decord_mixes_it(tmp_path):
    """A mono float track is read as decoded; any other goes through FFmpeg's resampler to mono."""
    path, rate = str(tmp_path / "stereo.mp4"), 44_100
    t = np.arange(3 * rate) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 660 * t)
    with av.open(path, mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(np.stack([left, right]).astype(np.float32), format="fltp", layout="stereo")
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    _assert_window_is_decords(path, rate)


def test_window_past_the_end_is_clamped_with_a_warning(make_video):
    path = make_video(num_frames=32, fps=8)
    with pytest.warns(UserWarning, match="clamped") as caught:
        clip = load_clip(path, build_sampler("uniform", num_frames=4), start=3.0, end=9.0, image_size=16)
    assert path in str(caught[0].message)
    assert clip.window == (3.0, 4.0)
    assert clip.frame_indices.tolist() == [24, 26, 28, 30]
    assert clip.audio.shape == (AUDIO_SAMPLE_RATE,)
    with pytest.raises(ValueError, match="after the end"):
        load_clip(path, build_sampler("uniform", num_frames=4), start=5.0, image_size=16)


def test_short_clip_is_padded_and_masked(make_video):
    path = make_video(num_frames=6)
    clip = load_clip(path, build_sampler("uniform", num_frames=8), image_size=16)
    assert clip.frame_indices.tolist() == [0, 1, 2, 3, 4, 5, 5, 5]
    assert clip.frame_mask.tolist() == [True] * 6 + [False] * 2
    assert torch.equal(clip.frames[6], clip.frames[5])


def test_no_audio_track_gives_none_and_a_false_mask(make_video):
    path = make_video(tone_hz=None, num_frames=16)
    clip = load_clip(path, build_sampler("uniform", num_frames=4), image_size=16)
    assert clip.audio is None and not clip.has_audio
    assert clip.audio_mask.shape == (2 * AUDIO_SAMPLE_RATE,) and not clip.audio_mask.any()
    with av.open(path) as container:
        assert not container.streams.audio  # really no track, not a silent one


def test_audio_off_on_request(make_video):
    clip = load_clip(make_video(), build_sampler("uniform", num_frames=2), image_size=16, audio=False)
    assert clip.audio is None and not clip.audio_mask.any()


def _peak_hz(wave: torch.Tensor) -> float:
    spectrum = torch.fft.rfft(wave).abs()
    return spectrum.argmax().item() * AUDIO_SAMPLE_RATE / wave.shape[0]


@pytest.mark.parametrize("backend", ["auto", "pyav"])
@pytest.mark.parametrize("tone_hz,audio_rate", [(440.0, 44_100), (1500.0, 22_050)])
def test_audio_is_16khz_with_the_tone(make_video, backend, tone_hz, audio_rate):
    path = make_video(num_frames=16, tone_hz=tone_hz, audio_rate=audio_rate)
    clip = load_clip(path, build_sampler("uniform", num_frames=2), image_size=16, backend=backend)
    assert clip.audio.shape == (2 * AUDIO_SAMPLE_RATE,) and clip.audio.dtype == torch.float32
    assert abs(_peak_hz(clip.audio) - tone_hz) < 5
    middle = clip.audio[AUDIO_SAMPLE_RATE // 2 : 3 * AUDIO_SAMPLE_RATE // 2]
    assert abs(middle.pow(2).mean().sqrt().item() - 0.4 / 2**0.5) < 0.03  # RMS of the 0.4 sine


def test_synthetic_sounds_have_their_frequencies(synthetic_dir, synthetic_records):
    expected = {"low hum": 200.0, "high beep": 1500.0}
    seen = set()
    for record in synthetic_records["train"] + synthetic_records["val"] + synthetic_records["test"]:
        sound = record["spec"]["sound"]
        if sound in expected:
            clip = load_clip(os.path.join(synthetic_dir, record["video"]), build_sampler("uniform", num_frames=1), image_size=16)
            assert abs(_peak_hz(clip.audio) - expected[sound]) < 5
            seen.add(sound)
    assert seen  # at least one tone clip in the tiny set


def _truncated_copy(src: str, dst: str) -> str:
    data = open(src, "rb").read()
    open(dst, "wb").write(data[: len(data) // 2])
    return dst


def _faststart_truncated(tmp_path) -> str:
    """Index up front (moov first), data cut: decord cannot open it, PyAV sees missing frames."""
    frames = np.random.default_rng(0).integers(0, 255, (24, 32, 32, 3), dtype=np.uint8)
    path = str(tmp_path / "fast.mp4")
    write_mp4(path, frames, fps=8, codec="libx264")
    with av.open(path) as src, av.open(str(tmp_path / "faststart.mp4"), "w", options={"movflags": "faststart"}) as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = out
                dst.mux(packet)
    return _truncated_copy(str(tmp_path / "faststart.mp4"), str(tmp_path / "faststart_cut.mp4"))


def _empty_video_stream(tmp_path) -> str:
    path = str(tmp_path / "noframes.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width = stream.height = 32
    return path


@pytest.mark.parametrize("kind,cause", [
    ("missing", "does not exist"),
    ("text", "not a video"),
    ("empty", "empty file"),
    ("truncated", "truncated"),
    ("truncated_faststart", "truncated"),
    ("no_frames", "frame"),
])
def test_bad_files_raise_video_decode_error(tmp_path, make_video, kind, cause):
    if kind == "missing":
        path = str(tmp_path / "nope.mp4")
    elif kind == "text":
        path = str(tmp_path / "notes.mp4")
        open(path, "w").write("this is not a video\n" * 20)
    elif kind == "empty":
        path = str(tmp_path / "empty.mp4")
        open(path, "wb").close()
    elif kind == "truncated":
        path = _truncated_copy(make_video(), str(tmp_path / "cut.mp4"))
    elif kind == "truncated_faststart":
        path = _faststart_truncated(tmp_path)
    else:
        path = _empty_video_stream(tmp_path)
    with pytest.raises(VideoDecodeError, match=cause) as info:
        load_clip(path, build_sampler("uniform", num_frames=4), image_size=16)
    assert path in str(info.value) and info.value.path == path


def test_decord_only_backend_names_decord(tmp_path):
    path = _faststart_truncated(tmp_path)
    with pytest.raises(VideoDecodeError, match="decord"):
        load_clip(path, build_sampler("uniform", num_frames=4), image_size=16, backend="decord")


def test_random_sampler_seeded_through_load_clip(make_video):
    path = make_video(num_frames=64)
    sampler = build_sampler("random_segment", num_frames=4)
    a = load_clip(path, sampler, image_size=8, audio=False, seed=7).frame_indices
    b = load_clip(path, sampler, image_size=8, audio=False, seed=7).frame_indices
    assert torch.equal(a, b)


def test_path_objects_and_copies(tmp_path, make_video):
    from pathlib import Path
    src = make_video()
    dst = shutil.copy(src, tmp_path / "copy.mp4")
    clip = load_clip(Path(dst), build_sampler("uniform", num_frames=2), image_size=8, audio=False)
    assert clip.path == str(dst)


@pytest.mark.parametrize("backend", ["auto", "pyav"])
def test_threaded_decoding_gives_the_same_frames(tmp_path, backend):
    t, y, x = np.meshgrid(np.arange(48), np.arange(96), np.arange(96), indexing="ij")
    frames = np.stack([(x + 5 * t) % 256, (y + 3 * t) % 256, (x + y + t) % 256], axis=-1).astype(np.uint8)
    path = str(tmp_path / "moving.mp4")
    write_mp4(path, frames, fps=8, options={"g": "12"})
    sampler = build_sampler("uniform", num_frames=12)
    one, many = (load_clip(path, sampler, image_size=64, audio=False, backend=backend, threads=n) for n in (1, 4))
    assert torch.equal(one.frames, many.frames) and torch.equal(one.frame_indices, many.frame_indices)
    assert not torch.equal(one.frames[0], one.frames[-1])


def test_decoding_threads_follow_torchs_thread_count(make_video, monkeypatch):
    import videoqf.data.video as video
    seen = []
    real_open = video.open_video
    monkeypatch.setattr(video, "open_video", lambda *a: seen.append(a[3]) or real_open(*a))
    path = make_video()
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)  # a DataLoader worker runs with 1
            load_clip(path, build_sampler("uniform", num_frames=2), audio=False)
    finally:
        torch.set_num_threads(threads)
    assert seen == [1, 3]
