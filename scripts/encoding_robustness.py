"""How much a file's encoding alone moves the learned features: the same recordings re-encoded, analysed by a bundle.

    python scripts/encoding_robustness.py [--shared ../shared/data] [--model BUNDLE] [--previews 10]

Two sets, written into a temporary folder (nothing is kept):
* every 10th dev preview (`--previews` of them), re-encoded: a very low-bitrate mp3 (libsndfile's MPEG layer III at
  compression level 0.9), a 22.05-kHz wav, a 16-kHz wav
  (nothing above 8 kHz, and the resampler's roll-off just below it), mono, -6 dB, and a 16-bit wav copy of the decoded preview;
* the behaviour clips with content above 16.5 kHz (full-band FLAC, WAV, OGG), each against itself low-passed at 16 kHz
  (a 16th-order Butterworth, forwards and backwards: what a 128-kbit/s mp3 or a preview keeps), both as float wavs;
* the behaviour clips that are music (classical, electronic, sung; CC) and the bundled example, their first 30 s as
  songfeat decodes them (44.1 kHz mono) written as a float wav and put through FFmpeg's own encoders (PyAV): LAME mp3
  at 320, 128 and 96 kbit/s, AAC at 128 and Opus at 96 kbit/s, -6 dB, and with the first 0.5 or 1.5 s cut (another rip
  of the same song starting a little later): the files users actually bring.
Prints, per copy and learned feature, the mean and the largest absolute change against the original, and the mean
signed change of acousticness for the low-pass; for the encoders also how many clips keep their tempo (within 4%) and
key+mode, and which clips' instrumentalness or valence moves by more than 0.1. `--model` compares another bundle (e.g. one from before the ridge member
read the band-limited MFCC summary: `git show <rev>:src/songfeat/weights/default/<file>` into a folder).
The -6 dB copy is expected to move energy and loudness (Spotify's energy follows loudness), and it moves the
features the heads learnt to read partly off level (valence, acousticness, danceability); the other copies should not.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LEARNED = ("danceability", "energy", "speechiness", "acousticness", "instrumentalness", "valence", "liveness")


def analyze(paths: list[Path], model: str | None) -> dict[str, dict]:
    """songfeat analyze on `paths` (one process, every CPU) -> {file name: features}; failed files are left out."""
    cmd = [sys.executable, "-m", "songfeat.cli", "analyze", *map(str, paths), "-f", "json"] + (["-m", model] if model else [])
    p = subprocess.run(cmd, capture_output=True, text=True)
    out = json.loads(p.stdout or "[]")
    return {Path(d["path"]).name: d for d in (out if isinstance(out, list) else [out]) if "danceability" in d}


def report(name: str, pairs: list[tuple[Path, Path]], res: dict[str, dict], signed: str | None = None) -> None:
    rows = [(res[a.name], res[b.name]) for a, b in pairs if a.name in res and b.name in res]
    d = np.array([[b[k] - a[k] for k in LEARNED] for a, b in rows])
    cells = "  ".join(f"{k[:6]} {np.abs(d[:, i]).mean():.3f}/{np.abs(d[:, i]).max():.3f}" for i, k in enumerate(LEARNED))
    extra = f"  (signed mean {signed} {d[:, LEARNED.index(signed)].mean():+.3f})" if signed else ""
    print(f"{name:34s} n={len(rows):2d}  {cells}{extra}")


# FFmpeg's encoders for the music clips: name -> (container, encoder, bit rate, suffix)
ENCODERS = {"mp3 320k": ("mp3", "libmp3lame", 320_000, "mp3"), "mp3 128k": ("mp3", "libmp3lame", 128_000, "mp3"),
            "mp3 96k": ("mp3", "libmp3lame", 96_000, "mp3"), "aac 128k": ("mp4", "aac", 128_000, "m4a"),
            "opus 96k": ("ogg", "libopus", 96_000, "opus")}
MUSIC = ("classical_", "electronic_", "vocals_")  # the behaviour clips that are music (file-name prefixes)
TRIMS = (0.5, 1.5)  # seconds cut from the start: the same music, its tagger patches and beats at other places


def encode(y: np.ndarray, sr: int, path: Path, container: str, encoder: str, bit_rate: int) -> None:
    """Write mono float audio as a stereo file through one of FFmpeg's encoders (PyAV; Opus runs at 48 kHz)."""
    import av

    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(encoder, rate=48000 if encoder == "libopus" else sr)
        stream.bit_rate = bit_rate
        stream.layout = "stereo"
        resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=stream.rate)
        both = np.ascontiguousarray(np.stack([y, y]).astype(np.float32))
        for i in range(0, both.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(both[:, i:i + 1024].copy(), format="fltp", layout="stereo")
            frame.sample_rate = sr
            for f in resampler.resample(frame):
                out.mux(stream.encode(f))
        for f in resampler.resample(None):
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))


def encoded_copies(clips: list[Path], out: Path) -> dict[str, list[tuple[Path, Path]]]:
    """Each music clip's first 30 s as a float wav, paired with its -6 dB and encoded copies, by copy name."""
    import soundfile as sf

    from songfeat.audio import SAMPLE_RATE, iter_windows

    pairs: dict[str, list[tuple[Path, Path]]] = {}
    for f in clips:
        y = next(iter(iter_windows(f)))
        ref = out / f"{f.stem}_30s.wav"
        sf.write(ref, y, SAMPLE_RATE, subtype="FLOAT")
        quiet = out / f"{f.stem}_30s_m6.wav"
        sf.write(quiet, y * 10 ** (-6 / 20), SAMPLE_RATE, subtype="FLOAT")
        pairs.setdefault("-6 dB wav", []).append((ref, quiet))
        for name, (container, encoder, rate, suffix) in ENCODERS.items():
            copy = out / f"{f.stem}_30s_{name.replace(' ', '_')}.{suffix}"
            encode(y, SAMPLE_RATE, copy, container, encoder, rate)
            pairs.setdefault(name, []).append((ref, copy))
        for lead in TRIMS:  # another rip of the same song starts a little later: the patches fall elsewhere
            trimmed = out / f"{f.stem}_30s_from{lead:g}s.wav"
            sf.write(trimmed, y[int(lead * SAMPLE_RATE):], SAMPLE_RATE, subtype="FLOAT")
            pairs.setdefault(f"first {lead:g} s cut", []).append((ref, trimmed))
    return pairs


