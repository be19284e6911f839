"""Synthetic diagnostic world: clips of coloured shapes doing 2-3 ordered events, with a named sound.

Built so that order and sound matter (see ``generate.py`` for the layout and the pairs). Entry points:
``generate(out_dir, SyntheticConfig(...))``, ``load_tokenizer(dir)``, ``object_states(spec, frame)``.
"""
from videoqf.data.synthetic.generate import SyntheticConfig, generate
from videoqf.data.synthetic.media import video_codec, write_mp4
from videoqf.data.synthetic.render import render_audio, render_frames
from videoqf.data.synthetic.scenes import caption, object_states
from videoqf.data.synthetic.tokenizer import load_tokenizer
from videoqf.data.synthetic.vocab import COLOURS, SHAPES, SOUNDS

__all__ = [
    "COLOURS", "SHAPES", "SOUNDS", "SyntheticConfig", "caption", "generate", "load_tokenizer",
    "object_states", "render_audio", "render_frames", "video_codec", "write_mp4",
]
