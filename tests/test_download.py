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

AUTOUSE = (hermetic_env,)  # imported for pytest to find (no real credentials, endpoints or proxies leak in); named so pyflakes sees it used



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


def test_retry_after_zero_waits_the_own_backoff(standin: SpotifyStandIn, tmp_path: Path) -> None:
    # a preview host answering 429 with "Retry-After: 0" was asked again at once, every retry, by every worker
    ids = write_tracks(standin, tmp_path / "t.csv")
    standin.fail(f"/preview/{ids[0]}.mp3", 429, headers={"Retry-After": "0"}, times=2)
    sleeps = Sleeps()
    report = download(tmp_path / "t.csv", tmp_path / "p", concurrency=1, policy=RetryPolicy(retries=2, backoff=0.25, sleep=sleeps),
                      progress=False)
    assert report.downloaded == 12 and sleeps == [0.25, 0.5]


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


def test_rows_without_an_id_or_repeating_one_are_counted_and_a_scheme_is_case_insensitive(standin: SpotifyStandIn,
                                                                                          tmp_path: Path) -> None:
    """A 'nan' id (a pandas table's NaN written out) was fetched as nan.mp3, rows with a blank or repeated id vanished
    from the summary without a word, and an HTTP:// URL was 'not an http(s) URL'."""
    url = f"{standin.base}/preview/pop00002x0.mp3"
    ids = write_tracks(standin, tmp_path / "t.csv", extra=[("", url), ("nan", url), ("NaN", url), ("pop00000x0", url),
                                                            ("upper", "HTTP" + url[4:])])
    out = tmp_path / "previews"
    report = download(tmp_path / "t.csv", out, progress=False)
    assert (report.no_id, report.repeated, report.total, report.downloaded, report.failures) == (3, 1, 13, 13, [])
    assert finals(out) == sorted(f"{t}.mp3" for t in [*ids, "upper"])
    assert "; 3 rows have no track id; 1 row repeats a track id listed before" in report.summary()


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
    assert res.exit_code == 2 and res.stderr == f"songfeat: error: {tmp_path / 'nope.csv'}: no such track table\n"