def kept(pairs: list[tuple[Path, Path]], res: dict[str, dict]) -> str:
    """How many pairs keep their tempo (within 4%) and their key and mode."""
    rows = [(res[a.name], res[b.name]) for a, b in pairs if a.name in res and b.name in res]
    tempo = sum(abs(b["tempo"] - a["tempo"]) <= 0.04 * a["tempo"] for a, b in rows)
    key = sum((a["key"], a["mode"]) == (b["key"], b["mode"]) for a, b in rows)
    return f"tempo kept {tempo}/{len(rows)}, key+mode kept {key}/{len(rows)}"


def main() -> None:
    import soundfile as sf
    import soxr
    from scipy.signal import butter, sosfiltfilt

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--model", default=None, help="a bundle folder; default: the bundled model")
    ap.add_argument("--previews", type=int, default=10)
    args = ap.parse_args()
    previews = sorted((args.shared / "spotify-previews" / "audio").glob("*.mp3"))[::10][: args.previews]
    clips = sorted((args.shared / "behaviour" / "clips").glob("*"))
    if not previews or not clips:
        raise SystemExit(f"{args.shared}: no dev previews or behaviour clips there (--shared names the shared data folder)")
    with tempfile.TemporaryDirectory(prefix="songfeat-encodings-") as tmp:
        out = Path(tmp)
        copies: dict[str, list[tuple[Path, Path]]] = {}
        for f in previews:
            y, sr = sf.read(f, dtype="float32", always_2d=True)
            made = {"very low-bitrate mp3": (f"{f.stem}_low.mp3", y, sr, {"format": "MP3", "subtype": "MPEG_LAYER_III",
                                                                         "compression_level": 0.9}),
                    "22.05-kHz wav": (f"{f.stem}_22k.wav", soxr.resample(y, sr, 22050), 22050, {"subtype": "FLOAT"}),
                    "16-kHz wav": (f"{f.stem}_16k.wav", soxr.resample(y, sr, 16000), 16000, {"subtype": "FLOAT"}),
                    "mono wav": (f"{f.stem}_mono.wav", y.mean(1), sr, {"subtype": "FLOAT"}),
                    "-6 dB wav": (f"{f.stem}_m6.wav", y * 10 ** (-6 / 20), sr, {"subtype": "FLOAT"}),
                    "16-bit wav copy": (f"{f.stem}_16.wav", y, sr, {"subtype": "PCM_16"})}
            for name, (fn, data, rate, kw) in made.items():
                sf.write(out / fn, data, rate, **kw)
                copies.setdefault(name, []).append((f, out / fn))
        band = []
        for f in clips:
            try:
                y, sr = sf.read(f, dtype="float32", always_2d=True)
            except Exception:  # formats libsndfile does not read (opus, m4a): not needed here
                continue
            if sr < 44100 or len(y) < 5 * sr:
                continue
            seg = y[: 10 * sr].mean(1)
            spec = np.abs(np.fft.rfft(seg)) ** 2
            if spec[np.fft.rfftfreq(seg.size, 1 / sr) > 16500].sum() / spec.sum() < 1e-5:
                continue  # already band-limited: nothing to compare
            a, b = out / f"{f.stem}_full.wav", out / f"{f.stem}_lp16k.wav"
            sf.write(a, y, sr, subtype="FLOAT")
            sf.write(b, sosfiltfilt(butter(16, 16000, fs=sr, output="sos"), y, axis=0).astype(np.float32), sr, subtype="FLOAT")
            band.append((a, b))
        music = sorted(f for f in clips if f.name.startswith(MUSIC)) + [ROOT / "examples" / "fma-000002.mp3"]
        encoded = encoded_copies(music, out)
        everything = ({p for pairs in copies.values() for pair in pairs for p in pair} | {p for pair in band for p in pair}
                      | {p for pairs in encoded.values() for pair in pairs for p in pair})
        res = analyze(sorted(everything), args.model)
    print(f"model: {args.model or 'the bundled default'}; mean / largest absolute change of each learned feature")
    for name, pairs in copies.items():
        report(f"{len(pairs)} previews: {name}", pairs, res)
    report("full-band clips low-passed at 16 kHz", band, res, signed="acousticness")
    print(f"\n{len(music)} music clips (behaviour + example), first 30 s, against their float wav:")
    for name, pairs in encoded.items():
        report(name, pairs, res)
        print(f"{'':34s}       {kept(pairs, res)}")
    print("moved by more than 0.1 (instrumentalness, valence):")
    for name, pairs in encoded.items():
        for a, b in pairs:
            if a.name in res and b.name in res:
                moved = [f"{k} {res[a.name][k]:.3f} -> {res[b.name][k]:.3f}" for k in ("instrumentalness", "valence")
                         if abs(res[b.name][k] - res[a.name][k]) > 0.1]
                if moved:
                    print(f"  {a.stem.removesuffix('_30s')} ({name}): {'; '.join(moved)}")


if __name__ == "__main__":
    main()
