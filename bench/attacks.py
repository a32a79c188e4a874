"""Bad inputs and faults against BuildSplits, as an attacker and as an unlucky user would try them.

    .venv/bin/python bench/attacks.py [--workdir DIR] [--only NAME,...]

Generates the quick sample corpus, adds one session per input attack (a copy of session s01 with
one thing broken), runs the real CLI (`luigi --module pipeline BuildSplits`) once over all of them,
then runs the fault attacks (concurrent runs, damaged outputs, bad settings) on the result. Each
attack is classified:

    handled   quarantined with the file named (or accepted, where the input is legitimate)
    partial   quarantined, but the named file or the reason is not the expected one
    crashed   the whole build failed instead of quarantining one input
    silent    wrong output or lost data without a word
    security  data from outside the corpus was read, or input text reached a report unescaped

A file `outside/secret.csv` next to the corpus holds a marker line; any output that contains the
marker counts as a leak. Prints one row per attack and the totals.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SECRET = "TOPSECRET-7f3a"
BASE = "s01"  # participants P01, P02: own videos, WAV audio, turns.csv


@dataclass
class Attack:
    name: str
    what: str
    mutate: Callable[[Path, Path], None]  # (session folder, outside folder)
    expect: str = "reject"  # reject | accept
    names: str = ""  # a quarantine must name this (file name or word in the reason)
    security: bool = False  # accepting it would read outside data
    session: str = ""  # folder name, default the attack name


def _csv(folder: Path, text: str, encoding: str = "utf-8", name: str = "participants.csv") -> None:
    (folder / name).write_bytes(text.encode(encoding))


PARTS = "participant_id,video,audio\nP01,P01.mp4,P01.wav\nP02,P02.mp4,P02.wav\n"


def _wav_float(path: Path, samples: list[float] | None = None, *, n: int = 16000 * 40, value: float = 0.1) -> None:
    """A float32 WAV (format 3) of `n` samples at 16 kHz."""
    import numpy as np

    data = np.full(n, value, np.float32) if samples is None else np.asarray(samples, np.float32)
    data[::2] *= -1
    body = data.tobytes()
    header = (b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 3, 1, 16000,
              64000, 4, 32) + b"data" + struct.pack("<I", len(body)))
    path.write_bytes(header + body)


def _nan_wav(path: Path) -> None:
    import numpy as np

    data = np.full(16000 * 40, 0.1, np.float32)
    data[16000 * 12:16000 * 13] = np.nan
    _wav_float(path, list(data))


def _cut_video(path: Path, seconds: float) -> None:
    from pipeline.media.audio import ffmpeg_exe

    tmp = path.with_name("cut.mp4")
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-t", str(seconds), "-c", "copy", str(tmp)],
                   check=True)
    tmp.replace(path)


def _black_video(path: Path) -> None:
    from pipeline.media.audio import ffmpeg_exe

    subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", "color=black:s=320x240:r=25:d=40",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True)


def _eaf(folder: Path, body: str) -> None:
    (folder / "turns.csv").unlink()
    (folder / "turns.eaf").write_text(body)


XXE = """<?xml version="1.0"?>
<!DOCTYPE a [<!ENTITY x SYSTEM "file://{outside}/secret.csv">]>
<ANNOTATION_DOCUMENT><HEADER TIME_UNITS="milliseconds"/><TIME_ORDER>
<TIME_SLOT TIME_SLOT_ID="t1" TIME_VALUE="1000"/><TIME_SLOT TIME_SLOT_ID="t2" TIME_VALUE="15000"/></TIME_ORDER>
<TIER TIER_ID="P01"><ANNOTATION><ALIGNABLE_ANNOTATION ANNOTATION_ID="a1" TIME_SLOT_REF1="t1" TIME_SLOT_REF2="t2">
<ANNOTATION_VALUE>&x;</ANNOTATION_VALUE></ALIGNABLE_ANNOTATION></ANNOTATION></TIER>
<TIER TIER_ID="P02"/></ANNOTATION_DOCUMENT>"""
LAUGHS = ('<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
          + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
          + ']><ANNOTATION_DOCUMENT><TIER TIER_ID="P01">&i;</TIER></ANNOTATION_DOCUMENT>')


def _symlink(link: Path, target: Path) -> None:
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def input_attacks() -> list[Attack]:
    """One session per attack, each a copy of s01 with one thing broken."""
    return [
        Attack("latin1_participants", "participants.csv in latin-1", lambda s, o: _csv(
            s, "participant_id,video,audio,note\nP01,P01.mp4,P01.wav,café\nP02,P02.mp4,P02.wav,x\n", "latin-1"),
            names="participants.csv"),
        Attack("utf16_participants", "participants.csv in UTF-16 with BOM (legitimate)",
               lambda s, o: _csv(s, PARTS, "utf-16"), expect="accept"),
        Attack("nul_participants", "participants.csv with NUL bytes",
               lambda s, o: (s / "participants.csv").write_bytes(b"participant_id,video\x00,audio\nP01\x00\n"),
               names="participants.csv"),
        Attack("empty_participants", "participants.csv of 0 bytes",
               lambda s, o: (s / "participants.csv").write_bytes(b""), names="participants.csv"),
        Attack("long_header", "participants.csv with a 1 MB header line",
               lambda s, o: _csv(s, "x" * (1 << 20) + "\n"), names="participants.csv"),
        Attack("missing_column", "participants.csv without the audio column",
               lambda s, o: _csv(s, "participant_id,video\nP01,P01.mp4\nP02,P02.mp4\n"), names="participants.csv"),
        Attack("duplicate_participant", "one participant id twice",
               lambda s, o: _csv(s, "participant_id,video,audio\nP01,P01.mp4,P01.wav\nP01,P02.mp4,P02.wav\n"),
               names="participants.csv"),
        Attack("bad_participant_id", "participant id '../x'",
               lambda s, o: _csv(s, PARTS.replace("P02,P02", "../x,P02")), names="participants.csv"),
        Attack("participants_symlink", "participants.csv linked to a file outside the corpus",
               lambda s, o: _symlink(s / "participants.csv", o / "secret.csv"), names="participants.csv",
               security=True),
        Attack("media_symlink", "a video linked to a file outside the corpus",
               lambda s, o: _symlink(s / "P01.mp4", o / "P01.mp4"), names="P01.mp4", security=True),
        Attack("session_symlink", "the session folder is a link to a folder outside the corpus",
               lambda s, o: (shutil.copytree(s, o / "linked", dirs_exist_ok=True), shutil.rmtree(s),
                             s.symlink_to(o / "linked")), names="session_symlink", security=True),
        Attack("absolute_path", "video given as an absolute path outside the corpus",
               lambda s, o: _csv(s, PARTS.replace("P01.mp4", str(o / "P01.mp4"))), names="participants.csv",
               security=True),
        Attack("dotdot_path", "video given as ../../ path",
               lambda s, o: _csv(s, PARTS.replace("P01.mp4", "../../../outside/P01.mp4")),
               names="participants.csv", security=True),
        Attack("m3u8_video", "video is an HLS playlist naming an outside file",
               lambda s, o: ((s / "P01.m3u8").write_text(f"#EXTM3U\n#EXTINF:40,\n{o / 'P01.mp4'}\n#EXT-X-ENDLIST\n"),
                             _csv(s, PARTS.replace("P01.mp4", "P01.m3u8"))), names="P01.m3u8", security=True),
        Attack("playlist_in_mp4", "playlist text saved as .mp4",
               lambda s, o: (s / "P01.mp4").write_text(f"#EXTM3U\n#EXTINF:40,\n{o / 'P01.mp4'}\n#EXT-X-ENDLIST\n"),
               names="P01.mp4", security=True),
        Attack("ffconcat_in_mp4", "ffconcat list saved as .mp4",
               lambda s, o: (s / "P01.mp4").write_text(f"ffconcat version 1.0\nfile '{o / 'P01.mp4'}'\n"),
               names="P01.mp4", security=True),
        Attack("same_video_twice", "both participants point at one uncropped video",
               lambda s, o: _csv(s, PARTS.replace("P02,P02.mp4", "P02,P01.mp4")), names="participants.csv"),
        Attack("offset_huge", "audio_offset_s = 1e6",
               lambda s, o: _csv(s, "participant_id,video,audio,audio_offset_s\nP01,P01.mp4,P01.wav,1e6\n"
                                    "P02,P02.mp4,P02.wav,0\n"), names="participants.csv"),
        Attack("offset_nan", "audio_offset_s = nan",
               lambda s, o: _csv(s, "participant_id,video,audio,audio_offset_s\nP01,P01.mp4,P01.wav,nan\n"
                                    "P02,P02.mp4,P02.wav,0\n"), names="participants.csv"),
        Attack("offset_beyond_audio", "audio starts after the video ends (offset 45 s, 40 s call)",
               lambda s, o: _csv(s, "participant_id,video,audio,audio_offset_s\nP01,P01.mp4,P01.wav,45\n"
                                    "P02,P02.mp4,P02.wav,45\n")),
        Attack("loud_float_wav", "float WAV with amplitude 1e25", lambda s, o: _wav_float(s / "P01.wav", value=1e25),
               names="P01.wav"),
        Attack("nan_wav", "float WAV with NaN samples", lambda s, o: _nan_wav(s / "P01.wav"), names="P01.wav"),
        Attack("short_audio", "0.1 s of audio", lambda s, o: _wav_float(s / "P01.wav", n=1600)),
        Attack("short_video", "5 s video against 40 s of turns", lambda s, o: _cut_video(s / "P02.mp4", 5.0)),
        Attack("corrupt_video", "random bytes as .mp4", lambda s, o: (s / "P01.mp4").write_bytes(os.urandom(50000)),
               names="P01.mp4"),
        Attack("no_face_video", "a black video", lambda s, o: _black_video(s / "P01.mp4"), names="P01.mp4"),
        Attack("crop_outside", "crop rectangle outside the frame",
               lambda s, o: _csv(s, "participant_id,video,audio,crop_x,crop_y,crop_w,crop_h\n"
                                    "P01,P01.mp4,P01.wav,9000,9000,100,100\nP02,P02.mp4,P02.wav,0,0,64,64\n"),
               names="P01.mp4"),
        Attack("header_only_turns", "turns.csv with the header only",
               lambda s, o: _csv(s, "participant_id,start_s,end_s\n", name="turns.csv"), names="turns.csv"),
        Attack("turn_end_before_start", "a turn ending before it starts",
               lambda s, o: _csv(s, "participant_id,start_s,end_s\nP02,5,3\nP01,6,30\n", name="turns.csv"),
               names="turns.csv"),
        Attack("turn_unknown_person", "a turn of a participant not in participants.csv",
               lambda s, o: _csv(s, "participant_id,start_s,end_s\nP09,1,15\nP01,16,30\n", name="turns.csv"),
               names="turns.csv"),
        Attack("turn_not_a_number", "start_s = 'abc'",
               lambda s, o: _csv(s, "participant_id,start_s,end_s\nP02,abc,15\nP01,16,30\n", name="turns.csv"),
               names="turns.csv"),
        Attack("turns_latin1", "turns.csv in latin-1 with a label",
               lambda s, o: _csv(s, "participant_id,start_s,end_s,label\nP02,1,15,café\nP01,16,30,é\n", "latin-1",
                                 name="turns.csv"), expect="either", names="turns.csv"),
        Attack("eaf_xxe", "ELAN file with an external entity naming an outside file",
               lambda s, o: _eaf(s, XXE.replace("{outside}", str(o))), names="turns.eaf", security=True),
        Attack("eaf_billion_laughs", "ELAN file with nested entities", lambda s, o: _eaf(s, LAUGHS), names="turns.eaf"),
        Attack("two_turn_files", "turns.csv and turns.TextGrid",
               lambda s, o: (s / "turns.TextGrid").write_text("x"), names="turns"),
        Attack("formula_session", "session folder named '=HYPERLINK(...)'", lambda s, o: None,
               session='=HYPERLINK("http:x")', names="HYPERLINK"),
        Attack("hidden_session", "session folder named '.hidden'", lambda s, o: None, session=".hidden",
               names=".hidden"),
        Attack("id_collision_a", "session 'k' with participant 'x_L1' (ids may contain '_')",
               lambda s, o: _csv(s, "participant_id,video,audio\nx_L1,P01.mp4,P01.wav\nL2,P02.mp4,P02.wav\n")
               or _csv(s, (s / "turns.csv").read_text().replace("P01", "x_L1").replace("P02", "L2"), name="turns.csv"),
               expect="accept", session="k"),
        Attack("id_collision_b", "session 'k_x' with participant 'L1': same segment ids as 'k' before",
               lambda s, o: _csv(s, "participant_id,video,audio\nL1,P01.mp4,P01.wav\nL2,P02.mp4,P02.wav\n")
               or _csv(s, (s / "turns.csv").read_text().replace("P01", "L1").replace("P02", "L2"), name="turns.csv"),
               expect="accept", session="k_x"),
    ]


def pristine_corpus(root: Path) -> Path:
    """The quick sample corpus, generated once per bench run and copied for each use."""
    from pipeline.sample.generate import make_sample_corpus

    corpus = root / "pristine"
    if not (corpus / ".complete.json").is_file():
        make_sample_corpus(corpus, quick=True)
    return corpus


def prepare(work: Path, attacks: list[Attack], pristine: Path) -> tuple[Path, Path]:
    corpus, outside = work / "corpus", work / "outside"
    shutil.copytree(pristine, corpus)
    outside.mkdir(exist_ok=True)
    (outside / "secret.csv").write_text(f"participant_id,video,audio\n{SECRET},P01.mp4,P01.wav\n")
    for name in ("P01.mp4", "P01.wav"):
        shutil.copy(corpus / "sessions" / BASE / name, outside / name)
    for attack in attacks:
        folder = corpus / "sessions" / (attack.session or attack.name)
        shutil.copytree(corpus / "sessions" / BASE, folder)
        attack.mutate(folder, outside)
    return corpus, outside


def build(corpus: Path, out: Path, *extra: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "BuildSplits", "--corpus", str(corpus),
           "--out", str(out), "--local-scheduler", *extra]
    env = {**os.environ, "LHG_PROGRESS": "off"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)


def leaked(out: Path) -> list[str]:
    """Output files that contain the marker of the outside file."""
    hits = []
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".csv", ".md", ".json", ".txt", ".log") and \
                SECRET in path.read_text(errors="replace"):
            hits.append(str(path.relative_to(out)))
    return hits


def classify(attack: Attack, rejected, segments, card: str, leaks: list[str]) -> tuple[str, str]:
    sid = attack.session or attack.name
    rows = rejected[rejected["session_id"].str.lstrip("'") == sid.lstrip("'")] if len(rejected) else rejected
    if not len(rows) and attack.session.startswith("="):
        rows = rejected[rejected["session_id"] == "'" + sid]
    n_seg = int((segments["session_id"] == sid).sum())
    text = " | ".join(f"{r.file} {r.where}: {r.reason}"[:160] for r in rows.itertuples())
    if attack.security and (n_seg or leaks):
        return "security", f"{n_seg} segments built from outside data; leaks: {leaks}"
    if attack.session.startswith("="):
        raw = [c for c in rejected["session_id"] if c.startswith("=")]
        return ("security", f"unescaped cell {raw[0]!r}") if raw else (
            ("handled", f"escaped: {rows['session_id'].iloc[0]!r}") if len(rows) else ("silent", "no row"))
    if attack.session.startswith("."):
        return ("handled", "reported in the data card") if sid in card or len(rows) else ("silent", "skipped, no word")
    if attack.expect == "accept":
        return ("handled", f"{n_seg} segments") if n_seg and not len(rows) else ("silent", f"{n_seg} segments; {text}")
    if not len(rows):
        return ("handled", f"accepted, {n_seg} segments") if attack.expect == "either" and n_seg else (
            "silent", f"{n_seg} segments, no rejected.csv row")
    if n_seg and attack.expect != "either":
        return "partial", f"quarantined but {n_seg} segments kept: {text}"
    named = attack.names.lower() in text.lower() if attack.names else True
    return ("handled" if named else "partial"), text


def run_input_attacks(work: Path, only: set[str], pristine: Path) -> list[tuple[str, str, str, str]]:
    import pandas as pd

    attacks = [a for a in input_attacks() if not only or a.name in only]
    work.mkdir(parents=True)
    corpus, _ = prepare(work, attacks, pristine)
    out = work / "out"
    started = time.perf_counter()
    done = build(corpus, out)
    print(f"build over {len(attacks)} attacked sessions + 3 good ones: rc {done.returncode}, "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    if done.returncode != 0:  # find which attacks crash it: one build each, beside the good sessions
        if len(attacks) == 1:
            error = next((ln for ln in reversed(done.stderr.splitlines()) if "Error" in ln), "")
            return [(attacks[0].name, attacks[0].what, "crashed", f"build failed: {error.strip()[:200]}")]
        rows = []
        for i, attack in enumerate(attacks):
            rows += run_input_attacks(work / f"alone-{i:02d}", {attack.name}, pristine)
        return [r for r in rows if r[0] != "good_sessions_survive"]
    dataset = out / "dataset"
    rejected = pd.read_csv(dataset / "rejected.csv", dtype=str, keep_default_na=False)
    segments = pd.read_parquet(dataset / "segments.parquet")
    card = (dataset / "data_card.md").read_text()
    leaks = leaked(out)
    rows = [(a.name, a.what, *classify(a, rejected, segments, card, leaks)) for a in attacks]
    good = {s: int((segments["session_id"] == s).sum()) for s in ("s01", "s02", "s03")}
    rows.append(("good_sessions_survive", "the 3 good sessions are built beside the bad ones",
                 "handled" if all(good.values()) else "silent", str(good)))
    return rows


# ---- faults on a built dataset ----------------------------------------------------------------------------


def fault_attacks(work: Path, pristine: Path) -> list[tuple[str, str, str, str]]:
    """Concurrent runs, damaged outputs and bad settings on the good sample corpus."""
    from pipeline.dataset.manifest import dataset_problems

    corpus, out = pristine, work / "good_out"
    rows = []
    # two builds into one --out whose command lines differ
    cmd = [sys.executable, "-m", "luigi", "--module", "pipeline", "BuildSplits", "--corpus", str(corpus),
           "--out", str(out)]
    env = {**os.environ, "LHG_PROGRESS": "off"}
    first = subprocess.Popen([*cmd, "--local-scheduler"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=env, cwd=REPO)
    second = subprocess.Popen([*cmd, "--local-scheduler", "--workers", "1"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
    results = [p.communicate(timeout=3600) for p in (first, second)]
    codes = [first.returncode, second.returncode]
    problems = dataset_problems(out / "dataset", checksums=True)
    locked = any("being written by another run" in r[1] for r in results)
    rows.append(("concurrent_builds", "two builds into one --out, differing command lines",
                 "handled" if not problems and 0 in codes else "silent",
                 f"exit codes {codes}; {'one refused by the lock; ' if locked else ''}"
                 f"dataset {'intact' if not problems else problems[:2]}"))
    again = build(corpus, out)
    rows.append(("rerun_after_concurrent", "a later run over the same --out",
                 "handled" if again.returncode == 0 and not dataset_problems(out / "dataset", checksums=True)
                 else "silent", f"rc {again.returncode}"))
    rows += _damaged_outputs(corpus, out)
    rows += _bad_settings(corpus, work)
    rows += _model_faults(out / "dataset", work / "runs")
    return rows


def _outcome(name: str, what: str, action: Callable[[], object], expected: type[BaseException],
             words: str) -> tuple[str, str, str, str]:
    """Run `action`: handled when it raises `expected` whose message contains `words`."""
    try:
        action()
    except expected as exc:
        return (name, what, "handled" if words in str(exc) else "partial", str(exc).replace("\n", " ")[:160])
    except Exception as exc:  # noqa: BLE001 - the point is to see what escapes
        return name, what, "crashed", f"{type(exc).__name__}: {str(exc)[:140]}"
    return name, what, "silent", "no error"


def _model_faults(dataset: Path, runs: Path) -> list[tuple[str, str, str, str]]:
    """Kills and damage around training and evaluation, on a small model trained for 2 epochs."""
    import torch

    from pipeline.evaluation.evaluate import EvalConfig, evaluate
    from pipeline.model.checkpoints import CheckpointError
    from pipeline.model.network import load_checkpoint, save_checkpoint
    from pipeline.model.train import preset, train

    cfg = preset("tiny", n_blocks=1, width=16, n_heads=2, epochs=2)
    train(dataset, runs / "straight", cfg, progress=False)
    straight = load_checkpoint(runs / "straight" / "last")[0].state_dict()
    rows = []
    # killed between writing the weights and the training state (the write of train_state.pt fails)
    import pipeline.model.checkpoints as checkpoints

    real_write = checkpoints._write_file

    def dies_at_train_state(path: Path, write):
        if path.name == "train_state.pt" and not dies_at_train_state.fired:
            dies_at_train_state.fired = True
            raise KeyboardInterrupt("killed")
        return real_write(path, write)

    dies_at_train_state.fired = False
    checkpoints._write_file = dies_at_train_state
    try:
        train(dataset, runs / "killed", cfg, progress=False)
    except KeyboardInterrupt:
        pass
    finally:
        checkpoints._write_file = real_write
    train(dataset, runs / "killed", cfg, progress=False)
    resumed = load_checkpoint(runs / "killed" / "last")[0].state_dict()
    same = all(torch.equal(straight[k], resumed[k]) for k in straight)
    rows.append(("kill_between_weights_and_state", "killed between a checkpoint's weights and its training state",
                 "handled" if same else "silent", "resumed to the uninterrupted run's weights" if same else "differs"))
    config = runs / "straight" / "best" / "config.json"
    saved = config.read_text()
    config.write_text(saved[:50])
    rows.append(_outcome("corrupt_config_json", "config.json cut short", lambda: load_checkpoint(config.parent),
                         CheckpointError, "config.json"))
    config.write_text(saved)
    state = runs / "straight" / "last" / "train_state.pt"
    state_bytes = state.read_bytes()
    state.write_bytes(state_bytes[: len(state_bytes) // 2])
    rows.append(_outcome("corrupt_train_state", "train_state.pt cut short, then resumed with more epochs",
                         lambda: train(dataset, runs / "straight", preset("tiny", n_blocks=1, width=16, n_heads=2,
                                                                          epochs=3), progress=False),
                         CheckpointError, "train_state.pt"))
    state.write_bytes(state_bytes)
    model, extra = load_checkpoint(runs / "straight" / "best")
    with torch.no_grad():
        next(iter(model.parameters())).view(-1)[0] = float("nan")
    save_checkpoint(model, runs / "nan_weights", extra)
    eval_cfg = EvalConfig(video_samples=0, rtf_samples=1, figure_samples=1)
    try:
        results = evaluate(dataset, {"good": runs / "straight", "nan": runs / "nan_weights"}, runs / "eval", eval_cfg)
        ok = "nan" in results.get("non_finite", {}) and all(v is not None for v in results["table"]["good"].values())
        rows.append(("nan_checkpoint", "a checkpoint with NaN weights evaluated beside a good one",
                     "handled" if ok else "silent", "reported as non-finite, the good model scored" if ok else
                     str(results.get("non_finite"))[:120]))
    except Exception as exc:  # noqa: BLE001
        rows.append(("nan_checkpoint", "a checkpoint with NaN weights", "crashed", f"{type(exc).__name__}: {exc}"[:160]))
    return rows


def _damaged_outputs(corpus: Path, out: Path) -> list[tuple[str, str, str, str]]:
    from pipeline.cli import main as cli
    from pipeline.common.errors import CorruptOutputError
    from pipeline.dataset.loader import LHGDataset
    from pipeline.dataset.manifest import dataset_problems, read_manifest

    rows = []
    dataset = out / "dataset"
    shard = dataset / next(n for n in read_manifest(dataset)["files"] if n.endswith(".safetensors"))
    original = shard.read_bytes()
    shard.unlink()
    done = build(corpus, out)
    ok = done.returncode == 0 and shard.read_bytes() == original
    rows.append(("deleted_shard", "a shard deleted after the build", "handled" if ok else "silent",
                 "the next run rewrote it byte-identical" if ok else f"rc {done.returncode}"))
    data = bytearray(original)
    data[-5] ^= 0x10
    shard.write_bytes(bytes(data))
    code = cli(["verify", str(dataset)])
    rows.append(("flipped_bit", "one bit flipped in a shard", "handled" if code == 1 else "silent",
                 f"`python -m pipeline verify` exit {code}"))
    shard.write_bytes(original)
    saved = (dataset / "segments.parquet").read_bytes()
    (dataset / "segments.parquet").write_bytes(b"PAR1" + b"\x00" * 64)
    try:
        LHGDataset(dataset, "train")
        rows.append(("corrupt_segments", "segments.parquet overwritten", "silent", "opened"))
    except CorruptOutputError as exc:
        rows.append(("corrupt_segments", "segments.parquet overwritten", "handled", str(exc)[:120]))
    except Exception as exc:  # noqa: BLE001 - the point is to see what escapes
        rows.append(("corrupt_segments", "segments.parquet overwritten", "partial", f"{type(exc).__name__}: {exc}"))
    (dataset / "segments.parquet").write_bytes(saved)
    assert not dataset_problems(dataset, checksums=True)
    return rows


def _bad_settings(corpus: Path, work: Path) -> list[tuple[str, str, str, str]]:
    rows = []
    for name, flags in (("max_gap_nan", ["--max-gap-s", "nan"]), ("split_ratios_two", ["--split-ratios", "0.5,0.5"]),
                        ("split_ratios_negative", ["--split-ratios", "1.2,-0.1,-0.1"])):
        out = work / f"settings_{name}"
        started = time.perf_counter()
        done = build(corpus, out, *flags, timeout=600)
        work_files = list((out / "work").rglob("*.parquet")) if (out / "work").exists() else []
        message = next((ln for ln in done.stderr.splitlines() if "--" in ln and ("must" in ln or "expected" in ln)),
                       "")
        ok = done.returncode != 0 and not work_files and message
        rows.append((name, " ".join(flags), "handled" if ok else "crashed",
                     f"rc {done.returncode} after {time.perf_counter() - started:.0f} s, {len(work_files)} "
                     f"feature files; {message.strip()[:120]}"))
    return rows


def main() -> None:
    from pipeline.common.logs import filter_native_stderr, quiet_native_logs

    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default="")
    parser.add_argument("--only", default="", help="comma-separated attack names (input attacks)")
    parser.add_argument("--skip-faults", action="store_true")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lhg-attacks-"))
    quiet_native_logs()
    filter_native_stderr()
    only = {n for n in args.only.split(",") if n}
    pristine = pristine_corpus(work)
    rows = run_input_attacks(work / "inputs", only, pristine)
    if not args.skip_faults:
        rows += fault_attacks(work, pristine)
    width = max(len(r[0]) for r in rows)
    for name, _what, outcome, evidence in rows:
        print(f"{name:<{width}}  {outcome:<8}  {evidence[:200]}")
    totals = {k: sum(r[2] == k for r in rows) for k in ("handled", "partial", "crashed", "silent", "security")}
    print(f"\n{len(rows)} tried: " + ", ".join(f"{v} {k}" for k, v in totals.items()))
    print(f"work folder: {work}")


if __name__ == "__main__":
    main()
