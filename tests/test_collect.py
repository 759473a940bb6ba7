"""`songfeat collect` against the loopback Spotify stand-in: schema, dedupe, retries, 403, resume, CLI."""
from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from songfeat.cli import app
from songfeat.data.collect import COLUMNS, FEATURES_CLOSED, META_COLUMNS, collect, genre_queries
from songfeat.data.spotify_api import RetryPolicy, SpotifyAPIError, parse_retry_after, resolve_endpoints
from songfeat.errors import SongfeatError
from songfeat.features import LABEL_COLUMNS
from spotify_standin import CLIENT_ID, CLIENT_SECRET, SpotifyStandIn, hermetic_env, hermetic_environ, kill_when  # noqa: F401 (autouse fixture)

AUTOUSE = (hermetic_env,)  # imported for pytest to find (no real credentials, endpoints or proxies leak in); named so pyflakes sees it used



@pytest.fixture
def standin():
    with SpotifyStandIn({"pop": 70, "rock": 40, "jazz": 30}, shared=5) as s:
        yield s


class Sleeps(list):
    """A RetryPolicy.sleep that records the waits instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def run(s: SpotifyStandIn, out: Path, genres: str = "pop,rock,jazz", per_genre: int = 25, sleeps: Sleeps | None = None,
        **kw):
    policy = kw.pop("policy", None) or RetryPolicy(backoff=0.5, sleep=sleeps if sleeps is not None else Sleeps())
    return collect(genres, per_genre, out, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, api_url=s.api_url,
                   token_url=s.token_url, policy=policy, progress=False, **kw)


def read(out: Path) -> list[dict[str, str]]:
    with open(out, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_writes_normalised_schema_with_features(standin: SpotifyStandIn, tmp_path: Path) -> None:
    out = tmp_path / "tracks.csv"
    report = run(standin, out, per_genre=60)
    with open(out, newline="") as f:
        assert tuple(next(csv.reader(f))) == META_COLUMNS + LABEL_COLUMNS == COLUMNS
    rows = read(out)
    ids = [r["track_id"] for r in rows]
    assert len(ids) == len(set(ids)) == report.tracks
    # rock's first 5 results are pop tracks already kept: they count once, under pop
    assert Counter(r["genre"] for r in rows) == {"pop": 60, "rock": 40, "jazz": 30}
    assert report.short == {"rock": 40, "jazz": 30}
    assert report.with_features == len(rows) and not report.features_closed
    r = next(r for r in rows if r["track_id"] == "pop00007x0")
    f = standin.features("pop00007x0")
    assert r["artists"] == "Artist 7; Guest, Jr." and r["name"] == "Song 7, pop" and r["album"] == "Album 0"
    assert r["popularity"] == "7" and r["duration_ms"] == "180007"
    assert r["preview_url"] == f"{standin.base}/preview/pop00007x0.mp3"
    for c in LABEL_COLUMNS:
        assert float(r[c]) == pytest.approx(f[c])
    searches = standin.requests("/v1/search")
    assert all(int(x.query["limit"]) <= 50 and x.query["type"] == "track" for x in searches)
    feats = standin.requests("/v1/audio-features")
    assert [len(x.query["ids"].split(",")) for x in feats] == [100, 30]
    assert len(standin.requests("/api/token")) == 1


def test_429_retry_after_is_honoured(standin: SpotifyStandIn, tmp_path: Path) -> None:
    standin.fail("/v1/search", 429, headers={"Retry-After": "7"}, when={"offset": "0", "q": "genre:pop"})
    sleeps = Sleeps()
    report = run(standin, tmp_path / "t.csv", genres="pop", per_genre=60, sleeps=sleeps)
    assert report.tracks == 60
    assert sleeps == [7.0]  # the server's wait, not the backoff (0.5)
    log = [(x.query["offset"], x.status) for x in standin.requests("/v1/search")]
    assert log == [("0", 429), ("0", 200), ("50", 200)]


def test_retry_after_zero_waits_the_own_backoff(standin: SpotifyStandIn, tmp_path: Path) -> None:
    # "Retry-After: 0" on every 429 made the collector retry at once, in a tight loop against a throttling server
    standin.fail("/v1/search", 429, headers={"Retry-After": "0"}, times=3, when={"offset": "0", "q": "genre:pop"})
    sleeps = Sleeps()
    assert run(standin, tmp_path / "t.csv", genres="pop", per_genre=30, sleeps=sleeps).tracks == 30
    assert sleeps == [0.5, 1.0, 2.0]


def test_retry_after_longer_than_cap_stops_with_clear_error(standin: SpotifyStandIn, tmp_path: Path) -> None:
    standin.fail("/v1/search", 429, headers={"Retry-After": "86400"})
    sleeps = Sleeps()
    with pytest.raises(SpotifyAPIError, match=r"asks to wait 86400 s.*rerun later") as e:
        run(standin, tmp_path / "t.csv", policy=RetryPolicy(max_retry_after=60, sleep=sleeps))
    assert e.value.status == 429 and sleeps == []


def test_5xx_retried_with_backoff(standin: SpotifyStandIn, tmp_path: Path) -> None:
    standin.fail("/v1/search", 500, times=2)
    standin.fail("/v1/audio-features", 503)
    standin.fail("/api/token", 502)
    sleeps = Sleeps()
    report = run(standin, tmp_path / "t.csv", genres="pop", per_genre=30, sleeps=sleeps)
    assert report.tracks == report.with_features == 30
    # the token is fetched inside the first search call, so its 502 and the two 500s are one call's retries
    assert sleeps == [0.5, 1.0, 2.0, 0.5]
    assert [x.status for x in standin.requests("/v1/search")] == [500, 500, 200]
    assert [x.status for x in standin.requests("/v1/audio-features")] == [503, 200]


def test_403_on_audio_features_still_writes_metadata(standin: SpotifyStandIn, tmp_path: Path) -> None:
    standin.features_forbidden = True
    out = tmp_path / "t.csv"
    report = run(standin, out, per_genre=20)
    assert report.features_closed and report.message == FEATURES_CLOSED
    assert "2024-11-27" in FEATURES_CLOSED and "\n" not in FEATURES_CLOSED
    rows = read(out)
    assert len(rows) == 60 and all(r["name"] and r["track_id"] for r in rows)
    assert all(r[c] == "" for r in rows for c in LABEL_COLUMNS)
    assert [x.status for x in standin.requests("/v1/audio-features")] == [403]  # asked once, not retried


def test_tracks_without_features_are_not_asked_again(standin: SpotifyStandIn, tmp_path: Path) -> None:
    standin.no_features = {"pop00003x0"}
    out = tmp_path / "t.csv"
    assert run(standin, out, genres="pop", per_genre=10).with_features == 9
    assert run(standin, out, genres="pop", per_genre=10).with_features == 9
    assert len(standin.requests("/v1/audio-features")) == 1


def test_resume_after_interruption_without_duplicates(standin: SpotifyStandIn, tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    standin.fail("/v1/search", 500, when={"q": "genre:rock", "offset": "0"})

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(standin, out, per_genre=60, policy=RetryPolicy(sleep=interrupt))
    rows = read(out)
    assert Counter(r["genre"] for r in rows) == {"pop": 60}  # saved on the way out
    state = json.loads(out.with_name("t.csv.state.json").read_text())
    assert state["queries"]["genre:pop"] == 60
    before = len(standin.requests("/v1/search"))
    report = run(standin, out, per_genre=60)
    rows = read(out)
    ids = [r["track_id"] for r in rows]
    assert len(ids) == len(set(ids)) == 130 and report.added == 70
    assert Counter(r["genre"] for r in rows) == {"pop": 60, "rock": 40, "jazz": 30}
    again = [x.query["q"] for x in standin.requests("/v1/search")[before:]]
    assert "genre:pop" not in again  # pop was finished: not searched again


def test_resume_when_state_lags_the_csv(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """A hard kill between writing the CSV and the state: older offsets meet known ids, which are skipped."""
    out = tmp_path / "t.csv"
    run(standin, out, genres="pop,rock", per_genre=20)
    out.with_name("t.csv.state.json").unlink()
    report = run(standin, out, genres="pop,rock", per_genre=45)
    rows = read(out)
    ids = [r["track_id"] for r in rows]
    assert len(ids) == len(set(ids))
    assert Counter(r["genre"] for r in rows) == {"pop": 45, "rock": 40}
    assert report.added == 45 and report.with_features == 85


def test_a_second_run_into_the_same_table_is_refused(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """Two runs into one table (a genre added while the first ran) each saved its own rows over the other's, both
    exiting 0: the table ended with one run's genre. The second is refused while the first holds the table."""
    out = tmp_path / "t.csv"
    standin.fail("/v1/search", 500, when={"q": "genre:pop", "offset": "0"})
    refusals: list[str] = []

    def second_run(seconds: float) -> None:  # while the first waits out its retry
        with pytest.raises(SongfeatError) as e:
            run(standin, out, genres="rock")
        refusals.append(str(e.value))

    run(standin, out, genres="pop", policy=RetryPolicy(sleep=second_run))
    assert len(refusals) == 1 and "is being written by another songfeat run" in refusals[0], refusals
    run(standin, out, genres="rock")  # the first has let go
    assert Counter(r["genre"] for r in read(out)) == {"pop": 25, "rock": 25}
    assert not out.with_name("t.csv.lock").exists()


