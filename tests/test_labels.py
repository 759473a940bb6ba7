"""Label tables: every supported schema normalised, bad rows dropped with reasons, real files' row counts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from songfeat import features
from songfeat.data.labels import NORMALISED_COLUMNS, LabelTable, parse_track_id, read_labels
from songfeat.features import is_spotify_id
from songfeat.errors import SongfeatError

FIX = Path(__file__).parent / "fixtures"


def reasons(t: LabelTable) -> dict[str, str]:
    """Dropped rows as {track_id as written: reason}."""
    return dict(zip(t.dropped["track_id"].astype(str), t.dropped["reason"]))


def row(t: LabelTable, tid: str) -> pd.Series:
    hits = t.frame[t.frame["track_id"] == tid]
    assert len(hits) == 1, f"{tid} appears {len(hits)} times"
    return hits.iloc[0]


def check_normalised(t: LabelTable) -> None:
    """The invariants every normalised table keeps, whatever its schema."""
    f = t.frame
    assert tuple(f.columns[: len(NORMALISED_COLUMNS)]) == NORMALISED_COLUMNS
    assert f["track_id"].is_unique and f["track_id"].notna().all()
    for c in (*features.LABEL_COLUMNS, "duration_ms", "popularity"):
        assert f[c].dtype == np.float64, c
    for c in features.LEARNED:
        v = f[c].dropna()
        assert ((v >= 0) & (v <= 1)).all(), c
    for c in ("key", "mode", "time_signature"):
        v = f[c].dropna()
        assert (v == v.round()).all(), c
    assert f["key"].dropna().between(-1, 11).all()
    assert f["mode"].dropna().isin([0, 1]).all()
    assert f["time_signature"].dropna().between(3, 7).all()
    assert list(t.dropped.columns) == ["row", "track_id", "reason"]


def test_is_spotify_id_and_parse():
    assert is_spotify_id("0nbXyq5TXYPCO7pr3N8S4I")
    assert not is_spotify_id("0nbXyq5TXYPCO7pr3N8S4")  # 21 chars
    assert not is_spotify_id("0nbXyq5TXYPCO7pr3N8S4I!")
    assert not is_spotify_id("0nbXyq5TXYPCO7pr3N8S-I")
    assert not is_spotify_id(None) and not is_spotify_id(12)
    assert parse_track_id("spotify:track:0nbXyq5TXYPCO7pr3N8S4I") == "0nbXyq5TXYPCO7pr3N8S4I"
    assert parse_track_id("https://open.spotify.com/track/0nbXyq5TXYPCO7pr3N8S4I?si=x") == "0nbXyq5TXYPCO7pr3N8S4I"
    assert parse_track_id(" 0nbXyq5TXYPCO7pr3N8S4I ") == "0nbXyq5TXYPCO7pr3N8S4I"
    assert parse_track_id("spotify:album:0nbXyq5TXYPCO7pr3N8S4I") is None


def test_seed_schema_drops_bad_rows_with_reasons():
    t = read_labels(FIX / "labels_seed.csv")
    check_normalised(t)
    assert t.schema == "seed"
    # an out-of-range cell (danceability 1.68, key 13) is read as missing: its row keeps its other labels
    assert set(t.frame["track_id"]) == {"6HJiKaPc4LYPczBFGSMBFs", "378GxC9FFbFaw02SyyxHfO", "2OKuigqDZttO0FSkKVF3tB",
                                        "5OKuigqDZttO0FSkKVF3tB", "1OKuigqDZttO0FSkKVF3tB"}
    assert np.isnan(row(t, "5OKuigqDZttO0FSkKVF3tB")["danceability"]) and row(t, "5OKuigqDZttO0FSkKVF3tB")["energy"] == 0.488
    assert np.isnan(row(t, "1OKuigqDZttO0FSkKVF3tB")["key"]) and row(t, "1OKuigqDZttO0FSkKVF3tB")["tempo"] == 120
    assert [line.removeprefix(f"{FIX / 'labels_seed.csv'}: ") for line in t.nulled_lines()] == [
        "line 4 (5OKuigqDZttO0FSkKVF3tB): danceability 1.68 outside [0, 1]: read as missing (the row's other labels are used)",
        "line 7 (1OKuigqDZttO0FSkKVF3tB): key 13 outside [-1, 11]: read as missing (the row's other labels are used)"]
    r = reasons(t)
    assert r["not-a-spotify-id"].startswith("bad track_id")
    assert r["7OKuigqDZttO0FSkKVF3tB"].startswith("no labels")
    assert r["3OKuigqDZttO0FSkKVF3tB"].startswith("unreadable value: tempo 'fast'")
    assert t.drop_counts() == {"bad track_id": 1, "no labels": 1, "unreadable value": 1}
    assert sorted(t.dropped["row"]) == [3, 4, 7]
    first = row(t, "6HJiKaPc4LYPczBFGSMBFs")
    assert first["name"] == "I Got Summer On My Mind" and first["artists"] == "Jay Dunham"
    assert first["danceability"] == pytest.approx(0.807) and first["key"] == 9 and first["mode"] == 0
    nan_row = row(t, "2OKuigqDZttO0FSkKVF3tB")  # empty cells stay NaN, the row keeps its other labels
    assert np.isnan(nan_row["instrumentalness"]) and np.isnan(nan_row["valence"]) and nan_row["energy"] == 0.5


def test_kaggle_letter_keys_major_minor_excel_time_signatures_bom_duplicates():
    t = read_labels(FIX / "labels_kaggle.csv")
    check_normalised(t)
    assert t.schema == "kaggle-ultimate"
    assert list(t.frame["track_id"]) == ["0BRjO6ga9RKCKjfDqeFgWV", "0BjC1NfoEOOusryehmNudP", "0CoSDzoNIKCRs124s9uTVy", "1CoSDzoNIKCRs124s9uTVy"]
    a = row(t, "0BRjO6ga9RKCKjfDqeFgWV")
    assert (a["key"], a["mode"], a["time_signature"]) == (1, 1, 4)  # C#, Major, "4-Apr" = 4/4
    assert a["genre"] == "Movie; Pop"  # one track under two genres: kept once, with both
    assert a["artists"] == "Henri Salvador" and a["name"] == "C'est beau"
    b = row(t, "0BjC1NfoEOOusryehmNudP")
    assert (b["key"], b["mode"], b["time_signature"]) == (6, 0, 3)  # F#, Minor, "4-Mar" = 3/4
    c = row(t, "0CoSDzoNIKCRs124s9uTVy")
    assert (c["key"], c["time_signature"]) == (10, 5)  # Bb, "4-May" = 5/4
    assert c["instrumentalness"] == pytest.approx(8.19e-06)
    assert np.isnan(row(t, "1CoSDzoNIKCRs124s9uTVy")["time_signature"])  # "0/4": no metre detected
    assert list(t.nulled["column"]) == ["time_signature"]
    r = t.dropped.set_index("row")["reason"]
    assert r[2] == "duplicate track_id: same as line 2"  # file lines: the header is line 1
    assert r[3] == "duplicate track_id: same as line 3 but labels differ (first kept)"
    assert r[6] == "unreadable value: unreadable key 'H'"
    assert r[7] == "unreadable value: unreadable mode 'Lydian'"
    assert r[8] == "truncated row: 11 of 18 fields"
    assert "track_id" in t.frame.columns and "\ufeffgenre" not in t.frame.columns


def test_a_repeat_of_a_dropped_row_is_kept(tmp_path):
    path = tmp_path / "labels.csv"  # the first row for b has a bad id; the second was once dropped as its duplicate
    path.write_text("track_id,danceability,energy\na,0.5,0.5\nb,abc,0.2\nb,0.4,0.2\nb,0.3,0.2\n")
    t = read_labels(path)
    assert list(t.frame["track_id"]) == ["a", "b"] and row(t, "b")["danceability"] == 0.4
    r = t.dropped.set_index("row")["reason"]
    assert r[1].startswith("unreadable value: danceability 'abc'")
    assert r[3] == "duplicate track_id: same as line 4 but labels differ (first kept)"


def test_an_out_of_range_cell_is_read_as_missing_and_the_row_keeps_its_other_labels(tmp_path):
    """danceability 1.7 or -0.2, or a tempo of -5, dropped the whole row (its other labels lost with it): now that cell
    alone is missing, said in one line naming the file, the row's id, the column and the value; a row with nothing
    else labelled is still dropped, naming the cell."""
    path = tmp_path / "labels.csv"
    path.write_text("track_id,danceability,energy,tempo\na,1.7,0.5,120\nb,-0.2,0.4,-5\nc,0.3,0.2,130\nd,3,,\n")
    t = read_labels(path)
    assert list(t.frame["track_id"]) == ["a", "b", "c"]
    assert row(t, "a")["energy"] == 0.5 and row(t, "a")["tempo"] == 120 and np.isnan(row(t, "a")["danceability"])
    assert row(t, "b")["energy"] == 0.4 and np.isnan(row(t, "b")["danceability"]) and np.isnan(row(t, "b")["tempo"])
    assert t.nulled_lines() == [
        f"{path}: line 2 (a): danceability 1.7 outside [0, 1]: read as missing (the row's other labels are used)",
        f"{path}: line 3 (b): danceability -0.2 outside [0, 1]: read as missing (the row's other labels are used)",
        f"{path}: line 3 (b): tempo -5 outside [0, 300]: read as missing (the row's other labels are used)"]
    assert t.dropped_lines() == [f"{path}: line 5 (d): out of range: danceability 3 outside [0, 1], and no other "
                                 "feature is labelled"]
    assert t.summary()["nulled_by_reason"] == {"out of range: danceability": 2, "out of range: tempo": 1}


def test_uris_urls_and_loudness_tolerance():
    t = read_labels(FIX / "labels_uri.csv")
    check_normalised(t)
    assert t.schema == "kattapriyatham"
    assert list(t.frame["track_id"]) == ["0nbXyq5TXYPCO7pr3N8S4I", "696DnlkuDOXcMAnKlTgXXK", "21jGcNKet2qwijlDFuPiPb",
                                         "31jGcNKet2qwijlDFuPiPb"]  # its loudness 4.5 read as missing
    c = row(t, "21jGcNKet2qwijlDFuPiPb")
    assert c["loudness"] == pytest.approx(1.2)  # positive loudness (clipped master) is real Spotify data
    assert np.isnan(c["tempo"]) and np.isnan(c["time_signature"])  # tempo 0 / metre 1: not detected
    assert set(t.nulled["column"]) == {"tempo", "time_signature", "loudness"}
    r = reasons(t)
    assert r["spotify:track:tooShort"].startswith("bad track_id")
    assert "31jGcNKet2qwijlDFuPiPb" in t.nulled_lines()[0] and "loudness 4.5 outside [-60, 3]" in t.nulled_lines()[0]
    assert row(t, "0nbXyq5TXYPCO7pr3N8S4I")["artists"] == "Roddy Ricch"
    assert row(t, "0nbXyq5TXYPCO7pr3N8S4I")["popularity"] == 100


def test_600k_schema_artist_lists():
    t = read_labels(FIX / "labels_600k.csv")
    check_normalised(t)
    assert t.schema == "kaggle-600k"
    assert row(t, "021ht4sdgPcrDgSk7JTbKY")["artists"] == "Fernando Pessoa; Guns N' Roses"
    assert row(t, "35iwgR4jXetI318WEWsa1Q")["artists"] == "Uli"
    assert row(t, "35iwgR4jXetI318WEWsa1Q")["duration_ms"] == 126903
    assert np.isnan(row(t, "08FmqUhxtyLTn6pAh6bk45")["tempo"])
    assert "(07A5yehtSnoedViJAZkNnc): loudness -71.18" in t.nulled_lines()[0]  # read as missing, the row kept
    assert len(t) == 4


def test_fma_numeric_ids_are_zero_padded_and_empty_cells_kept():
    t = read_labels(FIX / "labels_fma.csv")
    check_normalised(t)
    assert t.schema == "fma-echonest"
    assert list(t.frame["track_id"]) == ["000002", "000003", "000140", "001014"]  # as FMA names its audio files
    assert np.isnan(row(t, "000003")["speechiness"]) and np.isnan(row(t, "000140")["danceability"])
    assert row(t, "000140")["tempo"] == pytest.approx(251.072)  # Echo Nest tempi pass 250
    assert t.frame["loudness"].isna().all() and t.frame["key"].isna().all()  # columns the schema lacks
    assert reasons(t)["-5"].startswith("bad track_id")


@pytest.mark.parametrize("name,schema,n", [("labels_previews.csv", "previews", 2), ("labels_combined.csv", "combined", 3)])
def test_other_schemas(name, schema, n):
    t = read_labels(FIX / name)
    check_normalised(t)
    assert (t.schema, len(t), len(t.dropped)) == (schema, n, 0)
    assert t.frame[list(features.LABEL_COLUMNS)].notna().all().all()


def test_id_column_override(tmp_path):
    p = tmp_path / "mine.csv"
    p.write_text("clip,danceability,energy\nsong-01,0.5,0.6\nsong 02,0.5,0.6\nsong-03,0.1,0.2\n")
    t = read_labels(p, id_column="clip")
    assert list(t.frame["track_id"]) == ["song-01", "song-03"]  # researchers' own ids; whitespace is not allowed
    with pytest.raises(SongfeatError, match="no column 'nope'"):
        read_labels(p, id_column="nope")


def test_unknown_and_unreadable_files_name_the_file(tmp_path):
    with pytest.raises(SongfeatError, match=r"labels_unknown\.csv: unknown label schema"):
        read_labels(FIX / "labels_unknown.csv")
    with pytest.raises(SongfeatError, match="missing.csv: no such file"):
        read_labels(tmp_path / "missing.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(SongfeatError, match="empty.csv: empty file"):
        read_labels(empty)
    binary = tmp_path / "noise.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SongfeatError, match="noise.csv"):
        read_labels(binary)


# ---- the real files in ../shared (row counts observed on 2026-11-21) ---------------------------

REAL = [
    # file, schema, rows kept, dropped by reason, nulled values
    ("spotify-features/combined_unique_by_track_id.csv", "combined", 41855, {}, 687),
    ("spotify-features/kattapriyatham_spotify_tracks.csv", "kattapriyatham", 14369, {}, 286),
    ("spotify-features/it21803666_SpotifyFeatures_subset.csv", "kaggle-ultimate", 19160, {"duplicate track_id": 668, "truncated row": 1}, 77),
    ("spotify-features/boudhik_tracks_600k_subset.csv", "kaggle-600k", 10124, {}, 332),
    ("spotify-previews/labels.csv", "previews", 102, {}, 0),
    ("seed-naaafis/Sample_Data/all_tracks-1.csv", "seed", 709, {}, 3),
    ("fma-echonest/echonest_8k.csv", "fma-echonest", 8000, {}, 14),
]


@pytest.mark.shared
@pytest.mark.parametrize("rel,schema,rows,dropped,nulled", REAL, ids=[r[1] for r in REAL])
def test_real_files(shared_data, rel, schema, rows, dropped, nulled):
    t = read_labels(shared_data / rel)
    check_normalised(t)
    assert (t.schema, len(t), t.drop_counts(), len(t.nulled)) == (schema, rows, dropped, nulled)


@pytest.mark.shared
def test_real_previews_have_all_twelve_labels(shared_data):
    t = read_labels(shared_data / "spotify-previews" / "labels.csv")
    assert t.frame[list(features.LABEL_COLUMNS)].notna().all().all()
    assert all(is_spotify_id(i) for i in t.frame["track_id"])


def test_semicolon_and_decimal_commas():
    """European Excel saves with ';' and decimal commas."""
    t = read_labels(FIX / "labels_semicolon.csv")
    check_normalised(t)
    assert list(t.frame["track_id"]) == ["0nbXyq5TXYPCO7pr3N8S4I", "696DnlkuDOXcMAnKlTgXXK"]  # energy 1.601 read as missing
    assert row(t, "0nbXyq5TXYPCO7pr3N8S4I")["danceability"] == pytest.approx(0.896)
    assert row(t, "0nbXyq5TXYPCO7pr3N8S4I")["tempo"] == pytest.approx(116.971)
    assert "(696DnlkuDOXcMAnKlTgXXK): energy 1.601" in t.nulled_lines()[0]


def test_kaggle_tracks_features_schema():
    """Kaggle's 1.2M-songs tracks_features.csv: id, album, artists list, artist_ids, time_signature as 4.0."""
    t = read_labels(FIX / "labels_tracks_features.csv")
    check_normalised(t)
    assert t.schema == "kaggle-1.2m" and len(t) == 2
    r = row(t, "1wsRitfRRtWyEapl0q22o8")
    assert (r["name"], r["album"], r["artists"]) == ("Guerrilla Radio", "The Battle Of Los Angeles", "Rage Against The Machine; Someone Else")
    assert (r["key"], r["time_signature"], r["duration_ms"]) == (11, 4, 206200)
    assert r["artist_ids"] == "['2d0hyoQ5ynDBnkvAbJKORj']"


