"""Recycling: when an instance makes the store pass ``MaximumStorageSize`` or ``MaximumPatientCount``,
the patients that received an instance the longest ago are deleted, protected ones never, nor the
patient of the new instance, in the transaction that stores it. When nothing more can go, the new
instance is refused (Orthanc's ``FullStorage``, 500) and nothing is deleted. With
``MaximumStorageMode: Reject`` (Orthanc 1.11), nothing is ever deleted: the instance that would pass a
limit is refused.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from broker.core.index import IndexTransaction, ResourceRow
from broker.core.levels import Level
from broker.errors import ErrorCode, OrthancError


@dataclass(frozen=True)
class StorageLimits:
    max_size: int | None = None      # bytes of attachments; None: no limit
    max_patients: int | None = None
    overwrite: bool = False          # ``OverwriteInstances``: a known instance replaces the stored one
    reject: bool = False             # ``MaximumStorageMode: Reject``: refuse, never recycle


NO_LIMITS = StorageLimits()


@dataclass
class Deletion:
    deleted: list[ResourceRow]
    files: list[str]
    remaining: ResourceRow | None    # the closest ancestor that still exists


def _over(tx: IndexTransaction, limits: StorageLimits) -> bool:
    if limits.max_patients is not None and tx.counts()[Level.PATIENT] > limits.max_patients:
        return True
    return limits.max_size is not None and tx.total_size() > limits.max_size


def recycle(tx: IndexTransaction, limits: StorageLimits, keep: int,
            delete: Callable[[IndexTransaction, ResourceRow, str], Deletion], now: str) -> list[str]:
    """Delete patients until the limits hold again; the files to remove once committed."""
    files: list[str] = []
    if limits.reject and _over(tx, limits):
        raise OrthancError(ErrorCode.FULL_STORAGE, "The storage is full: MaximumStorageSize or MaximumPatientCount "
                           "is reached, and MaximumStorageMode is Reject (nothing is recycled)")
    while _over(tx, limits):
        victim = tx.oldest_unprotected_patient(other_than=keep)
        if victim is None:
            raise OrthancError(ErrorCode.FULL_STORAGE, "Cannot recycle more patients")
        files.extend(delete(tx, victim, now).files)
    return files
