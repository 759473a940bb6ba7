"""songfeat: Spotify-style audio features (danceability, energy, tempo, key, ...) from audio, offline.

    >>> import songfeat
    >>> songfeat.analyze("song.mp3")          # -> dict in Spotify's audio-features shape

Heavy modules (torch) load on first use, so `import songfeat` stays cheap.
"""
from __future__ import annotations

from .interrupts import hold_ctrl_c_while_the_cli_starts

hold_ctrl_c_while_the_cli_starts()  # first: a Ctrl-C as the `songfeat` command starts is its line, not a traceback

from typing import NoReturn  # noqa: E402

__version__ = "0.1.0"

__all__ = ["analyze", "analyze_many", "audio_analysis", "load_audio", "load_bundle", "open_store", "SongfeatError", "__version__"]

# Imported eagerly so the function, not the submodule of the same name, is `songfeat.analyze`
# (as whisper does with `transcribe`); the module itself loads torch only when first used.
from .analyze import analyze, analyze_many  # noqa: E402


def __getattr__(name: str) -> object:
    """The public names past `analyze` and `analyze_many`, imported on first use (PEP 562)."""
    if name == "load_audio":
        from .audio import load_audio

        return load_audio
    if name == "audio_analysis":
        from .analysis import audio_analysis

        return audio_analysis
    if name == "load_bundle":
        from .bundle import load_bundle

        return load_bundle
    if name == "open_store":
        try:
            from .data.store import open_store
        except ModuleNotFoundError as e:
            from .errors import missing_package

            if missing_package(e) not in ("pandas", "torch"):  # pandas alone (the 'ray' extra) is not enough
                raise
            return _open_store_needs_train  # so `from songfeat import *` and help(songfeat) work on the lean install
        return open_store
    if name == "SongfeatError":
        from .errors import SongfeatError

        return SongfeatError
    raise AttributeError(f"module 'songfeat' has no attribute {name!r}")


def __dir__() -> list[str]:
    """Every public name, the lazily imported ones too, for help(songfeat), dir() and tab completion."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})


def _open_store_needs_train(path: object) -> NoReturn:
    """open_store on an install without the 'train' extra (the store reads its labels with pandas, its front-end
    tensors with torch): says so."""
    from .errors import needs_extra

    raise ModuleNotFoundError(needs_extra("songfeat.open_store", "train"), name="pandas")