SEED_HEADER = "track_id,name,danceability,energy,tempo,key,mode,time_signature"
IDS = ["0nbXyq5TXYPCO7pr3N8S4I", "696DnlkuDOXcMAnKlTgXXK", "1wsRitfRRtWyEapl0q22o8"]


def test_a_header_only_file_is_an_empty_table(tmp_path):
    """No data rows used to raise a TypeError from numpy (`~` of an empty float array)."""
    p = tmp_path / "header.csv"
    p.write_text(SEED_HEADER + "\n")
    t = read_labels(p)
    assert len(t) == 0 and t.dropped.empty and list(t.frame.columns[:1]) == ["track_id"]


def test_a_delimiter_ending_every_row_does_not_shift_the_columns(tmp_path):
    """Some exporters end each data line with ','; pandas then made the ids the index and shifted every value left."""
    p = tmp_path / "trailing.csv"
    p.write_text(SEED_HEADER + "\n" + "".join(f"{i},Song,0.5,0.6,120,5,1,4,\n" for i in IDS))
    t = read_labels(p)
    assert list(t.frame["track_id"]) == IDS and t.dropped.empty
    assert row(t, IDS[0])[["danceability", "energy", "tempo", "key"]].tolist() == [0.5, 0.6, 120.0, 5.0]


