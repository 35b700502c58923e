"""Views of a resource computed from the files of its instances: its DICOM module
(``/{level}/{id}/module``, ``/studies/{id}/module-patient``), the tags all its instances share
(``shared-tags``), the tags of each instance (``instances-tags``), its statistics, and the document of
an Encapsulated PDF instance (``/instances/{id}/pdf``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from broker.core.create import ENCAPSULATED_PDF
from broker.core.dicom_file import read_dataset
from broker.core.dicom_json import Charset, JsonFormat, dataset_to_json, leaf_value, tag_key
from broker.core.dicom_parse import DicomFile
from broker.core.index import AttachmentSizes
from broker.core.levels import Level
from broker.core.modules import MODULE_TAGS
from broker.core.store import Store
from broker.core.tags import SOP_CLASS_UID

MEGA_BYTES = 1024 * 1024
MIME_TYPE_OF_ENCAPSULATED_DOCUMENT = 0x00420012
ENCAPSULATED_DOCUMENT = 0x00420011


def _json(store: Store, parsed: DicomFile, fmt: JsonFormat, keep: set[int] | frozenset[int] | None = None,
          ignore_length: frozenset[int] = frozenset()) -> dict[str, Any]:
    elements = parsed.elements if keep is None else [e for e in parsed.elements if e.tag in keep]
    return dataset_to_json(elements, fmt, Charset.of(parsed.elements, store.default_encoding),
                           ignore_length=ignore_length)


def module(store: Store, level: Level, public_id: str, module_level: Level, fmt: JsonFormat,
           ignore_length: frozenset[int] = frozenset()) -> dict[str, Any]:
    """The tags of ``module_level``'s module, read from the first instance of the resource."""
    instance = store.related(level, public_id, Level.INSTANCE)[0] if level is not Level.INSTANCE else public_id
    return _json(store, store.parsed_instance(instance), fmt, MODULE_TAGS[module_level], ignore_length)


def shared_tags(store: Store, level: Level, public_id: str, fmt: JsonFormat) -> dict[str, Any]:
    """The top-level text tags whose value is the same in every instance (Orthanc's ``shared-tags``)."""
    instances = store.related(level, public_id, Level.INSTANCE) if level is not Level.INSTANCE else [public_id]
    shared: dict[str, Any] | None = None
    first: DicomFile | None = None
    for instance in instances:
        parsed = store.parsed_instance(instance)
        strings = {key: tag["Value"] for key, tag in _json(store, parsed, JsonFormat.FULL).items()
                   if tag["Type"] == "String"}
        if shared is None:
            shared, first = strings, parsed
        else:
            shared = {key: value for key, value in shared.items() if strings.get(key) == value}
    if first is None or shared is None:
        return {}
    return _json(store, first, fmt, {e.tag for e in first.elements if tag_key(e.tag) in shared})


def instances_tags(store: Store, level: Level, public_id: str, fmt: JsonFormat,
                   ignore_length: frozenset[int] = frozenset()) -> dict[str, Any]:
    instances = store.related(level, public_id, Level.INSTANCE) if level is not Level.INSTANCE else [public_id]
    return {instance: store.instance_tags(instance, fmt, ignore_length) for instance in instances}


@dataclass(frozen=True)
class ResourceStatistics:
    counts: dict[Level, int]
    sizes: AttachmentSizes

    def to_json(self, level: Level) -> dict[str, Any]:
        """Orthanc's answer: the counts of the levels below, and the sizes."""
        result: dict[str, Any] = {f"Count{child.plural.capitalize()}": self.counts[child]
                                  for child in Level if child > level}
        sizes = self.sizes
        for name, size in (("DiskSize", sizes.disk), ("UncompressedSize", sizes.uncompressed),
                           ("DicomDiskSize", sizes.dicom_disk), ("DicomUncompressedSize", sizes.dicom_uncompressed)):
            result[name] = str(size)
            result[name + "MB"] = size // MEGA_BYTES
        return result


def statistics(store: Store, level: Level, public_id: str) -> ResourceStatistics:
    counts = {child: len(store.related(level, public_id, child)) if child > level else 0 for child in Level}
    return ResourceStatistics(counts, store.attachment_sizes(level, public_id))


def encapsulated_pdf(store: Store, instance_id: str) -> bytes | None:
    """The PDF of an Encapsulated PDF instance, or None if the instance is none (Orthanc's
    ``ParsedDicomFile::ExtractPdf``): its SOP class and MIME type must be the PDF ones, read as Orthanc
    reads strings. The document's last byte goes unless it is CR or LF: it is taken for the pad byte of
    an odd length, since a PDF ends with ``%%EOF`` and a newline."""
    parsed = store.parsed_instance(instance_id)
    charset = Charset.of(parsed.elements, store.default_encoding)
    top = parsed.top_level()

    def text(tag: int) -> str | None:
        return leaf_value(top[tag], charset) if tag in top else None

    if text(SOP_CLASS_UID) != ENCAPSULATED_PDF or text(MIME_TYPE_OF_ENCAPSULATED_DOCUMENT) != "application/pdf":
        return None
    document = read_dataset(store.read_instance(instance_id)[0]).get(ENCAPSULATED_DOCUMENT)
    if document is None:
        return None
    pdf = bytes(document.value or b"")
    return pdf if pdf[-1:] in (b"", b"\n", b"\r") else pdf[:-1]
