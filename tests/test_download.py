"""`songfeat download` against the loopback stand-in: faults, report, skip-if-valid, SIGKILL resume, CLI."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from songfeat.audio import audio_info
from songfeat.cli import app
from songfeat.data.download import LOCK_NAME, REPORT_COLUMNS, REPORT_NAME, check_audio, download
from songfeat.data.spotify_api import RetryPolicy
from songfeat.errors import AudioError, SongfeatError
from spotify_standin import SpotifyStandIn, hermetic_env, hermetic_environ, kill_when  # noqa: F401 (autouse fixture)



@pytest.fixture
def standin():
    with SpotifyStandIn({"pop": 12}) as s:
        yield s


class Sleeps(list):
    """A RetryPolicy.sleep that records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def write_tracks(s: SpotifyStandIn, path: Path, extra: list[tuple[str, str]] = ()) -> list[str]:
    """A track table (the collect schema's relevant columns) listing every stand-in track."""
    ids = list(s.tracks)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["track_id", "name", "preview_url", "genre"])
        for tid in ids:
            w.writerow([tid, f"song {tid}", s.track_object(tid)["preview_url"] or "", "pop"])
        for tid, url in extra:
            w.writerow([tid, "extra", url, "pop"])
    return ids


def finals(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".mp3")


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".part", ".tmp")))


def read_report(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["track_id"]: r for r in rows}


def test_downloads_checks_and_reports_failures(standin: SpotifyStandIn, tmp_path: Path) -> None:
    ids = write_tracks(standin, tmp_path / "t.csv", extra=[("pop00000x0", "http://127.0.0.1:9/duplicate-ignored")])
    standin.preview_faults.update({ids[0]: "404", ids[1]: "truncated", ids[2]: "not_audio", ids[3]: "flaky",
                                   ids[4]: "truncated_once"})
    standin.fail(f"/preview/{ids[5]}.mp3", 429, headers={"Retry-After": "4"})
    sleeps = Sleeps()
    out = tmp_path / "previews"
    report = download(tmp_path / "t.csv", out, concurrency=3, policy=RetryPolicy(retries=2, backoff=0.25, sleep=sleeps),
                      progress=False)
    assert (report.total, report.downloaded, report.already, len(report.failures)) == (12, 9, 0, 3)
    assert finals(out) == sorted(f"{t}.mp3" for t in ids[3:]) and leftovers(out) == []
    for name in finals(out):
        assert (out / name).read_bytes() == standin.mp3
    rep = read_report(out / REPORT_NAME)
    assert list(rep) == sorted(ids[:3])
    assert rep[ids[0]]["reason"].startswith("HTTP 404") and rep[ids[0]]["attempts"] == "1"  # not retried
    assert re.fullmatch(rf"truncated: got \d+ of {len(standin.mp3)} bytes before the connection closed", rep[ids[1]]["reason"])
    assert rep[ids[1]]["attempts"] == "3"  # retried twice
    assert rep[ids[2]]["reason"].startswith("not audio") and rep[ids[2]]["attempts"] == "1"
    assert rep[ids[0]]["url"] == f"{standin.base}/preview/{ids[0]}.mp3"
    hits = lambda tid: [x.status for x in standin.requests(f"/preview/{tid}.mp3")]  # noqa: E731
    assert hits(ids[1]) == [200, 200, 200]
    assert hits(ids[3]) == [500, 200] and hits(ids[4]) == [200, 200] and hits(ids[5]) == [429, 200]
    assert sorted(sleeps) == [0.25, 0.25, 0.25, 0.5, 4.0]  # 4.0: the Retry-After of the 429
    assert report.summary().startswith(f"{out}: 9 downloaded, 0 already there, 3 failed of 12 previews")


def test_rerun_skips_valid_files_and_replaces_broken_ones(standin: SpotifyStandIn, tmp_path: Path) -> None:
    ids = write_tracks(standin, tmp_path / "t.csv")
    out = tmp_path / "previews"
    assert download(tmp_path / "t.csv", out, progress=False).downloaded == 12
    (out / f"{ids[0]}.mp3").write_bytes(b"garbage, not audio")
    (out / f"{ids[1]}.mp3.part").write_bytes(b"half a file from a killed run")
    before = len(standin.requests("/preview/"))
    report = download(tmp_path / "t.csv", out, progress=False)
    assert (report.downloaded, report.already, report.failures) == (1, 11, [])
    assert [x.path for x in standin.requests("/preview/")[before:]] == [f"/preview/{ids[0]}.mp3"]
    check_audio(out / f"{ids[0]}.mp3")
    assert leftovers(out) == [] and len(finals(out)) == 12
    assert read_report(out / REPORT_NAME) == {}  # header only