def test_a_row_without_an_id_is_said_to_have_none_not_nan(tmp_path):
    """`build` warned "line 3 (nan): bad track_id: the id cell is empty" for an empty id cell (pandas' NaN), and
    "(  )" for a quoted blank one: such a line names no id, its reason says the cell is empty."""
    p = tmp_path / "blank.csv"
    p.write_text(SEED_HEADER + "\n" + f"{IDS[0]},Song,0.5,0.6,120,5,1,4\n" + ",Song,0.5,0.6,120,5,1,4\n"
                 + '"  ",Song,0.5,0.6,120,5,1,4\n')
    assert read_labels(p).dropped_lines() == [f"{p}: line {n}: bad track_id: the id cell is empty" for n in (3, 4)]


def test_ids_that_pandas_calls_missing_are_kept_and_labels_so_written_are_missing(tmp_path):
    """A table of free ids may hold 'NA', 'None' or 'null' (initials, a track named so): pandas read them as missing and
    the rows were dropped as "the id cell is empty". They are ids; in a label column the same words still mean missing."""
    p = tmp_path / "free.csv"
    p.write_text("track_id,energy,valence\nNA,0.5,null\nNone,NA,0.2\nnull,0.7,n/a\nintro,#N/A,0.4\n,0.1,0.1\n")
    t = read_labels(p)
    assert t.frame["track_id"].tolist() == ["NA", "None", "null", "intro"]
    assert t.frame["energy"].tolist()[::2] == [0.5, 0.7] and np.isnan(t.frame["energy"].tolist()[1::2]).all()
    assert np.isnan(t.frame["valence"].iat[0]) and np.isnan(t.frame["valence"].iat[2])
    assert t.dropped_lines() == [f"{p}: line 6: bad track_id: the id cell is empty"]


