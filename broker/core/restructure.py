"""Moving instances between studies, as Orthanc 1.9.4's ``/studies/{id}/split`` and ``/merge``.

* Split: the named series and instances of a study go to a new study (new study, series and instance
  UIDs; ``Replace`` and ``Remove`` apply to the copies).
* Merge: the named studies, series and instances join a target study: the tags of the patient and
  study modules are those of the target's first instance (a tag it lacks is removed), the series and
  instances get new UIDs.

The copies are stored as uploads; the originals are deleted unless ``KeepSource``.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from broker.core.dicom_file import read_dataset, write_dataset
from broker.core.elements import ElementFactory
from broker.core.levels import Level
from broker.core.modules import MODULE_TAGS
from broker.core.origin import Origin
from broker.core.store import Store
from broker.core.tags import parse_tag
from broker.errors import ErrorCode, OrthancError

_STUDY_LEVEL_TAGS = MODULE_TAGS[Level.PATIENT] | MODULE_TAGS[Level.STUDY]


@dataclass
class Move:
    """What a split or a merge did (Orthanc's job content)."""
    target_study: str
    target_uid: str
    split: bool
    count: int = 0
    created: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A split names the UID of its new study too; a merge only the target study."""
        result = {"Description": "REST API", "FailedInstancesCount": 0, "InstancesCount": self.count,
                  "TargetStudy": self.target_study}
        if self.split:
            result["TargetStudyUID"] = self.target_uid
        return result


def _copy(store: Store, instance: str, change: Any, series_uids: dict[str, str], origin: Origin) -> str:
    """Store a copy of ``instance`` changed by ``change(ds)``, in a new series per original series."""
    data, _ = store.read_instance(instance)
    ds = read_dataset(data)
    series = str(ds.get("SeriesInstanceUID", ""))
    series_uids.setdefault(series, generate_uid())
    change(ds)
    ds.SeriesInstanceUID = series_uids[series]
    ds.SOPInstanceUID = generate_uid()
    return store.store_instance(write_dataset(ds), origin).instance_id


def _finish(store: Store, move: Move, sources: Iterable[str], keep_source: bool) -> Move:
    if not keep_source:
        for instance in sources:
            store.delete(Level.INSTANCE, instance)
    return move


def require_study(store: Store, study: str, *, split: bool) -> None:
    """404 when the study to split, or to merge into, is unknown (Orthanc's job constructors)."""
    if not store.exists(Level.STUDY, study):
        raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Cannot split unknown study {study}" if split
                           else f"Cannot merge into an unknown study: {study}")


def split_sources(store: Store, study: str, series: list[str], instances: list[str]) -> list[str]:
    """The instances a split moves; 404 for a resource unknown (no details, as Orthanc) or elsewhere."""
    moved: list[str] = []
    for level, ids in ((Level.SERIES, series), (Level.INSTANCE, instances)):
        for public_id in ids:
            if not store.exists(level, public_id):
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            if store.related(level, public_id, Level.STUDY) != [study]:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE,
                                   f"This {level.label.lower()} does not belong to the study to be split: {public_id}")
            moved += store.related(level, public_id, Level.INSTANCE)
    return list(dict.fromkeys(moved))


def merge_sources(store: Store, study: str, resources: list[str]) -> list[str]:
    """The instances a merge moves; 404 for an unknown resource, the target itself, or one of its series
    or instances."""
    moved: list[str] = []
    for public_id in resources:
        if public_id == study:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Cannot merge a study into the same study: {study}")
        level = next((level for level in (Level.STUDY, Level.SERIES, Level.INSTANCE)
                      if store.exists(level, public_id)), None)
        if level is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE, f"Cannot find this resource: {public_id}")
        if store.related(level, public_id, Level.STUDY) == [study]:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE,
                               f"Cannot merge {level.label.lower()} {public_id} into its parent study {study}")
        moved += store.related(level, public_id, Level.INSTANCE)
    return list(dict.fromkeys(moved))


def split_study(store: Store, study: str, series: list[str], instances: list[str], replace: dict[str, Any],
                remove: list[str], keep_source: bool, origin: Origin) -> Move:
    require_study(store, study, split=True)
    moved = split_sources(store, study, series, instances)
    new_uid = generate_uid()
    removed = [parse_tag(name) for name in remove]

    def change(ds: Dataset) -> None:
        ds.StudyInstanceUID = new_uid
        factory = ElementFactory(ds, "")
        for name, value in replace.items():
            tag = parse_tag(name)
            ds[tag] = factory.make(tag, value, ds)
        for tag in removed:
            if tag in ds:
                del ds[tag]

    series_uids: dict[str, str] = {}
    move = Move("", new_uid, split=True)
    for instance in moved:
        move.created.append(_copy(store, instance, change, series_uids, origin))
        move.count += 1
    if move.created:
        move.target_study = store.related(Level.INSTANCE, move.created[0], Level.STUDY)[0]
    return _finish(store, move, moved, keep_source)


def merge_study(store: Store, study: str, resources: list[str], keep_source: bool, origin: Origin) -> Move:
    require_study(store, study, split=False)
    moved = merge_sources(store, study, resources)
    reference = read_dataset(store.read_instance(store.related(Level.STUDY, study, Level.INSTANCE)[0])[0])
    target_uid = str(reference.StudyInstanceUID)

    def change(ds: Dataset) -> None:
        for tag in _STUDY_LEVEL_TAGS:
            if tag in reference:
                ds[tag] = reference[tag]
            elif tag in ds:
                del ds[tag]

    series_uids: dict[str, str] = {}
    move = Move(study, target_uid, split=False)
    for instance in moved:
        move.created.append(_copy(store, instance, change, series_uids, origin))
        move.count += 1
    return _finish(store, move, moved, keep_source)
