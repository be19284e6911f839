"""The environment a fresh shell gives a subprocess: this one less the one-process rendezvous (RANK, MASTER_PORT,
...) that in-process runs of this test session wrote into os.environ, whose port their process group still holds."""
import os

RENDEZVOUS = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT"}


def fresh_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in RENDEZVOUS}