def test_an_unquoted_delimiter_in_a_name_drops_only_its_row(tmp_path):
    """'Earth, Wind & Fire' unquoted shifts its row's values: that row is dropped by name, the file is still read."""
    p = tmp_path / "comma.csv"
    p.write_text(SEED_HEADER + "\n" + f"{IDS[0]},Song,0.5,0.6,120,5,1,4\n" + f"{IDS[1]},September, Earth,0.5,0.6,120,5,1,4\n"
                 + f"{IDS[2]},Song,0.5,0.6,120,5,1,4\n")
    t = read_labels(p)
    assert list(t.frame["track_id"]) == [IDS[0], IDS[2]]
    assert t.dropped_lines() == [f"{p}: line 3 ({IDS[1]}): extra fields: 9 of 8 fields"]
    first = tmp_path / "first.csv"  # the same when it is the first data row (pandas then truncated it silently)
    first.write_text(SEED_HEADER + "\n" + f"{IDS[1]},September, Earth,0.5,0.6,120,5,1,4\n" + f"{IDS[2]},Song,0.5,0.6,120,5,1,4\n")
    assert reasons(read_labels(first)) == {IDS[1]: "extra fields: 9 of 8 fields"}


@pytest.mark.parametrize("head,message", [
    (b"PK\x03\x04" + bytes(60), "zip archive .*save it as CSV"),
    (__import__("gzip").compress(b"track_id,energy\n", mtime=0), "gzip-compressed"),
    (b"\x89PNG\r\n\x1a\n" + bytes(300), "binary file"),
], ids=["xlsx", "gzip", "png"])
def test_a_workbook_archive_or_binary_file_says_what_it_is(tmp_path, head, message):
    """An .xlsx renamed .csv used to be 'unknown label schema ... columns: PK' with NUL bytes printed to the terminal."""
    p = tmp_path / "labels.csv"
    p.write_bytes(head)
    with pytest.raises(SongfeatError, match=f"labels.csv: is .*{message}") as e:
        read_labels(p)
    assert "\x00" not in str(e.value)