def test_year_slices_beyond_the_search_cap(tmp_path: Path) -> None:
    with SpotifyStandIn({"pop": 60}, years=(2019, 2020, 2021), search_cap=20) as s:
        report = run(s, tmp_path / "t.csv", genres="pop", per_genre=50, search_cap=20, first_year=2015)
        assert report.tracks == 50 and not report.short
        queries = [x.query for x in s.requests("/v1/search")]
        assert all(x.status == 200 for x in s.requests("/v1/search"))  # never past the cap
        assert all(int(q["offset"]) + int(q["limit"]) <= 20 for q in queries)
        assert {"genre:pop year:2021", "genre:pop year:2020"} <= {q["q"] for q in queries}
    assert genre_queries("hip hop", 2020, 2021) == ['genre:"hip hop"', 'genre:"hip hop" year:2021', 'genre:"hip hop" year:2020']


def test_small_genre_stops_after_the_plain_query(standin: SpotifyStandIn, tmp_path: Path) -> None:
    run(standin, tmp_path / "t.csv", genres="jazz", per_genre=100)
    assert [x.query["q"] for x in standin.requests("/v1/search")] == ["genre:jazz"]  # total 30: no year slices


def test_credentials_and_endpoints(standin: SpotifyStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SongfeatError, match="SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET"):
        collect("pop", 5, tmp_path / "t.csv", api_url=standin.api_url, token_url=standin.token_url)
    with pytest.raises(SpotifyAPIError, match=r"token request at .*/api/token.*invalid_client"):
        collect("pop", 5, tmp_path / "t.csv", client_id="wrong", client_secret="x", api_url=standin.api_url,
                token_url=standin.token_url, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing found, nothing written
    assert resolve_endpoints() == ("https://api.spotify.com/v1/", "https://accounts.spotify.com/api/token")
    monkeypatch.setenv("SONGFEAT_SPOTIFY_API_URL", "http://proxy:8080/v1")
    assert resolve_endpoints()[0] == "http://proxy:8080/v1/"
    assert resolve_endpoints("http://flag/v1/")[0] == "http://flag/v1/"
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait


def test_refuses_to_overwrite_an_unrelated_csv(standin: SpotifyStandIn, tmp_path: Path) -> None:
    out = tmp_path / "other.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(SongfeatError, match="not a `songfeat collect` table"):
        run(standin, out)
    assert out.read_text() == "a,b\n1,2\n"


def test_cli_end_to_end_with_env_endpoints(standin: SpotifyStandIn, tmp_path: Path) -> None:
    standin.features_forbidden = True
    env = {"SONGFEAT_SPOTIFY_API_URL": standin.api_url, "SONGFEAT_SPOTIFY_TOKEN_URL": standin.token_url,
           "SPOTIPY_CLIENT_ID": CLIENT_ID, "SPOTIPY_CLIENT_SECRET": CLIENT_SECRET}
    out = tmp_path / "tracks.csv"
    res = CliRunner().invoke(app, ["collect", "--genres", "pop, rock,Rokk", "--per-genre", "50", "--out", str(out)], env=env)
    assert res.exit_code == 0, res.output
    assert len(read(out)) == 90
    assert res.stderr.strip().splitlines() == [
        f"songfeat: warning: {FEATURES_CLOSED}",
        "songfeat: warning: genre 'rock': Spotify's search ran out at 40 of 50 tracks",
        "songfeat: warning: genre 'rokk': Spotify's search found no tracks (is it one of Spotify's genre names?)",
    ]
    assert res.stdout == f"{out}: 90 tracks (90 new; pop 50, rock 40, rokk 0); audio-features closed (403)\n"


def test_cli_errors_are_one_line(standin: SpotifyStandIn, tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["collect", "--genres", "pop", "--per-genre", "5", "--out", str(tmp_path / "t.csv"),
                                   "--api-url", standin.api_url, "--token-url", standin.token_url])
    assert res.exit_code == 2  # refused before any request
    assert res.stderr.strip().splitlines() == [
        "songfeat: error: no Spotify credentials: set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET (or pass --client-id / --client-secret)"]
    standin.fail("/v1/search", 500, times=10)
    res = CliRunner().invoke(app, ["collect", "--genres", "pop", "--per-genre", "5", "--out", str(tmp_path / "t.csv"),
                                   "--api-url", standin.api_url, "--token-url", standin.token_url, "--client-id", CLIENT_ID,
                                   "--client-secret", CLIENT_SECRET, "--retries", "1", "--backoff", "0"])
    assert res.exit_code == 1
    err = res.stderr.strip().splitlines()
    assert err[-1].startswith("songfeat: error: search 'genre:pop' offset 0 at http://127.0.0.1:")
    assert "gave up after 2 attempts: HTTP 500" in err[-1]
    assert len(err) == 2 and "retrying in 0.0 s" in err[0]


def test_cli_resumes_after_sigkill(tmp_path: Path) -> None:
    """kill -9 a `songfeat collect` subprocess mid-search, rerun it: every track once, every genre full."""
    import subprocess
    import sys

    with SpotifyStandIn({"pop": 400, "rock": 400}, shared=20) as s:
        s.search_delay = 0.1
        out = tmp_path / "tracks.csv"
        env = hermetic_environ(SONGFEAT_SPOTIFY_API_URL=s.api_url, SONGFEAT_SPOTIFY_TOKEN_URL=s.token_url,
                               SPOTIPY_CLIENT_ID=CLIENT_ID, SPOTIPY_CLIENT_SECRET=CLIENT_SECRET)
        cmd = [sys.executable, "-m", "songfeat.cli", "collect", "--genres", "pop,rock", "--per-genre", "350", "--out", str(out)]
        kill_when(cmd, env, lambda: len(s.requests("/v1/search")) >= 9)  # into rock's searches
        partial = read(out)
        assert 0 < len(partial) < 700 and not s.requests("/v1/audio-features")
        s.search_delay = 0.0
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        rows = read(out)
        ids = [r["track_id"] for r in rows]
        assert len(ids) == len(set(ids)) == 700
        assert Counter(r["genre"] for r in rows) == {"pop": 350, "rock": 350}
        assert all(r["danceability"] != "" for r in rows)
        assert {r["track_id"] for r in partial} <= set(ids)
        assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_garbled_answers_are_retried_and_errors_stay_one_line(standin: SpotifyStandIn, tmp_path: Path) -> None:
    standin.fail("/v1/search", 200)  # an empty 200: not JSON
    standin.fail("/v1/audio-features", 200)
    sleeps = Sleeps()
    report = run(standin, tmp_path / "t.csv", genres="jazz", per_genre=10, sleeps=sleeps)
    assert report.tracks == report.with_features == 10 and sleeps == [0.5, 0.5]
    page = "<html><body>" + "Bad gateway from the corporate proxy. " * 50 + "</body></html>"
    standin.faults.clear()
    standin.fail("/v1/search", 404, body=None)
    standin.faults[-1].body = page.encode()
    with pytest.raises(SpotifyAPIError) as e:
        run(standin, tmp_path / "u.csv", genres="pop", per_genre=10)
    assert e.value.status == 404 and "\n" not in str(e.value) and len(str(e.value)) < 320
    assert str(e.value).endswith("...")


def raw_fail(s: SpotifyStandIn, path: str, status: int, body: bytes, times: int = 1, **kw) -> None:
    """Queue a fault whose body is these exact bytes (not JSON-encoded)."""
    s.fail(path, status, times=times, **kw)
    s.faults[-1].body = body


def test_error_bodies_spotipy_cannot_read_are_retried_or_reported(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """A gateway's `{"error": "text"}` or a JSON list made spotipy raise AttributeError from its error handling."""
    raw_fail(standin, "/v1/search", 502, b'{"error": "upstream timed out"}')
    raw_fail(standin, "/v1/audio-features", 500, b'["oops"]')
    report = run(standin, tmp_path / "t.csv", genres="jazz", per_genre=10)
    assert report.tracks == report.with_features == 10
    raw_fail(standin, "/v1/search", 400, b'{"error": "bad query"}')
    with pytest.raises(SpotifyAPIError, match=r"search 'genre:pop' offset 0 at .*/v1/search: HTTP 400: bad query$"):
        run(standin, tmp_path / "u.csv", genres="pop", per_genre=10)
    raw_fail(standin, "/api/token", 400, b'["no"]')
    with pytest.raises(SpotifyAPIError, match=r"token request at .*/api/token: token request refused"):
        run(standin, tmp_path / "v.csv", genres="pop", per_genre=10)


def test_token_answer_without_token_or_expiry(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """A 200 from the token endpoint without access_token / expires_in raised KeyError inside spotipy."""
    raw_fail(standin, "/api/token", 200, b"{}")
    raw_fail(standin, "/api/token", 200, b'{"access_token": "tok-7", "expires_in": "3600"}')  # a string expiry is fine
    assert run(standin, tmp_path / "t.csv", genres="jazz", per_genre=5).tracks == 5
    assert [x.status for x in standin.requests("/api/token")] == [200, 200]
    raw_fail(standin, "/api/token", 200, b'{"token": "x"}', times=10)
    with pytest.raises(SpotifyAPIError, match=r"/api/token: gave up after 6 attempts: .*without an access_token"):
        run(standin, tmp_path / "u.csv", genres="jazz", per_genre=5)


def test_a_token_expired_mid_run_is_renewed(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """Spotify answers 401 'The access token expired' to a token revoked early: fetch a new one, don't stop the crawl."""
    standin.fail("/v1/search", 401, body={"error": {"status": 401, "message": "The access token expired"}},
                 when={"q": "genre:pop", "offset": "50"})
    sleeps = Sleeps()
    report = run(standin, tmp_path / "t.csv", genres="pop", per_genre=70, sleeps=sleeps)
    assert report.tracks == 70 and sleeps == []
    assert len(standin.requests("/api/token")) == 2
    assert [(x.query["offset"], x.status) for x in standin.requests("/v1/search")] == [("0", 200), ("50", 401), ("50", 200)]


def test_a_second_401_stops_the_run_naming_the_status(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """A 401 with an empty body, again after a new token, stopped the run with 'HTTP 401: None' (spotipy's word for no
    message); it is named as HTTP names it, as is a 5xx with an empty body."""
    standin.fail("/v1/search", 401, times=2)
    with pytest.raises(SpotifyAPIError, match=r"offset 0 at http://127\.0\.0\.1:\d+/v1/search: HTTP 401: Unauthorized$"):
        run(standin, tmp_path / "t.csv", genres="pop")
    assert len(standin.requests("/api/token")) == 2
    standin.fail("/v1/search", 502, times=6)
    with pytest.raises(SpotifyAPIError, match=r"gave up after 6 attempts: HTTP 502: Bad Gateway$"):
        run(standin, tmp_path / "t.csv", genres="pop")


def test_malformed_search_items_are_skipped_or_left_empty(standin: SpotifyStandIn, tmp_path: Path) -> None:
    items = ['"just a string"', "7", "null", '{"id": 5}', '{"name": "no id"}',
             '{"id": "odd1", "name": {"x": 1}, "artists": ["Bare", {"name": "Real"}, null], "album": "flat",'
             ' "popularity": "high", "duration_ms": NaN, "preview_url": 9}']
    raw_fail(standin, "/v1/search", 200, ('{"tracks": {"items": [' + ", ".join(items) + '], "total": 6}}').encode())
    out = tmp_path / "t.csv"
    report = run(standin, out, genres="pop", per_genre=5, features=False)
    assert report.tracks == 1
    (row,) = read(out)
    assert row["track_id"] == "odd1" and row["artists"] == "Real"
    assert row["name"] == row["album"] == row["popularity"] == row["duration_ms"] == row["preview_url"] == ""


def test_nan_and_text_features_stay_empty(standin: SpotifyStandIn, tmp_path: Path) -> None:
    """NaN or text in audio-features was written as 'nan' / 'high' and counted as labelled; an unhashable id crashed."""
    raw_fail(standin, "/v1/audio-features", 200,
             b'{"audio_features": [{"id": "pop00000x0", "danceability": NaN, "energy": "high", "key": [1], "tempo": Infinity,'
             b' "mode": true, "valence": 0.25}, {"id": ["pop00001x0"]}, [1], "x"]}')
    out = tmp_path / "t.csv"
    report = run(standin, out, genres="pop", per_genre=3)
    rows = {r["track_id"]: r for r in read(out)}
    r0 = rows["pop00000x0"]
    assert [r0[c] for c in ("danceability", "energy", "key", "tempo", "mode")] == [""] * 5 and r0["valence"] == "0.25"
    assert report.with_features == 0 and all(r["danceability"] == "" for r in rows.values())
    state = json.loads(out.with_name("t.csv.state.json").read_text())
    assert sorted(state["features_tried"]) == sorted(rows)  # nothing usable: not asked again next run


def test_disk_full_while_saving_is_one_error_and_keeps_the_table(standin: SpotifyStandIn, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import songfeat.atomic as atomic_module

    out = tmp_path / "t.csv"
    run(standin, out, genres="pop", per_genre=10)
    before = out.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_module.os, "fsync", full)
    res = CliRunner().invoke(app, ["collect", "--genres", "pop", "--per-genre", "20", "--out", str(out), "--api-url", standin.api_url,
                                   "--token-url", standin.token_url, "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
    monkeypatch.undo()
    assert res.exit_code == 1
    assert res.stderr.strip().splitlines() == [f"songfeat: error: {out}: cannot write (No space left on device); the last saved progress is kept"]
    assert out.read_bytes() == before and not list(tmp_path.glob(".*.tmp"))


def test_damaged_state_and_a_table_resaved_with_a_bom(standin: SpotifyStandIn, tmp_path: Path) -> None:
    out = tmp_path / "t.csv"
    run(standin, out, genres="pop", per_genre=10)
    state_path = out.with_name("t.csv.state.json")
    good = state_path.read_text()
    state_path.write_text(json.dumps({"version": 1, "queries": ["genre:pop"], "genre_done": {}, "features_tried": []}))
    with pytest.raises(SongfeatError, match=r"t.csv.state.json: damaged resume state"):
        run(standin, out, genres="pop", per_genre=20)
    state_path.write_text(good)
    out.write_bytes(b"\xef\xbb\xbf" + out.read_bytes())  # what a spreadsheet's "save as CSV UTF-8" does
    report = run(standin, out, genres="pop", per_genre=20)
    assert report.tracks == 20 and report.added == 10


def test_a_network_failure_names_its_cause(tmp_path: Path) -> None:
    """A refused connection read 'ConnectionError: HTTPConnectionPool(host=..., port=...): Max retries exceeded with url:
    /v1/search?q=... (Caused by NewConnectionError("HTTPConnection(hos...': the cause was cut off, and the "Max retries"
    the docs say spotipy's retries no longer produce was all the line said."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    api = f"http://127.0.0.1:{port}/v1/"
    with pytest.raises(SpotifyAPIError) as e:
        collect("pop", 5, tmp_path / "t.csv", client_id=CLIENT_ID, client_secret=CLIENT_SECRET, api_url=api,
                token_url=api + "token", policy=RetryPolicy(retries=0, sleep=Sleeps()), progress=False)
    assert str(e.value) == (f"search 'genre:pop' offset 0 at {api}token: gave up after 1 attempt: "
                            "ConnectionError: Failed to establish a new connection: [Errno 111] Connection refused")
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("args,message", [
    (["--genres", "", "--per-genre", "5"], "no genres given (e.g. --genres pop,rock,jazz)"),
    (["--genres", " , ", "--per-genre", "5"], "no genres given (e.g. --genres pop,rock,jazz)"),
    (["--genres", "pop", "--per-genre", "0"], "--per-genre: 0 is not in the range x>=1 (see songfeat collect --help)"),
    (["--genres", "pop", "--per-genre", "5", "--api-url", "ftp://x/v1/"],
     "ftp://x/v1/: the Spotify API URL must start with http:// or https://"),
    (["--genres", "pop", "--per-genre", "5", "--client-secret", ""],
     "no Spotify credentials: set SPOTIPY_CLIENT_SECRET (or pass --client-id / --client-secret)"),
    (["--genres", "pop", "--per-genre", "5", "--out", "{tmp}"], "{tmp}: is a directory; --out takes a CSV file name"),
    (["--genres", "pop", "--per-genre", "5", "--out", "{tmp}/no/t.csv"], "{tmp}/no: output folder does not exist"),
    (["--genres", "pop", "--per-genre", "5", "--out", "{tmp}/other.csv"],
     "{tmp}/other.csv: exists but is not a `songfeat collect` table (its columns differ); choose another --out"),
], ids=["empty-genres", "blank-genres", "per-genre-0", "api-url", "credentials", "out-folder", "out-nowhere", "out-other"])
def test_a_refusal_before_any_request_exits_2_and_a_failed_run_1(standin: SpotifyStandIn, tmp_path: Path, args: list[str],
                                                                 message: str) -> None:
    """An empty --genres exited 1 where --per-genre 0 exited 2, as did missing credentials and an --out it cannot use:
    each is refused before any request, in one line (README, "Exit status": 2). A run that fails at Spotify is 1."""
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    base = ["collect", "--out", str(tmp_path / "t.csv"), "--api-url", standin.api_url, "--token-url", standin.token_url,
            "--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET]
    res = CliRunner().invoke(app, base + [a.format(tmp=tmp_path) for a in args], prog_name="songfeat")
    assert (res.exit_code, res.stderr) == (2, f"songfeat: error: {message.format(tmp=tmp_path)}\n")
    assert res.stdout == "" and standin.requests() == [] and sorted(p.name for p in tmp_path.iterdir()) == ["other.csv"]
    res = CliRunner().invoke(app, base[:-1] + ["wrong", "--genres", "pop", "--per-genre", "5"])  # the token is refused
    assert res.exit_code == 1 and res.stderr.startswith("songfeat: error: token request at ") and "invalid_client" in res.stderr
