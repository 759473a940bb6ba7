"""`songfeat serve`'s own options' defaults and least values, in one place: the command (cli.py) declares its options
with them and `serve.settings_from_env` (SONGFEAT_* variables, for `uvicorn songfeat.serve:app_from_env --factory`)
fills in and checks with them, so the two cannot drift apart. Plain values, no imports: the CLI reads them as it
loads, without the `serve` extra."""
from __future__ import annotations

# option: (default, least value or None); --library, --db, --token, --cors-origin and --allowed-host have no default
DEFAULTS: dict[str, tuple[object, float | None]] = {
    "workers": (None, 1),  # None: every usable CPU
    "rescan": (False, None),
    "rescan-interval": (60.0, 0.0),
    "max-upload-mb": (50.0, 0.001),
    "time-limit": (300.0, 1.0),
    "quiet": (False, None),
}


def default(option: str) -> object:
    """The default of `songfeat serve`'s --`option`."""
    return DEFAULTS[option][0]


def least(option: str) -> float | None:
    """The least value --`option` takes (None: no bound)."""
    return DEFAULTS[option][1]
