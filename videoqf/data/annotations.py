"""Annotation readers: JSONL, CSV, MSR-VTT JSON and WebVid CSV -> a list of ``VideoRecord``.

Formats (relative video paths resolve against ``video_root``, by default the annotation file's folder):

- ``jsonl``: one object per line, ``{"video": path, "caption": str | [str], "start"?: s, "end"?: s}``;
  any other key is kept in ``record.meta`` (the synthetic world keeps its event spec there).
- ``csv``: header with ``video`` and ``caption`` columns, optional ``start`` / ``end``.
- ``msrvtt``: the JSON files as distributed (``train_val_videodatainfo.json``,
  ``test_videodatainfo.json``): ``{"videos": [{"video_id": "video0", "split": ...}],
  "sentences": [{"video_id": "video0", "caption": ...}]}``; files are ``<video_root>/<video_id>.mp4``.
  Their "start time"/"end time" locate the clip in the YouTube source, not in the file, so are ignored.
- ``webvid``: WebVid-10M's CSV (``videoid, contentUrl, duration, page_dir, name``); files are
  ``<video_root>/<page_dir>/<videoid>.mp4`` as its download script lays them out; caption = ``name``.

Rows naming the same (video, start, end) are merged into one record with all their captions, and
every record gets a ``video_id`` (0..N-1): captions of one video share it, so a contrastive loss can
tell them apart from true negatives.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["VideoRecord", "ANNOTATION_FORMATS", "read_annotations"]


@dataclass
class VideoRecord:
    """One video (or one window of it) and its captions."""

    video: str
    captions: list[str]
    start: float | None = None
    end: float | None = None
    video_id: int = -1
    meta: dict = field(default_factory=dict)


def _resolve(video: str, video_root: str) -> str:
    return video if os.path.isabs(video) else os.path.normpath(os.path.join(video_root, video))


def _optional_float(value) -> float | None:
    return None if value in (None, "") else float(value)


def _merge(rows: list[VideoRecord]) -> list[VideoRecord]:
    """One record per (video, start, end), captions in file order, video_id by first appearance."""
    merged: dict[tuple, VideoRecord] = {}
    for row in rows:
        key = (row.video, row.start, row.end)
        if key in merged:
            merged[key].captions.extend(row.captions)
        else:
            merged[key] = row
    records = list(merged.values())
    for video_id, record in enumerate(records):
        record.video_id = video_id
    return records


def read_jsonl(path: str, video_root: str) -> list[VideoRecord]:
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                captions = obj.pop("caption")
                rows.append(VideoRecord(
                    video=_resolve(obj.pop("video"), video_root),
                    captions=[captions] if isinstance(captions, str) else list(captions),
                    start=_optional_float(obj.pop("start", None)),
                    end=_optional_float(obj.pop("end", None)),
                    meta=obj,
                ))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{line_no}: bad annotation line ({type(exc).__name__}: {exc})") from exc
    return rows


def _read_csv_rows(path: str, required: set[str]) -> list[dict]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing CSV columns {sorted(missing)} (found {reader.fieldnames})")
        return list(reader)


def read_csv(path: str, video_root: str) -> list[VideoRecord]:
    return [
        VideoRecord(
            video=_resolve(row["video"], video_root),
            captions=[row["caption"]],
            start=_optional_float(row.get("start")),
            end=_optional_float(row.get("end")),
        )
        for row in _read_csv_rows(path, {"video", "caption"})
    ]


def read_webvid(path: str, video_root: str) -> list[VideoRecord]:
    rows = _read_csv_rows(path, {"videoid", "name"})
    return [
        VideoRecord(
            video=_resolve(os.path.join(row.get("page_dir") or "", f"{row['videoid']}.mp4"), video_root),
            captions=[row["name"]],
            meta={"url": row.get("contentUrl", "")},
        )
        for row in rows
    ]


def read_msrvtt(path: str, video_root: str, split: str | None = None) -> list[VideoRecord]:
    """``split``: keep videos whose "split" is this ("train", "validate", "test"); None keeps all."""
    with open(path) as f:
        data = json.load(f)
    if not {"videos", "sentences"} <= data.keys():
        raise ValueError(f"{path}: not an MSR-VTT videodatainfo file (keys {sorted(data)})")
    videos = [v["video_id"] for v in data["videos"] if split is None or v["split"] == split]
    if not videos:
        raise ValueError(f"{path}: no video with split {split!r}")
    captions: dict[str, list[str]] = {v: [] for v in videos}
    for sentence in data["sentences"]:
        if sentence["video_id"] in captions:
            captions[sentence["video_id"]].append(sentence["caption"])
    return [VideoRecord(video=_resolve(f"{v}.mp4", video_root), captions=captions[v], meta={"name": v}) for v in videos]


ANNOTATION_FORMATS: dict[str, Callable[..., list[VideoRecord]]] = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "msrvtt": read_msrvtt,
    "webvid": read_webvid,
}


def _guess_format(path: str) -> str:
    if path.endswith(".jsonl"):
        return "jsonl"
    if path.endswith(".json"):
        return "msrvtt"
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
        return "webvid" if {"videoid", "name"} <= set(header) else "csv"
    raise ValueError(f"cannot tell the annotation format of {path!r}; pass format= one of {sorted(ANNOTATION_FORMATS)}")


def read_annotations(path: str, *, format: str = "auto", video_root: str | None = None, **kwargs) -> list[VideoRecord]:
    """Read ``path`` (format "auto" guesses from the name/header); ``kwargs`` go to the reader (MSR-VTT ``split``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path!r} does not exist")
    fmt = _guess_format(path) if format == "auto" else format
    if fmt not in ANNOTATION_FORMATS:
        raise ValueError(f"unknown annotation format {fmt!r}; known: {sorted(ANNOTATION_FORMATS)}")
    root = video_root if video_root is not None else os.path.dirname(os.path.abspath(path))
    records = _merge(ANNOTATION_FORMATS[fmt](path, root, **kwargs))
    empty = [r.video for r in records if not r.captions]
    if empty:
        raise ValueError(f"{path}: {len(empty)} videos have no caption, e.g. {empty[0]!r}")
    return records
