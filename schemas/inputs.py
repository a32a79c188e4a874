"""The corpus input contract (what users hand to `BuildSplits --corpus DIR`).

    <corpus>/sessions/<session_id>/
        participants.csv                      PARTICIPANTS_* columns below
        turns.csv | turns.eaf | turns.TextGrid   at most one (TURN_FILES); none = automatic turns
        <media files>                         paths in participants.csv are relative to the session

participants.csv
    participant_id  a person, stable across sessions (splits are drawn per person)
    video           any frame rate / container OpenCV + ffmpeg decode
    audio           this participant's own audio: wav/m4a/mp3, mono or stereo, 8-48 kHz
    crop_x,crop_y,crop_w,crop_h   optional pixel rectangle of this person's gallery-view tile
    audio_offset_s  optional: video time at which the audio's first sample plays (default 0)

turns.csv: participant_id,start_s,end_s[,label] (seconds); turns.eaf: ELAN, one tier per
participant id; turns.TextGrid: Praat, one interval tier per participant id, non-empty intervals
are talk. Ids: letters, digits, '.', '_', '-' (SAFE_ID); anything else is rejected.
"""

from __future__ import annotations

import re

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TURN_FILES = ("turns.csv", "turns.eaf", "turns.TextGrid")
PARTICIPANTS_REQUIRED = ("participant_id", "video", "audio")
PARTICIPANTS_CROP = ("crop_x", "crop_y", "crop_w", "crop_h")
PARTICIPANTS_OPTIONAL = (*PARTICIPANTS_CROP, "audio_offset_s")
TURNS_CSV_REQUIRED = ("participant_id", "start_s", "end_s")
TURNS_CSV_OPTIONAL = ("label",)