def test_excel_unicode_text_utf16_is_read(tmp_path):
    """Excel's 'Unicode Text' export: UTF-16 with a BOM, tab-separated."""
    p = tmp_path / "unicode.txt"
    p.write_text(SEED_HEADER.replace(",", "\t") + "\n" + f"{IDS[0]}\tCafé\t0.5\t0.6\t120\t5\t1\t4\n", encoding="utf-16")
    t = read_labels(p)
    assert list(t.frame["track_id"]) == [IDS[0]] and row(t, IDS[0])["name"] == "Café"


def test_a_label_column_named_twice_is_refused(tmp_path):
    """Two 'energy' columns (a careless merge): pandas renamed the second 'energy.1' and the first was used silently."""
    p = tmp_path / "dup.csv"
    p.write_text("track_id,energy,danceability,Energy\n" + f"{IDS[0]},0.1,0.5,0.9\n")
    with pytest.raises(SongfeatError, match=r"dup.csv: column 'energy' appears 2 times in the header \(columns 2, 4\)"):
        read_labels(p)


def test_free_ids_cannot_be_dot_dirs_or_hold_control_characters(tmp_path):
    """'..' and 'a\\x01b' were accepted as researchers' own ids."""
    p = tmp_path / "free.csv"
    p.write_text("track_id,energy\nmine-1,0.5\n..,0.5\n.,0.5\na\x01b,0.5\nmine-2,0.5\n")
    t = read_labels(p)
    assert list(t.frame["track_id"]) == ["mine-1", "mine-2"]
    assert set(t.dropped["track_id"]) == {"..", ".", "a\x01b"}


