"""Render `rejected.csv` and the data card (Markdown + PNG plots) from a build summary."""

from __future__ import annotations

import json
from importlib import metadata, resources
from pathlib import Path
from string import Template

import numpy as np
import pandas as pd

from pipeline.common.errors import quote_input
from pipeline.common.fsutil import atomic_path, write_csv_atomic, write_text_atomic
from schemas.records import Rejection
from schemas.tables import REJECTED_COLUMNS, SPLITS

# `data_cards/template.md` at the top of the repository, shipped in the wheel as package data.
TEMPLATE = resources.files("data_cards") / "template.md"
PACKAGES = ("numpy", "pandas", "pyarrow", "mediapipe", "opencv-contrib-python", "luigi", "dask", "torch",
            "transformers", "safetensors", "imageio-ffmpeg")


def write_rejected(path: str | Path, rows: list[Rejection]) -> None:
    ordered = sorted(rows, key=lambda r: (r.session_id, r.participant_id, r.stage))
    write_csv_atomic(path, [r.to_dict() for r in ordered], REJECTED_COLUMNS, input_text=True)


def _versions() -> str:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return ", ".join(found)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _plots(dataset_dir: Path, segments: pd.DataFrame, talk_s: dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = segments["end_s"] - segments["start_s"]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    present = [s for s in SPLITS if (segments["split"] == s).any()]
    ax.hist([lengths[segments["split"] == s] for s in present], bins=[6 + 0.5 * i for i in range(11)],
            stacked=True, label=[f"{s} ({int((segments['split'] == s).sum())})" for s in present])
    ax.set_xlabel("segment length incl. 1 s context [s]")
    ax.set_ylabel("segments")
    ax.legend()
    _save(fig, dataset_dir / "segment_lengths.png")

    minutes = segments.assign(m=lengths / 60).pivot_table(index="listener_id", columns="split", values="m",
                                                          aggfunc="sum", fill_value=0.0)
    people = sorted(set(minutes.index) | set(talk_s))
    minutes = minutes.reindex(people, fill_value=0.0)
    fig, ax = plt.subplots(figsize=(6.5, 0.5 * len(people) + 2.2))
    y = np.arange(len(people))
    left = np.zeros(len(people))
    for split in SPLITS:
        if split in minutes:
            ax.barh(y + 0.2, minutes[split], height=0.4, left=left, label=f"listening in segments ({split})")
            left += minutes[split].to_numpy()
    ax.barh(y - 0.2, [talk_s.get(p, 0.0) / 60 for p in people], height=0.4, color="0.6",
            label="annotated talk")
    ax.set_yticks(y, people)
    ax.set_xlabel("minutes")
    ax.set_title("per-participant activity")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
    _save(fig, dataset_dir / "participant_activity.png")


SSL_MODES = {
    "none": "bidirectional (the paper's HuBERT-NAR): every frame sees past and future audio",
    "attention": "self-attention masked to the past (the paper's setting); the positional convolution "
                 "still sees 63 future frames (1.26 s) and GroupNorm uses whole-recording statistics",
    "strict": "exactly causal: sliding-window causal attention, past-only positional convolution and "
              "cumulative GroupNorm statistics; a frame never depends on audio after its 25 ms window",
}


def ssl_section(summary: dict) -> str:
    sets = summary.get("ssl") or {}
    if not sets:
        return ("None in this build (add `--ssl-models DIR_OR_ID[,...] --ssl-causal none|attention|strict`).")
    hours = sum(summary["hours_per_split"].values()) or float("nan")
    call_hours = sum(st.get("duration_s", 0) for st in summary["sessions"].values()) / 3600 or float("nan")
    rows = ["| feature set | model | weights sha256 | mode | hidden states x dim | dtype | MB per hour of calls | "
            "MB per hour of segments | on disk | chunked vs one pass (max abs / feature RMS) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name, entry in sorted(sets.items()):
        spec = entry["spec"]
        check = (spec.get("chunking_check") or [None])[0]
        diff = (f"{check['max_abs_diff']:.2e} / {check['feature_rms']:.2e} ({check['excerpt_s']} s, "
                f"{check['chunk_s']} s chunks)") if check else "not measured"
        stored = "once (hard links to work/)" if entry.get("hard_linked") else "twice (copies of work/)"
        rows.append(f"| `{name}` | {spec['model']} | {spec['weights_sha256'][:16]} | {spec['mode']} | "
                    f"{spec.get('hidden_states')} x {spec.get('dim')} | {spec['dtype']} | "
                    f"{entry['bytes'] / 1e6 / call_hours:.0f} | {entry['bytes'] / 1e6 / hours:.0f} | {stored} | {diff} |")
    modes = sorted({e["spec"]["mode"] for e in sets.values()})
    text = "\n".join(rows) + "\n\n" + "\n".join(f"- `{m}`: {SSL_MODES[m]}." for m in modes)
    return text + ("\n\nSpeaker SSL hidden states, 4 frames (20 ms) per head frame: the waveform is "
                   "left-padded by 80 samples, so frames 4k..4k+3 end inside head frame k. Stored per "
                   "(model, mode) in `ssl/<name>/`, read with `LHGDataset(..., ssl=name)`. Only the frames "
                   "segments use are stored, once per speaker and call (overlapping segments share them); a "
                   "call hour has two tracks. transformers " + str(next(iter(sets.values()))["spec"].get(
                       "transformers_version")) + ".")


def skipped_section(skipped: list[dict[str, str]]) -> str:
    """Entries of `sessions/` that were not read as sessions (hidden, not a folder), each with the reason."""
    if not skipped:
        return ""
    rows = [f"| {quote_input(e['name']).replace('|', '/')} | {e['reason']} |" for e in skipped]
    return ("\n\nEntries of `sessions/` not read as sessions (not quarantined, not in `rejected.csv`):\n\n"
            "| entry | why |\n|---|---|\n" + "\n".join(rows))


def turns_section(summary: dict) -> str:
    """Which sessions use human turns and which automatic ones (and where those are exported)."""
    inputs = summary.get("inputs", {})
    if not inputs:
        return "No session."
    exports: dict[str, list[str]] = {}
    for name in summary.get("annotations", []):
        exports.setdefault(Path(name).stem, []).append(f"`{name}`")
    rows = ["| session | turns | automatic | exported for correction |", "|---|---|---|---|"]
    for sid, info in sorted(inputs.items()):
        auto = info["turns"] == "automatic"
        source = "from each participant's own track" if auto else info["turns"]
        rows.append(f"| {sid} | {source} | {'yes' if auto else 'no'} | {', '.join(sorted(exports.get(sid, []))) or '-'} |")
    n_auto = sum(1 for info in inputs.values() if info["turns"] == "automatic")
    text = (f"{n_auto} of {len(inputs)} session(s) use automatic turns (a session folder without a turns file "
            "gets its talk spans from each participant's own audio track: voice activity with the other person's "
            "bleed suppressed, README \"Automatic turns\"; the floor rules apply on top as for human turns).")
    if n_auto:
        text += (" Their turns are exported under `annotations/` (Praat TextGrid and ELAN .eaf, one tier per "
                 "participant); a corrected file saved in the session folder as `turns.TextGrid` (or any turns "
                 "file) takes precedence on the next build, which recomputes that session only.")
    return text + "\n\n" + "\n".join(rows)


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f} %"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0f}"


def qa_section(dataset_dir: Path, summary: dict) -> str:
    """The annotation-QA table (one row per session and tier), its plot, and what the columns mean."""
    records = summary.get("annotation_qa") or {}
    mode = summary["config"].get("qa", {}).get("mode", "off")
    if mode == "off" or not records:
        (dataset_dir / "annotation_qa.png").unlink(missing_ok=True)
        return ("Off (`--annotation-qa off`)." if mode == "off" else "No session with a human turns file.")
    rows = ["| session | tier | annotated s | detected own talk s | detected talk annotated | annotated talk "
            "detected | onset / offset (ms) | on the other's speech | longest untranscribed | flag |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    flagged = 0
    for sid, qa in sorted(records.items()):
        if qa.get("status") != "ok":
            rows.append(f"| {sid} | - | | | | | | | | not checked: {qa.get('reason', '').replace('|', '/')} |")
            continue
        tiers_flagged = {p["participant_id"] for p in qa["problems"]}
        flagged += bool(tiers_flagged)
        for pid, f in sorted(qa["participants"].items()):
            o0, o1 = f["on_other_speech_at"]
            u0, u1 = f["untranscribed_at"]
            flag = ("**" + ("quarantined" if mode == "quarantine" else "check") + "**") if pid in tiers_flagged else ""
            rows.append(f"| {sid} | {pid} | {f['annotated_s']:g} | {f['detected_s']:g} | "
                        f"{_pct(f['detected_annotated'])} | {_pct(f['annotated_detected'])} | "
                        f"{_ms(f['onset_ms'])} / {_ms(f['offset_ms'])} | {f['on_other_speech_s']:g} s "
                        f"({_pct(f['on_other_speech'])}{f'; longest {o0:g}-{o1:g} s' if o1 > o0 else ''}) | "
                        f"{f['untranscribed_max_s']:g} s{f' ({u0:g}-{u1:g} s)' if u1 > u0 else ''} | {flag} |")
    _qa_plot(dataset_dir, records)
    return (f"Human turn files checked against the voice activity of each participant's own track (`--annotation-qa "
            f"{mode}`): {flagged} of {len(records)} session(s) with gross disagreements"
            f"{' (quarantined, see below)' if mode == 'quarantine' and flagged else ''}. Detected own talk is the "
            "automatic turns of the same audio; onset / offset is detected minus annotated (median over annotated "
            "spans); *on the other's speech* is annotated talk where this track is quiet but another person "
            "talks (a tier given to the wrong person); *untranscribed* is detected own talk with no annotated "
            "talk.\n\n![Annotation QA](annotation_qa.png)\n\n" + "\n".join(rows))


def _qa_plot(dataset_dir: Path, records: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, covered, detected, other = [], [], [], []
    for sid, qa in sorted(records.items()):
        for pid, f in sorted(qa.get("participants", {}).items()):
            labels.append(f"{sid}/{pid}")
            covered.append(100 * (f["detected_annotated"] or 0))
            detected.append(100 * (f["annotated_detected"] or 0))
            other.append(100 * (f["on_other_speech"] or 0))
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(labels) + 1.8))
    y = np.arange(len(labels))
    for k, (values, text) in enumerate(((covered, "detected own talk that is annotated"),
                                        (detected, "annotated talk with detected own talk"),
                                        (other, "annotated talk on the other's speech"))):
        ax.barh(y + (k - 1) * 0.27, values, height=0.27, label=text)
    ax.set_yticks(y, labels)
    ax.set_xlabel("% of frames")
    ax.set_xlim(0, 100)
    ax.set_title("annotation QA per session and tier")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=1)
    _save(fig, dataset_dir / "annotation_qa.png")


