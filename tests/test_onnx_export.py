"""`songfeat export-onnx` and `songfeat.onnx_export` on bad targets: one error line, nothing rewritten."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from songfeat.bundle import DEFAULT_DIR, ONNX
from songfeat.cli import app

pytest.importorskip("torch")
pytest.importorskip("onnx")


def test_bundle_whose_model_onnx_is_a_folder_is_refused_before_the_export(tmp_path: Path) -> None:
    # the export ran, then the final rename failed: an IsADirectoryError traceback naming a temporary file
    from songfeat.errors import SongfeatError
    from songfeat.onnx_export import export_bundle

    bundle = tmp_path / "b"
    shutil.copytree(DEFAULT_DIR, bundle)
    (bundle / ONNX).unlink()
    (bundle / ONNX).mkdir()
    with pytest.raises(SongfeatError, match="is a folder"):
        export_bundle(bundle)
    res = CliRunner().invoke(app, ["export-onnx", str(bundle)])
    lines = res.output.strip().splitlines()
    assert res.exit_code != 0 and len(lines) == 1 and f"{bundle / ONNX}: " in lines[0], res.output
    assert (bundle / ONNX).is_dir()


def test_musicnn_export_refuses_a_bundle_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `export-onnx mybundle --musicnn` ignored the bundle and rewrote the package's shipped musicnn .onnx files
    import songfeat.onnx_export as ox

    called = []
    monkeypatch.setattr(ox, "export_musicnn", lambda *a, **k: called.append(1) or {})
    res = CliRunner().invoke(app, ["export-onnx", str(tmp_path), "--musicnn"])
    lines = res.output.strip().splitlines()
    assert res.exit_code != 0 and len(lines) == 1 and "--musicnn" in lines[0] and not called, res.output