def test_a_pipe_or_fifo_is_refused_not_waited_on(tmp_path):
    # `--labels fifo.csv` hung until killed; `--labels <(cat labels.csv)` said "empty file": the first of several reads
    # had drained the pipe
    import os
    import threading

    fifo = tmp_path / "labels.csv"
    os.mkfifo(fifo)
    result: list = []
    t = threading.Thread(target=lambda: result.append(pytest.raises(SongfeatError, read_labels, fifo)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "read_labels waited on the FIFO"
    assert "is a pipe or device, not a regular CSV file" in str(result[0].value)


def test_a_misspelt_feature_column_is_named_not_ignored_in_silence(tmp_path):
    # 'valance' and 'liveliness' were skipped without a word: the fit went on with those labels lost
    p = tmp_path / "mine.csv"
    p.write_text("track_id,energy,valance,liveliness,Danceability,genre,tempo_bpm\nc0,0.5,0.4,0.1,0.3,rock,120\n")
    t = read_labels(p)
    assert t.unread == [f"{p}: column 'valance' is not read: no feature has that name (did you mean 'valence'?)",
                        f"{p}: column 'liveliness' is not read: no feature has that name (did you mean 'liveness'?)"]
    assert t.frame["danceability"].tolist() == [0.3] and t.frame["valence"].isna().all()


def test_numbered_ids_from_zero_keep_their_first_row(tmp_path):
    # a researcher's clips 0.wav, 1.wav, ... : id 0 was dropped as "'0' is not a FMA id"
    p = tmp_path / "mine.csv"
    p.write_text("track_id,energy\n0,0.5\n1,0.4\n2,0.3\n")
    t = read_labels(p)
    assert t.dropped.empty and t.frame["track_id"].tolist() == ["000000", "000001", "000002"]


def test_an_accented_id_pairs_with_a_file_named_in_decomposed_unicode(tmp_path):
    # 'café' typed in the table (NFC) and café.wav named on macOS (NFD) look alike but paired with nothing
    import unicodedata

    from songfeat.data.labels import pair_labels_audio

    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / (unicodedata.normalize("NFD", "café") + ".wav")).write_bytes(b"RIFF")
    (tmp_path / "labels.csv").write_text("track_id,energy\ncafé,0.5\nother,0.4\n", encoding="utf-8")
    rows, missing = pair_labels_audio(tmp_path / "labels.csv", audio)
    assert rows["track_id"].tolist() == ["café"] and missing == ["other"]


def test_text_ids_in_a_numbered_table_are_kept_as_the_users_own(tmp_path):
    # ids mostly numbers (read FMA-style, 1 -> 000001): 'intro' was dropped as "bad track_id: 'intro' is not a FMA id",
    # though a file intro.wav pairs with it as in a table of free ids; what is still dropped says plainly why
    from songfeat.data.labels import pair_labels_audio

    p = tmp_path / "mine.csv"
    p.write_text("track_id,energy\n" + "".join(f"{i},0.5\n" for i in range(1, 7)) + "intro,0.2\n-5,0.1\n2.5,0.1\nmy clip,0.3\n,0.4\n")
    t = read_labels(p)
    assert t.frame.attrs["id_kind"] == "fma"
    assert t.frame["track_id"].tolist() == [f"00000{i}" for i in range(1, 7)] + ["intro"]
    r = reasons(t)
    assert r["-5"] == r["2.5"].replace("'2.5'", "'-5'") == (
        "bad track_id: '-5' is not a whole number of 0 or more; most ids in this table are numbers, read as FMA names "
        "files (2 pairs with 000002.mp3)")
    assert r["my clip"] == "bad track_id: 'my clip' cannot name an audio file (it holds whitespace, a slash or a control character)"
    assert t.dropped_lines()[-1] == f"{p}: line 12: bad track_id: the id cell is empty"  # it read "line 12 (nan)"
    audio = tmp_path / "audio"
    audio.mkdir()
    for name in ("1.wav", "intro.wav"):
        (audio / name).write_bytes(b"RIFF")
    rows, missing = pair_labels_audio(p, audio)
    assert dict(zip(rows["track_id"], [Path(x).name for x in rows["path"]])) == {"000001": "1.wav", "intro": "intro.wav"}
    assert missing == [f"00000{i}" for i in range(2, 7)]


def test_a_bad_spotify_id_says_what_the_table_was_read_as(tmp_path):
    p = tmp_path / "spotify.csv"
    p.write_text("track_id,energy\n4uLU6hMCjMI75M1A2tKUQC,0.5\n4uLU6hMCjMI75M1A2tKUQD,0.5\nmine,0.3\n")
    assert reasons(read_labels(p))["mine"] == ("bad track_id: 'mine' is not a Spotify id (22 letters and digits), as most "
                                               "ids in this table are")


def test_whole_numbers_written_as_floats_are_numbered_ids(tmp_path):
    # pandas writes a column of ids with a blank as floats (2 -> 2.0): among whole numbers, 2.0 was dropped as "not a
    # whole number", and a table written whole so was read as free text ('2.0', pairing with no 000002.mp3)
    from songfeat.data.labels import pair_labels_audio

    p = tmp_path / "mixed.csv"
    p.write_text("track_id,energy\n1,0.5\n3,0.4\n4,0.3\n2.0,0.2\n7.00,0.2\n2.5,0.1\n-5.0,0.1\n²,0.1\n")
    t = read_labels(p)
    assert t.frame.attrs["id_kind"] == "fma"
    assert t.frame["track_id"].tolist() == ["000001", "000003", "000004", "000002", "000007", "²"]  # ² is no digit: text
    assert set(reasons(t)) == {"2.5", "-5.0"}
    written = tmp_path / "written.csv"
    pd.DataFrame({"track_id": [2, None, 5], "energy": [0.5, 0.4, 0.3]}).to_csv(written, index=False)
    assert written.read_text().splitlines()[1] == "2.0,0.5"  # as pandas writes it
    t = read_labels(written)
    assert t.frame.attrs["id_kind"] == "fma" and t.frame["track_id"].tolist() == ["000002", "000005"]
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "2.mp3").write_bytes(b"ID3")
    rows, missing = pair_labels_audio(written, audio)
    assert rows["track_id"].tolist() == ["000002"] and missing == ["000005"]