def test_rows_without_preview_and_unsafe_ids(standin: SpotifyStandIn, tmp_path: Path) -> None:
    standin.no_preview = {"pop00000x0", "pop00001x0"}
    write_tracks(standin, tmp_path / "t.csv", extra=[("../../evil", f"{standin.base}/preview/pop00002x0.mp3"),
                                                      ("spotify:track:pop00003x0", "http://127.0.0.1:9/duplicate")])
    out = tmp_path / "previews"
    report = download(tmp_path / "t.csv", out, progress=False)
    assert report.no_preview == 2 and report.downloaded == 10 and report.total == 11
    assert [(f.track_id, f.reason) for f in report.failures] == [("../../evil", "unsafe track_id for a file name")]
    assert not (tmp_path / "evil.mp3").exists()


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SongfeatError, match="no such track table"):
        download(tmp_path / "missing.csv", tmp_path / "out")
    (tmp_path / "t.csv").write_text("id,name\nabc,x\n")
    with pytest.raises(SongfeatError, match=r"t.csv: needs columns track_id \(or id\) and preview_url"):
        download(tmp_path / "t.csv", tmp_path / "out")


def test_a_second_run_into_the_same_folder_is_refused(standin: SpotifyStandIn, tmp_path: Path) -> None:
    import fcntl

    write_tracks(standin, tmp_path / "t.csv")
    out = tmp_path / "previews"
    out.mkdir()
    with open(out / LOCK_NAME, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(SongfeatError, match="another `songfeat download` is writing into this folder"):
            download(tmp_path / "t.csv", out, progress=False)
    assert finals(out) == []


def test_check_audio_rejects_non_audio(tmp_path: Path) -> None:
    p = tmp_path / "x.mp3.part"
    p.write_bytes(b"<html>" * 100)
    with pytest.raises(AudioError):
        check_audio(p)


def test_resumable_after_sigkill(tmp_path: Path) -> None:
    """Kill -9 a CLI download part-way through slow transfers, rerun: every file once, valid, no temp files."""
    with SpotifyStandIn({"pop": 10}) as s:
        ids = write_tracks(s, tmp_path / "t.csv")
        s.preview_faults.update({t: "slow" for t in ids})
        s.slow_seconds = 0.6
        out = tmp_path / "previews"
        env = hermetic_environ()
        cmd = [sys.executable, "-m", "songfeat.cli", "download", "--tracks", str(tmp_path / "t.csv"), "--out", str(out),
               "--concurrency", "2", "--backoff", "0"]

        def part_way() -> bool:  # some files done and others mid-transfer
            names = os.listdir(out) if out.exists() else []
            return sum(n.endswith(".mp3") for n in names) >= 2 and any(n.endswith(".part") for n in names)

        kill_when(cmd, env, part_way)
        done_before = finals(out)
        assert 2 <= len(done_before) < 10
        for name in done_before:  # whatever has a final name is complete, byte for byte
            assert (out / name).read_bytes() == s.mp3
        requested_before = {x.path for x in s.requests("/preview/")}

        s.preview_faults.clear()
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert finals(out) == sorted(f"{t}.mp3" for t in ids)
        assert leftovers(out) == []
        for t in ids:
            assert (out / f"{t}.mp3").read_bytes() == s.mp3
            assert audio_info(out / f"{t}.mp3").seconds == pytest.approx(1.0, abs=0.1)
        assert "removed" in res.stderr and "partial file" in res.stderr
        rerun = [x.path for x in s.requests("/preview/")][len(requested_before) :]
        assert not {f"/preview/{n}" for n in done_before} & set(rerun)  # finished files were not fetched again
        assert res.stdout.strip().endswith("s)") and f"{len(done_before)} already there" in res.stdout


def test_cli_exit_codes_and_summary(standin: SpotifyStandIn, tmp_path: Path) -> None:
    ids = write_tracks(standin, tmp_path / "t.csv")
    standin.preview_faults[ids[0]] = "404"
    out = tmp_path / "previews"
    args = ["download", "--tracks", str(tmp_path / "t.csv"), "--out", str(out), "--backoff", "0", "-j", "2"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1
    assert res.stderr.splitlines() == [f"songfeat: error: {ids[0]}: {standin.base}/preview/{ids[0]}.mp3: HTTP 404 Not Found"]
    assert res.stdout.startswith(f"{out}: 11 downloaded, 0 already there, 1 failed of 12 previews; failures listed in {out / REPORT_NAME}")
    with open(out / REPORT_NAME, newline="") as f:
        assert tuple(next(csv.reader(f))) == REPORT_COLUMNS
    standin.preview_faults.clear()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and res.stderr == ""
    assert res.stdout.startswith(f"{out}: 1 downloaded, 11 already there, 0 failed of 12 previews (")
    res = CliRunner().invoke(app, ["download", "--tracks", str(tmp_path / "nope.csv"), "--out", str(out)])
    assert res.exit_code == 1 and res.stderr == f"songfeat: error: {tmp_path / 'nope.csv'}: no such track table\n"
