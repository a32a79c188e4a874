"""Luigi wiring for the Zoom import: `luigi --module pipeline ImportZoom --zoom-dir DIR --corpus CORPUS`.

Thin: the decisions live in `pipeline.ingest.zoom`; the settings are generated from `ImportConfig`,
like the `import-zoom` subcommand's options. A BuildSplits run on the same corpus afterwards picks
the new session up incrementally.
"""

from __future__ import annotations

import json
from pathlib import Path

import luigi

from pipeline.common.settings import field_values
from pipeline.ingest.config import ImportConfig
from pipeline.ingest.zoom import import_record_path, import_zoom
from pipeline.ingest.zoom_files import default_session_id

from .params import option_values, settings_mixin

ImportSettings = settings_mixin("ImportSettings", ImportConfig)


class ImportZoom(ImportSettings, luigi.Task):
    """One Zoom recording folder -> `<corpus>/sessions/<id>/` and `<corpus>/imports/<id>.json`."""

    zoom_dir = luigi.Parameter(description="the Zoom recording folder")
    corpus = luigi.Parameter(description="corpus folder (the session goes to sessions/)")

    def config(self) -> ImportConfig:
        return ImportConfig(**field_values(ImportConfig, option_values(self, ImportConfig)))

    def output(self):
        sid = self.session_id or default_session_id(Path(self.zoom_dir))
        return luigi.LocalTarget(str(import_record_path(self.corpus, sid)))

    def complete(self) -> bool:
        """Done when the record exists and the source files still have the sizes it recorded."""
        path = Path(self.output().path)
        if not path.is_file():
            return False
        try:
            files = json.loads(path.read_text(encoding="utf-8"))["source"]["files"]
        except (OSError, ValueError, KeyError):
            return False
        root = Path(self.zoom_dir)
        return all((root / rel).is_file() and (root / rel).stat().st_size == entry.get("bytes")
                   for rel, entry in files.items())

    def run(self):
        import_zoom(self.zoom_dir, self.corpus, self.config())
