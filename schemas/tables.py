"""Table contracts: pyarrow schemas for every Parquet file the pipeline writes, and validators.

A validator raises `SchemaError` naming the table and the offending column, so a corrupted or
hand-edited file fails loudly instead of feeding garbage to training.
"""

from __future__ import annotations

from dataclasses import fields

import pyarrow as pa

from schemas.conventions import HEAD_FEATURE_COLUMNS, head_feature_columns
from schemas.records import Rejection


class SchemaError(ValueError):
    pass


def head_features_schema(channels: tuple[str, ...] | None = None) -> pa.Schema:
    """Per-participant head track at exactly 12.5 fps (`time_s` = k * 0.08)."""
    cols = HEAD_FEATURE_COLUMNS if channels is None else head_feature_columns(channels)
    return pa.schema([
        pa.field("time_s", pa.float64(), nullable=False),
        pa.field("detected", pa.bool_(), nullable=False),
        pa.field("interpolated", pa.bool_(), nullable=False),
        pa.field("valid", pa.bool_(), nullable=False),
        *(pa.field(c, pa.float32()) for c in cols),
    ])


SEGMENTS_SCHEMA = pa.schema([
    pa.field("segment_id", pa.string(), nullable=False),
    pa.field("session_id", pa.string(), nullable=False),
    pa.field("listener_id", pa.string(), nullable=False),
    pa.field("speaker_id", pa.string(), nullable=False),
    pa.field("start_s", pa.float64(), nullable=False),
    pa.field("end_s", pa.float64(), nullable=False),
    pa.field("n_frames", pa.int32(), nullable=False),
    pa.field("stretch_id", pa.string(), nullable=False),
    pa.field("overlap_extra", pa.bool_(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("invalid_frac", pa.float32(), nullable=False),
    pa.field("shard", pa.string(), nullable=False),
    pa.field("offset", pa.int64(), nullable=False),
])
"""`<out>/dataset/segments.parquet`: one row per listener segment. `segment_id` is
`<session_id>~<listener_id>~<start frame, 7 digits>` plus `_o` for an overlapping window
(`pipeline.conversation.segments.segment_id`): ids may contain `_`, never `~`, so the fields are
unambiguous. `stretch_id` has the same form (the stretch's first frame). `shard`/`offset` locate the
segment's frames (rows offset .. offset+n_frames) in the per-split tensor shards. `stretch_id`
names the listener stretch (one listener, one speaker's floor, no listener interjection) the
segment was cut from: the segments with `overlap_extra` False tile it in time order.
`overlap_extra` marks the extra overlapping training windows (`--train-stride-s`, train split only)."""

TALK_SCHEMA = pa.schema([
    pa.field("participant_id", pa.string(), nullable=False),
    pa.field("start_s", pa.float64(), nullable=False),
    pa.field("end_s", pa.float64(), nullable=False),
    pa.field("kind", pa.string(), nullable=False),
])
"""`work/sessions/<session>-...talk.parquet`: every annotated talk span of a session; `kind` is
`talk` or `backchannel` (the floor rules). Source of the per-frame shard flags."""

REJECTED_COLUMNS = [f.name for f in fields(Rejection)]
"""`<out>/dataset/rejected.csv`: one row per quarantined input with the reason (a `Rejection`)."""

SPLITS = ("train", "valid", "test")


def validate_table(table: pa.Table, schema: pa.Schema, name: str) -> pa.Table:
    """Check columns and types (extra columns are allowed); return the table cast to the schema order."""
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise SchemaError(f"{name}: missing column(s) {missing}")
    for field in schema:
        col = table.column(field.name)
        if not col.type.equals(field.type):
            raise SchemaError(f"{name}: column {field.name} has type {col.type}, expected {field.type}")
        if not field.nullable and col.null_count:
            raise SchemaError(f"{name}: column {field.name} has {col.null_count} null value(s)")
    return table.select([f.name for f in schema] + [c for c in table.column_names if c not in schema.names])


def validate_talk(table: pa.Table, name: str) -> pa.Table:
    table = validate_table(table, TALK_SCHEMA, name)
    kinds = set(table.column("kind").to_pylist()) - {"talk", "backchannel"}
    if kinds:
        raise SchemaError(f"{name}: column kind has value(s) {sorted(kinds)}, expected talk or backchannel")
    return table


def validate_segments(table: pa.Table) -> pa.Table:
    table = validate_table(table, SEGMENTS_SCHEMA, "segments.parquet")
    df = table.select(["segment_id", "start_s", "end_s", "n_frames", "split"]).to_pandas()
    if df["segment_id"].duplicated().any():
        raise SchemaError(f"segments.parquet: duplicate segment_id {df.segment_id[df.segment_id.duplicated()].iloc[0]}")
    bad = df[(df.end_s <= df.start_s) | (df.n_frames <= 0)]
    if len(bad):
        raise SchemaError(f"segments.parquet: segment {bad.segment_id.iloc[0]} has end <= start or no frames")
    unknown = set(df["split"]) - set(SPLITS)
    if unknown:
        raise SchemaError(f"segments.parquet: unknown split value(s) {sorted(unknown)}")
    return table
