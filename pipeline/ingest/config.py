"""Settings of the Zoom import (README "From a Zoom recording"): declared once here, read by the
`import-zoom` subcommand and the `ImportZoom` Luigi task alike."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.common.settings import check_settings, fraction, setting

ON_LAYOUT_CHANGE = ("refuse", "split")
MEDIA_MODES = ("link", "copy")
DRIFT_MODES = ("correct", "warn")


def _safe_or_empty(value: object) -> str | None:
    from schemas.inputs import SAFE_ID

    return None if value == "" or SAFE_ID.match(str(value)) else "letters, digits, '.', '_' or '-' only"


@dataclass(frozen=True)
class ImportConfig:
    session_id: str = setting("", "session folder name to write (default: zoom-<date>-<time>-<meeting id> from the "
                                  "Zoom folder name)", check=_safe_or_empty)
    participants: str = setting("", "CSV table zoom_name,participant_id mapping Zoom names (from the "
                                    "'Audio Record/audio<Name><digits>.m4a' files) to stable ids across sessions")
    tile_order: tuple[str, ...] = setting((), "participant ids in tile reading order (left to right, top to bottom): "
                                              "skips the audio-visual who-is-who decision")
    video: str = setting("", "which video of the Zoom folder to import, when it holds several gallery videos")
    on_layout_change: str = setting("refuse", "when the gallery layout changes during the call: refuse (name the "
                                              "times) or split into one session per layout",
                                    choices=ON_LAYOUT_CHANGE)
    media: str = setting("link", "put media into the corpus as hard links (copies where the file system cannot "
                                 "link) or as copies", choices=MEDIA_MODES)
    drift: str = setting("correct", "a track whose clock drifts more than one head frame (80 ms) over the call: "
                                    "correct (write a resampled FLAC on the video clock) or only warn",
                         choices=DRIFT_MODES)
    min_identity_confidence: float = setting(0.99, "who-is-who: below this confidence the import stops and asks for "
                                                  "--tile-order instead of guessing", check=fraction)
    face_model: str = setting("", "optional MediaPipe FaceLandmarker .task file for tile and mouth tracking")
    overwrite: bool = setting(False, "replace a session folder of the same id that came from another import")

    def __post_init__(self) -> None:
        check_settings(self)