CUT_RULE_TEXT = {"equal": "near-equal consecutive pieces covering the stretch",
                 "greedy": "consecutive 11 s pieces, the remainder kept when at least 6 s"}


def _stride_text(stride_s: float, n_extra: int) -> str:
    if not stride_s:
        return "segments do not overlap."
    return (f"the train split also holds {n_extra} overlapping 11 s windows starting every {stride_s:g} s "
            f"within each stretch (`overlap_extra`; never in valid or test).")


def write_data_card(dataset_dir: str | Path, summary: dict) -> Path:
    dataset_dir = Path(dataset_dir)
    segments = pd.read_parquet(dataset_dir / "segments.parquet")
    talk_s: dict[str, float] = {}
    for st in summary["sessions"].values():
        for pid, seconds in st.get("talk_s", {}).items():
            talk_s[pid] = talk_s.get(pid, 0.0) + seconds
    _plots(dataset_dir, segments, talk_s)
    cfg = summary["config"]
    counts = summary["segments_per_split"]
    hours = summary["hours_per_split"]
    listeners = summary["listeners_per_split"]
    split_table = "\n".join([
        "| segments | " + " | ".join(str(counts[s]) for s in SPLITS) + " |",
        "| hours | " + " | ".join(f"{hours[s]:.3f}" for s in SPLITS) + " |",
        "| listeners | " + " | ".join(", ".join(listeners[s]) or "-" for s in SPLITS) + " |",
    ]) + "".join(f"\n\n**Empty split.** {w}" for w in summary.get("split_report", {}).get("warnings", []))
    inputs_rows = []
    for sid, info in sorted(summary["inputs"].items()):
        inputs_rows.append(f"| {sid} | {info['turns']} | participants.csv | {info['participants_csv_sha256'][:16]} |")
        inputs_rows.append(f"| {sid} | | {info['turns']} | {info['turns_sha256'][:16]} |")
        for pid, files in sorted(info["media"].items()):
            inputs_rows.append(f"| {sid} | {pid} | {files['video']} | {files['video_sha256'][:16]} |")
            inputs_rows.append(f"| {sid} | {pid} | {files['audio']} | {files['audio_sha256'][:16]} |")
    rejected = summary["rejected"]
    rejected_table = ("None." if not rejected else "\n".join(
        ["| session | participant | stage | file | where | reason |", "|---|---|---|---|---|---|"]
        + [f"| {r['session_id']} | {r.get('participant_id', '')} | {r.get('stage', '')} | {Path(r['file']).name} "
           f"| {r.get('where', '')} | {r['reason'].replace('|', '/')} |" for r in rejected])
    ) + skipped_section(summary.get("skipped_entries", []))
    stats = summary["sessions"].values()
    dropped: dict[str, int] = {}
    for st in stats:
        for reason, n in st.get("dropped_reasons", {}).items():
            dropped[reason] = dropped.get(reason, 0) + n
    participants = set().union(*(set(st.get("talk_s", {})) for st in stats)) if stats else set()
    ds = cfg["dataset"]
    text = Template(TEMPLATE.read_text()).substitute(
        build_id=summary["build_id"], corpus=summary["corpus"], split_table=split_table,
        n_sessions=sum(1 for st in stats if st), n_participants=len(participants),
        recorded_hours=f"{sum(st.get('duration_s', 0) for st in stats) / 3600:.3f}",
        disjoint=ds["disjoint"],
        disjoint_explained="a person is listener in one split only" if ds["disjoint"] == "listener"
        else "a person appears in one split only, in any role",
        ratios="/".join(str(r) for r in ds["ratios"]), seed=ds["seed"],
        n_dropped=sum(dropped.values()), dropped_reasons=", ".join(f"{k}: {v}" for k, v in dropped.items()) or "none",
        n_rejected=len(rejected), channels=", ".join(cfg["head"]["channels"]),
        head_dim=3 * len(cfg["head"]["channels"]), max_gap_s=cfg["head"]["max_gap_s"],
        fbank_dtype=ds["fbank_dtype"], merge_gap_s=cfg["session"]["merge_gap_s"],
        backchannel_max_s=cfg["session"]["backchannel_max_s"], floor_hold_s=cfg["session"]["floor_hold_s"],
        cut_rule=cfg["session"]["cut_rule"], cut_rule_explained=CUT_RULE_TEXT[cfg["session"]["cut_rule"]],
        stride_text=_stride_text(cfg["session"]["train_stride_s"], summary.get("overlap_extra_segments", 0)),
        max_invalid_pct=f"{100 * cfg['session']['max_invalid_frac']:g}",
        inputs_table="\n".join(inputs_rows), rejected_table=rejected_table,
        config_json=json.dumps(cfg, indent=2), versions=_versions(), ssl_section=ssl_section(summary),
        turns_section=turns_section(summary), qa_section=qa_section(dataset_dir, summary))
    path = dataset_dir / "data_card.md"
    write_text_atomic(path, text)
    return path