def test_a_numbered_id_of_thousands_of_digits_is_read_not_a_traceback(tmp_path):
    # int() refuses strings of over 4,300 digits: read_labels raised ValueError from inside the id parser
    p = tmp_path / "long.csv"
    p.write_text("track_id,energy\n1,0.5\n2,0.4\n" + "7" * 5000 + ",0.3\n")
    t = read_labels(p)
    assert t.frame["track_id"].tolist() == ["000001", "000002", "7" * 5000]


def test_an_id_of_thousands_of_characters_is_shortened_in_messages(tmp_path):
    # a drop line printed such an id whole, twice (the row's id, then the reason quoting it): 10,158 characters for one
    # row of a 5,000-digit id; the other messages naming an id (here the build's 'no audio file matches') likewise
    from songfeat.data.store import build_store

    long = "7" * 5000
    p = tmp_path / "long.csv"
    p.write_text(f"track_id,energy\n{long},0.5\n1,0.5\n{long},0.4\n-{long},0.3\n{'x' * 3000},0.2\n")
    lines = read_labels(p).dropped_lines()
    assert [line.split(": ", 2)[1].split(" (")[0] for line in lines] == [f"line {n}" for n in (4, 5, 6)]
    for line in lines:
        assert len(line) - len(str(p)) < 300 and " characters)" in line and long not in line, line[:400]
    assert "duplicate track_id: same as line 2" in lines[0] and "(5001 characters)" in lines[1]
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "other.wav").write_bytes(b"RIFF")
    with pytest.raises(SongfeatError) as e:
        build_store(p, audio, tmp_path / "store", workers=1, progress=False, descriptors=False)
    assert "vs label id 7777" in str(e.value) and len(str(e.value)) < 400, str(e.value)[:400]


