"""Training checkpoints: `train.fit` saves its whole state after every epoch, so an interrupted `songfeat train` resumes.

A checkpoint is one torch file per fitted model (the combiner fits three) in a folder beside the bundle being written
(`<out>.training/`), replaced atomically each epoch, and removed once the bundle is written. It carries a fingerprint
of everything that decides the run (settings, initial weights, the training and validation tensors), so a checkpoint
from another command or other data is never resumed: it is set aside with a note and training starts over. Resuming
restores the weights, Adam's moments, the batch-order and dropout generators and the early-stop counters, so a resumed
run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch

from .atomic import temp_beside
from .errors import SongfeatWarning


def folder_for(out: str | Path) -> Path:
    """Where a bundle's training checkpoints live while it trains: `<out>.training/` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".training")


def kept(out: str | Path) -> Path | None:
    """`<out>.training/` when it holds a checkpoint (a finished epoch the same command continues from), else None."""
    folder = folder_for(out)
    return folder if any(folder.glob("[!.]*.pt")) else None


def fingerprint(model: torch.nn.Module, tensors: list[torch.Tensor | None], settings: dict[str, Any]) -> str:
    """SHA-256 over the run's settings, the model's initial weights and the data tensors (shapes and bytes)."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    for t in tensors:
        if t is None:
            h.update(b"none")
            continue
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def note(message: str) -> None:
    """A one-line note about the checkpoints (resumed, set aside): a SongfeatWarning, which `songfeat train` prints."""
    warnings.warn(SongfeatWarning(message), stacklevel=3)


def load(path: Path, expected: str, device: torch.device) -> dict | None:
    """The checkpoint at `path` if it belongs to this run (same fingerprint), else None (with a note if one was there)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
        if not isinstance(state, dict) or "fingerprint" not in state:
            raise ValueError("not a songfeat training checkpoint")
    except Exception as e:  # a truncated or foreign file: its run cannot be continued, this one can start
        note(f"{path}: unreadable training checkpoint ({type(e).__name__}); training starts over")
        return None
    if state["fingerprint"] != expected:
        note(f"{path}: checkpoint of another run (other data or settings); training starts over")
        return None
    return state


def save(path: Path, state: dict) -> None:
    """Write `state` to `path` atomically (a crash mid-write leaves the previous epoch's checkpoint)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with temp_beside(path) as tmp:
        torch.save(state, tmp)
