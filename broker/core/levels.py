"""The four resource levels of Orthanc's model: patient → study → series → instance."""
from __future__ import annotations

import enum

from broker.errors import ErrorCode, OrthancError


class Level(enum.IntEnum):
    PATIENT = 0
    STUDY = 1
    SERIES = 2
    INSTANCE = 3

    @property
    def label(self) -> str:
        """Orthanc's name of the level, as in ``"Type": "Series"``."""
        return _LABELS[self]

    @property
    def plural(self) -> str:
        """The REST collection: ``patients``, ``studies``, ``series``, ``instances``."""
        return _PLURALS[self]

    @property
    def children_key(self) -> str:
        """The key listing the children in Orthanc's JSON (``"Studies"``, ...); not for instances."""
        return _CHILDREN_KEYS[self]

    @property
    def parent(self) -> Level | None:
        return None if self is Level.PATIENT else Level(self - 1)

    @property
    def child(self) -> Level | None:
        return None if self is Level.INSTANCE else Level(self + 1)

    @classmethod
    def from_plural(cls, plural: str) -> Level:
        return _BY_PLURAL[plural]

    @classmethod
    def from_label(cls, label: str) -> Level:
        return _BY_LABEL[label]

    @classmethod
    def from_name(cls, name: str) -> Level:
        """Orthanc's ``StringToResourceType``: case-insensitive, singular or plural (``IMAGE`` too);
        ``KeyError`` otherwise."""
        return _BY_NAME[name.upper()]

    @classmethod
    def parse(cls, name: str) -> Level:
        """``from_name`` with the error of Orthanc's ``StringToResourceType``: 400
        ``ParameterOutOfRange``, "Unknown resource type"."""
        try:
            return cls.from_name(name)
        except KeyError:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown resource type: {name}") from None


_LABELS = {Level.PATIENT: "Patient", Level.STUDY: "Study", Level.SERIES: "Series", Level.INSTANCE: "Instance"}
_PLURALS = {Level.PATIENT: "patients", Level.STUDY: "studies", Level.SERIES: "series", Level.INSTANCE: "instances"}
_CHILDREN_KEYS = {Level.PATIENT: "Studies", Level.STUDY: "Series", Level.SERIES: "Instances"}
_BY_PLURAL = {plural: level for level, plural in _PLURALS.items()}
_BY_LABEL = {label: level for level, label in _LABELS.items()}
_BY_NAME = {"PATIENT": Level.PATIENT, "PATIENTS": Level.PATIENT, "STUDY": Level.STUDY, "STUDIES": Level.STUDY,
            "SERIES": Level.SERIES, "INSTANCE": Level.INSTANCE, "INSTANCES": Level.INSTANCE, "IMAGE": Level.INSTANCE,
            "IMAGES": Level.INSTANCE}