def test_short_id_keeps_ordinary_ids_whole():
    from songfeat.data.cells import ID_SHOWN, short_id

    long = "7" * 5000
    assert short_id("4uLU6hMCjMI75M1A2tKUQC") == "4uLU6hMCjMI75M1A2tKUQC" and short_id("mine", quote=True) == "'mine'"
    assert short_id("a" * ID_SHOWN) == "a" * ID_SHOWN
    assert short_id(long) == f"{'7' * 24}...{'7' * 12} (5000 characters)"
    assert short_id(long, quote=True) == f"'{'7' * 24}...{'7' * 12}' (5000 characters)"


def test_a_nan_written_out_is_no_id_and_does_not_sway_how_the_ids_read(tmp_path):
    """A NaN id written out ('nan', as `df.astype(str)` saves it) was kept as the id 'nan', and where most ids were so it
    turned a table of FMA numbers into free text ('2.0' no longer paired with 000002.mp3). It names no track, as in
    `download` (`cells.missing_id`); 'NA' stays an id."""
    p = tmp_path / "fma.csv"
    p.write_text("track_id,energy\n2.0,0.5\n5.0,0.6\nnan,0.7\nnan,0.8\nNaN,0.9\n")
    t = read_labels(p)
    assert t.frame["track_id"].tolist() == ["000002", "000005"]
    assert t.dropped_lines() == [f"{p}: line {n} ({w}): bad track_id: the id cell holds {w!r}, a missing value written out"
                                 for n, w in ((4, "nan"), (5, "nan"), (6, "NaN"))]