def test_a_slow_drip_is_bounded_by_the_timeout(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """A server sending a byte at a time, each within the read timeout, held an attempt for as long as it liked."""
    import time

    ids = write_tracks(standin, tmp_path / "t.csv")
    standin.preview_faults[ids[0]] = "drip"
    standin.drip_for = 20.0
    out = tmp_path / "previews"
    start = time.monotonic()
    report = download(tmp_path / "t.csv", out, timeout=0.1, policy=RetryPolicy(retries=0, sleep=Sleeps()), progress=False)
    # ~1 s (10 x the 0.1-s timeout, plus 11 other downloads), not the 20 s the drip would last; the margin is for a
    # loaded CI machine (with a 6-s drip and a 4-s bound it failed under two parallel test runs)
    assert time.monotonic() - start < 10
    assert [(f.track_id, f.reason) for f in report.failures] == [(ids[0], "too slow: the transfer did not finish in time")]
    assert report.downloaded == 11 and leftovers(out) == [] and f"{ids[0]}.mp3" not in finals(out)


def test_a_full_disk_stops_with_one_error_line(standin: SpotifyStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import errno

    import songfeat.data.download as download_module

    write_tracks(standin, tmp_path / "t.csv")
    out = tmp_path / "previews"

    def full_open(path, mode="r", *args, **kwargs):
        f = builtins.open(path, mode, *args, **kwargs)
        if "w" in mode and str(path).endswith(".part"):
            def write(_data: bytes) -> int:
                raise OSError(errno.ENOSPC, "No space left on device")
            f.write = write
        return f

    monkeypatch.setattr(download_module, "open", full_open, raising=False)
    res = CliRunner().invoke(app, ["download", "--tracks", str(tmp_path / "t.csv"), "--out", str(out), "-j", "1"])
    monkeypatch.undo()
    assert res.exit_code == 1
    assert re.fullmatch(rf"songfeat: error: {re.escape(str(out))}/pop\d+x0\.mp3\.part: cannot write \(No space left on device\)\n",
                        res.stderr)
    assert finals(out) == [] and leftovers(out) == []
    assert download(tmp_path / "t.csv", out, progress=False).downloaded == 12  # space again: the rerun completes


def test_output_folder_under_a_file_and_a_table_with_a_bom(standin: SpotifyStandIn, tmp_path: Path) -> None:
    ids = write_tracks(standin, tmp_path / "t.csv")
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    with pytest.raises(SongfeatError, match=r"notes.txt/previews: cannot create the folder \(Not a directory\)"):
        download(tmp_path / "t.csv", tmp_path / "notes.txt" / "previews", progress=False)
    bom = tmp_path / "bom.csv"  # a spreadsheet's "CSV UTF-8" starts with a byte-order mark
    bom.write_bytes(b"\xef\xbb\xbf" + (tmp_path / "t.csv").read_bytes())
    report = download(bom, tmp_path / "previews", progress=False)
    assert report.downloaded == 12 and finals(tmp_path / "previews") == sorted(f"{t}.mp3" for t in ids)


def ctrl_c_once_two_are_asked_for(s: SpotifyStandIn, tmp_path: Path, waiting_on: str, proxy: dict[str, str] | None = None,
                                  host: str | None = None, asked=None) -> None:
    """Run `songfeat download -j 2` on every stand-in track, Ctrl-C it once two previews were asked for (`asked()`, by
    default the stand-in's count), and check that it ended within 5 s (not after `waiting_on`) in its one line, with
    status 130 and no partial file. `proxy`: variables such as HTTP_PROXY for the run; `host`: what the previews' URLs
    name instead of the stand-in (a name that only a proxy can reach)."""
    import signal
    import time

    asked = asked or (lambda: len(s.requests("/preview/")))
    tracks = tmp_path / "t.csv"
    write_tracks(s, tracks)
    if host:
        tracks.write_text(tracks.read_text().replace(s.base, host))
    out = tmp_path / "previews"
    cmd = [sys.executable, "-m", "songfeat.cli", "download", "--tracks", str(tracks), "--out", str(out), "-j", "2"]
    proc = subprocess.Popen(cmd, env=hermetic_environ(**(proxy or {})), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 20
        while asked() < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "the download never started"
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 5 s after Ctrl-C: it waits out {waiting_on}")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines() == [f"songfeat: error: interrupted; files already in {out} are complete; rerun the same command to continue"]
    assert asked() == 2 and leftovers(out) == []


def test_ctrl_c_does_not_wait_out_retries(tmp_path: Path) -> None:
    """Ctrl-C while workers wait out a 30-s Retry-After: the run ends now, not after every retry."""
    with SpotifyStandIn({"pop": 4}) as s:
        for t in s.tracks:
            s.fail(f"/preview/{t}.mp3", 429, headers={"Retry-After": "30"}, times=5)
        ctrl_c_once_two_are_asked_for(s, tmp_path, "the Retry-After of every download in flight")


def test_ctrl_c_does_not_wait_on_a_stalled_server(tmp_path: Path) -> None:
    """Ctrl-C while workers wait for a server that never answers: the pool waited for them, each until its 30-s
    --timeout, and pressing Ctrl-C again did not help; their sockets are cut now."""
    with SpotifyStandIn({"pop": 4}) as s:
        s.preview_faults = dict.fromkeys(s.tracks, "stall")
        ctrl_c_once_two_are_asked_for(s, tmp_path, "the --timeout of every download in flight")


def test_ctrl_c_does_not_wait_on_a_stalled_server_through_a_proxy(tmp_path: Path) -> None:
    """The same through HTTP_PROXY (requests honours it; here the stand-in is the proxy too, as it answers a proxy's
    absolute-URL requests as its own): a proxy's connections came from another pool manager, which did not register
    them to be cut, so Ctrl-C waited out the 30-s --timeout."""
    with SpotifyStandIn({"pop": 4}) as s:
        s.preview_faults = dict.fromkeys(s.tracks, "stall")
        ctrl_c_once_two_are_asked_for(s, tmp_path, "the --timeout of every download in flight", {"HTTP_PROXY": s.base},
                                      "http://previews.invalid")


def test_ctrl_c_does_not_wait_on_an_https_proxy_that_never_answers_connect(tmp_path: Path) -> None:
    """https:// previews through HTTPS_PROXY go through a CONNECT tunnel: a proxy that takes the connection and never
    answers CONNECT holds the worker inside the connection's set-up, before the TLS socket exists."""
    import socket
    import threading

    held: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as listener, SpotifyStandIn({"pop": 4}) as s:
        def accept() -> None:  # take each connection, read nothing, answer nothing
            while True:
                try:
                    held.append(listener.accept()[0])
                except TimeoutError:
                    continue
                except OSError:  # the listener closed at the end of the test
                    return

        listener.settimeout(0.1)

        threading.Thread(target=accept, daemon=True).start()
        proxy = f"http://127.0.0.1:{listener.getsockname()[1]}"
        try:
            ctrl_c_once_two_are_asked_for(s, tmp_path, "the --timeout of every CONNECT in flight", {"HTTPS_PROXY": proxy},
                                          "https://previews.invalid", asked=lambda: len(held))
        finally:
            for c in held:
                c.close()


def test_a_stray_os_error_is_one_error_line(standin: SpotifyStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The download command caught only SongfeatError: an OSError from the folder (here: clearing stale .part files)
    # was a traceback.
    import errno

    import songfeat.data.download as download_module

    write_tracks(standin, tmp_path / "t.csv")
    out = tmp_path / "previews"

    def denied(folder):
        raise OSError(errno.EACCES, "Permission denied", str(Path(folder) / "x.mp3.part"))

    monkeypatch.setattr(download_module, "remove_stale_parts", denied)
    res = CliRunner().invoke(app, ["download", "--tracks", str(tmp_path / "t.csv"), "--out", str(out), "-j", "1"])
    assert res.exit_code == 1, res.output
    assert res.stderr == f"songfeat: error: {out / 'x.mp3.part'}: Permission denied\n"


def test_a_body_cut_short_without_a_length_is_not_kept(standin: SpotifyStandIn, tmp_path: Path) -> None:
    # With no Content-Length to compare, half an mp3 passed the audio check (it decodes as far as it goes) and was kept
    # as a finished preview. Its VBR header promises more bytes than arrived: that is a truncated transfer, retried.
    ids = write_tracks(standin, tmp_path / "t.csv")
    standin.preview_faults.update({ids[0]: "cut_unsized", ids[1]: "cut_unsized_once"})
    out = tmp_path / "previews"
    report = download(tmp_path / "t.csv", out, policy=RetryPolicy(retries=1, backoff=0.0, sleep=Sleeps()), progress=False)
    assert report.downloaded == 11 and [f.track_id for f in report.failures] == [ids[0]]
    assert report.failures[0].reason.startswith("truncated: cut off") and report.failures[0].attempts == 2
    assert (out / f"{ids[1]}.mp3").read_bytes() == standin.mp3  # the second attempt brought the whole file
    assert not (out / f"{ids[0]}.mp3").exists() and leftovers(out) == []
    (out / f"{ids[2]}.mp3").write_bytes(standin.mp3[: len(standin.mp3) // 2])  # a cut-off file from an earlier run
    with pytest.raises(AudioError, match="cut off"):
        check_audio(out / f"{ids[2]}.mp3")


def test_nan_preview_urls_count_as_missing_and_failures_keep_the_tables_order(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """A table saved by pandas writes 'nan' (or 'None', 'NULL') for a missing preview URL: each was reported as a failed
    download ('preview_url is not an http(s) URL'). And failures came back in the order the downloads ended, so the CLI's
    first five could be a different five on every run."""
    ids = write_tracks(standin, tmp_path / "t.csv", extra=[("nanurl0", "nan"), ("nanurl1", "NaN"), ("nanurl2", "None"),
                                                            ("nanurl3", "NULL"), ("nanurl4", "<NA>")])
    standin.preview_faults.update({t: "404" for t in ids[3::2]})
    standin.preview_faults[ids[1]] = "drip"  # the table's first failure ends last (cut off after a second of drip)
    standin.drip_for = 1.0
    report = download(tmp_path / "t.csv", tmp_path / "out", progress=False, concurrency=4, retries=0)
    assert report.no_preview == 5 and report.total == 12
    assert [f.track_id for f in report.failures] == ids[1::2] and report.downloaded == 6
    assert list(read_report(tmp_path / "out" / REPORT_NAME)) == sorted(ids[1::2])
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(SongfeatError, match=r"folder\.csv: is a folder; --tracks takes a track table"):
        download(tmp_path / "folder.csv", tmp_path / "out")


def test_an_id_cell_is_missing_by_the_rule_label_tables_read_it_by(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """download counted ids 'NA', 'None' and 'null' as missing (a list of its own), where a label table keeps them as a
    user's ids: their labels then had no audio. One rule now (`cells.missing_id`): only a blank cell or a NaN written out
    ('nan', '<NA>') names no track, in both; a preview URL cell of any of pandas' missing words ('None', 'N/A') is none."""
    from songfeat.data.labels import read_labels

    url = f"{standin.base}/preview/pop00002x0.mp3"
    cells = ["NA", "None", "null", "nan", "<NA>", " ", "intro"]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["track_id", "preview_url", "energy"])
        w.writerows([tid, url, "0.5"] for tid in cells)
        w.writerows([tid, missing, "0.5"] for tid, missing in (("nourl0", "N/A"), ("nourl1", "none"), ("nourl2", "#N/A")))
    report = download(tmp_path / "t.csv", tmp_path / "out", progress=False)
    assert (report.downloaded, report.no_id, report.no_preview, report.failures) == (4, 3, 3, [])
    assert finals(tmp_path / "out") == ["NA.mp3", "None.mp3", "intro.mp3", "null.mp3"]
    labels = read_labels(tmp_path / "t.csv")
    assert set(labels.frame["track_id"]) == {"NA", "None", "null", "intro", "nourl0", "nourl1", "nourl2"}
    assert labels.dropped_lines()[:2] == [f"{tmp_path / 't.csv'}: line 5 (nan): bad track_id: the id cell holds 'nan', "
                                          "a missing value written out",
                                          f"{tmp_path / 't.csv'}: line 6 (<NA>): bad track_id: the id cell holds '<NA>', "
                                          "a missing value written out"]


def test_a_spotify_id_in_any_form_labels_take_names_the_file_they_pair_with(standin: SpotifyStandIn,
                                                                             tmp_path: Path) -> None:
    """download turned spotify:track: URIs into ids but not open.spotify.com URLs (https://...track/<id>?si=...), which
    read_labels takes: such a row failed as 'unsafe track_id' and its labels had no audio. One parser now
    (`cells.unwrap_track_id`): the same table gives the same ids in both, and each preview is saved as <22-char id>.mp3."""
    from songfeat.data.download import read_tracks
    from songfeat.data.labels import index_audio, read_labels

    ids = [f"0nbXyq5TXYPCO7pr3N8S4{n}" for n in range(6)]
    forms = [ids[0], f"spotify:track:{ids[1]}", f"https://open.spotify.com/track/{ids[2]}?si=1a2b3c4d5e",
             f"https://open.spotify.com/intl-de/track/{ids[3]}", f"http://open.spotify.com/track/{ids[4]}/",
             f" https://open.spotify.com/track/{ids[5]}#top ", f"https://open.spotify.com/track/{ids[0]}?si=again"]
    previews = [standin.track_object(t)["preview_url"] for t in standin.tracks]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["track_id", "preview_url", "energy"])
        w.writerows([cell, url, "0.5"] for cell, url in zip(forms, previews))
    labels = read_labels(tmp_path / "t.csv").frame["track_id"].tolist()
    assert labels == ids and [t for t, _ in read_tracks(tmp_path / "t.csv")[0]] == ids
    report = download(tmp_path / "t.csv", tmp_path / "out", progress=False)
    assert (report.downloaded, report.repeated, report.failures) == (6, 1, [])
    assert finals(tmp_path / "out") == [f"{t}.mp3" for t in ids]
    found, unlabelled, _ = index_audio(tmp_path / "out", set(labels))
    assert sorted(found) == ids and unlabelled == []


@pytest.mark.parametrize("case", ["missing", "folder", "no-id-column", "no-rows", "out-a-file", "out-under-a-file",
                                  "locked"])
def test_a_refusal_before_any_download_exits_2(standin: SpotifyStandIn, tmp_path: Path, case: str) -> None:
    """A missing track table, one without an id column or an --out it cannot use exited 1, the status of a run whose
    downloads failed: each is refused before any download, in one line (README, "Exit status": 2)."""
    import fcntl

    write_tracks(standin, tmp_path / "t.csv")
    (tmp_path / "noid.csv").write_text("name,preview_url\nx,http://127.0.0.1:9/x.mp3\n")
    (tmp_path / "header.csv").write_text("track_id,preview_url\n\n")  # said '0 of 0 previews' and exited 0
    (tmp_path / "locked").mkdir()
    held = open(tmp_path / "locked" / LOCK_NAME, "a")
    fcntl.flock(held.fileno(), fcntl.LOCK_EX)
    tracks, out, message = {
        "missing": ("nope.csv", "out", "nope.csv: no such track table"),
        "folder": ("locked", "out", "locked: is a folder; --tracks takes a track table (CSV)"),
        "no-id-column": ("noid.csv", "out", "noid.csv: needs columns track_id (or id) and preview_url; has name, preview_url"),
        "no-rows": ("header.csv", "out", "header.csv: no track rows (the file holds a header and nothing else); nothing "
                                         "to download"),
        "out-a-file": ("t.csv", "noid.csv", "noid.csv: exists and is not a folder"),
        "out-under-a-file": ("t.csv", "noid.csv/sub", "noid.csv/sub: cannot create the folder (Not a directory)"),
        "locked": ("t.csv", "locked", "locked: another `songfeat download` is writing into this folder"),
    }[case]
    res = CliRunner().invoke(app, ["download", "--tracks", str(tmp_path / tracks), "--out", str(tmp_path / out)])
    held.close()
    assert (res.exit_code, res.stderr, res.stdout) == (2, f"songfeat: error: {tmp_path}/{message}\n", "")
    assert standin.requests() == [] and (out != "out" or not (tmp_path / "out").exists())


def test_download_runs_on_the_collect_extra_alone(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """`songfeat download` imported the label reader (pandas) to shorten ids in its messages: with the 'collect' extra
    it exists for, it said "download needs the 'train' extra" and exited 2."""
    ids = write_tracks(standin, tmp_path / "t.csv")
    code = ("import importlib.abc, sys\n"
            "class Missing(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            "        if name.split('.')[0] in ('pandas', 'torch', 'scipy', 'sklearn', 'librosa', 'pyarrow', 'matplotlib'):\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, Missing())\n"
            "from songfeat.cli import main\n"
            "main()\n")
    standin.preview_faults[ids[0]] = "404"
    res = subprocess.run([sys.executable, "-c", code, "download", "--tracks", str(tmp_path / "t.csv"), "--out",
                          str(tmp_path / "out")], env=hermetic_environ(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stderr.startswith(f"songfeat: error: {ids[0]}: "), res.stderr
    assert "11 downloaded" in res.stdout and len(finals(tmp_path / "out")) == 11
