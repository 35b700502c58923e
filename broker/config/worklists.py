"""The ``Worklists`` section: the modality worklist server, configured as Orthanc's worklist plugins::

    "Worklists": {
      "Enable": false,                    // serve C-FIND on the Modality Worklist model, and /worklists
      "Database": "./WorklistsDatabase",  // the folder of the *.wl files ("Directory" since Orthanc 1.12.10)
      "FilterIssuerAet": false,           // a worklist matches only if its ScheduledStationAETitle is the
                                          // calling AET
      "LimitAnswers": 0,                  // the most answers (0: no limit)
      "SetStudyInstanceUidIfMissing": true  // POST /worklists/create adds a StudyInstanceUID when none is given
    }

Orthanc refuses to start when the worklists are enabled without a folder; so does luabroker. A relative
folder is relative to the configuration file, as ``StorageDirectory``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from broker.config.options import ConfigError, Section


@dataclass(frozen=True)
class WorklistsSettings:
    enabled: bool = False
    database: Path | None = None
    filter_issuer_aet: bool = False
    limit_answers: int = 0
    study_uid_if_missing: bool = True


def read_worklists(options: Section, base_dir: Path) -> WorklistsSettings:
    section = options.section("Worklists")
    if not section.option("Enable", bool, False):
        return WorklistsSettings()
    name = "Database" if "Database" in section else "Directory"
    folder = Path(section.option(name, str, ""))
    if not str(folder) or str(folder) == ".":
        raise ConfigError(f"Option '{section.label('Database')}' must contain a path when "
                          f"'{section.label('Enable')}' is true")
    return WorklistsSettings(
        enabled=True,
        database=folder if folder.is_absolute() else base_dir / folder,
        filter_issuer_aet=section.option("FilterIssuerAet", bool, False),
        limit_answers=section.option("LimitAnswers", int, 0, lambda v: v >= 0, ">= 0"),
        study_uid_if_missing=section.option("SetStudyInstanceUidIfMissing", bool, True),
    )
