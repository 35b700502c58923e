"""Matching a worklist query as Orthanc's ``HierarchicalMatcher``, the query's JSON forms, and the IDs of
the folder of worklists."""
from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from broker.core.encodings import LATIN1
from broker.core.worklist_query import (
    WorklistMatcher,
    dataset_from_json,
    dataset_json,
    fix_query,
    restricted_to_issuer,
)
from broker.core.worklists import check_id
from broker.errors import ErrorCode, OrthancError
from tests.support.worklist_samples import query, worklist


def two_steps() -> Dataset:
    """A worklist with two scheduled steps, on CT1 and MR1."""
    ds = worklist("P1", "Doe^John", "CT1")
    second = Dataset()
    second.ScheduledStationAETitle, second.Modality, second.ScheduledProcedureStepStartDate = "MR1", "MR", "20240116"
    ds.ScheduledProcedureStepSequence.append(second)
    return ds


def test_a_sequence_matches_when_one_item_does_and_answers_the_matching_items_only():
    matcher = WorklistMatcher.of(query(station_aet="MR1"), case_sensitive_pn=False)
    assert matcher.matches(two_steps())
    answer = matcher.extract(two_steps())
    assert answer[0x00400100] == [{"0008,0060": "MR", "0040,0001": "MR1", "0040,0002": "20240116"}]
    assert not WorklistMatcher.of(query(station_aet="XR1"), False).matches(two_steps())


def test_an_absent_sequence_matches_and_an_absent_tag_does_not():
    without_steps = worklist("P1", "Doe^John", "CT1")
    del without_steps.ScheduledProcedureStepSequence
    assert WorklistMatcher.of(query(station_aet="MR1"), False).matches(without_steps)
    asked = query(station_aet="")
    asked.AdmissionID = "A*"
    assert not WorklistMatcher.of(asked, False).matches(two_steps())


def test_an_empty_or_empty_item_sequence_answers_the_whole_sequence():
    for items in ([], [Dataset()]):
        asked = Dataset()
        asked.ScheduledProcedureStepSequence = Sequence(items)
        answer = WorklistMatcher.of(asked, False).extract(two_steps())
        assert [item["0040,0001"] for item in answer[0x00400100]] == ["CT1", "MR1"]
        assert "0040,0009" in answer[0x00400100][0]  # every tag of the item, not only those asked


def test_a_sequence_of_two_items_is_a_bad_request():
    asked = query()
    asked.ScheduledProcedureStepSequence.append(Dataset())
    with pytest.raises(OrthancError) as raised:
        WorklistMatcher.of(asked, False)
    assert raised.value.code is ErrorCode.BAD_REQUEST


def test_case_is_ignored_for_person_names_only():
    assert WorklistMatcher.of(query(PatientName="DOE^JOHN"), False).matches(two_steps())
    assert not WorklistMatcher.of(query(PatientName="DOE^JOHN"), True).matches(two_steps())
    assert not WorklistMatcher.of(query(AccessionNumber="acc1"), False).matches(two_steps())


def test_fix_query_drops_an_empty_referenced_study_item():
    asked = query()
    item = Dataset()
    item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = "", ""
    asked.ReferencedStudySequence = Sequence([item])
    fix_query(asked)
    assert len(asked.ReferencedStudySequence) == 0
    ours = worklist("P1", "Doe^John", "CT1")  # its ReferencedStudySequence is empty
    assert WorklistMatcher.of(asked, False).matches(ours)


def test_the_json_of_the_query_and_back():
    asked = query(station_aet="CT1", PatientName="Doe*")
    asked.PregnancyStatus = None
    asked.add_new(0x00091010, "LO", "private")
    table = dataset_json(asked)
    assert table == {"0010,0010": "Doe*", "0010,0020": "", "0008,0050": "", "0010,21c0": None,
                     "0040,0100": [{"0040,0001": "CT1", "0040,0002": "", "0008,0060": ""}]}
    rebuilt = dataset_from_json({"PatientName": "Doe*", "0040-0100": [{"00400001": "CT1"}]}, LATIN1)
    assert rebuilt.PatientName == "Doe*" and rebuilt.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT1"
    for bad in ([], "x", {"PatientID": True}, {"NoSuchTag": ""}):
        with pytest.raises(OrthancError):
            dataset_from_json(bad, LATIN1)


def test_filter_issuer_aet_replaces_the_station_and_drops_an_empty_pregnancy_status():
    asked = query(station_aet="OTHER")
    asked.PregnancyStatus = None
    restricted = restricted_to_issuer(asked, "CT1", LATIN1)
    assert restricted.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT1"
    assert "PregnancyStatus" not in restricted
    without = Dataset()
    without.PatientID = ""
    assert restricted_to_issuer(without, "CT1", LATIN1).ScheduledProcedureStepSequence[0].ScheduledStationAETitle \
        == "CT1"


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "a/b", "a\\b", "a\x00b"])
def test_ids_that_are_not_plain_file_names_are_refused(bad):
    with pytest.raises(OrthancError) as raised:
        check_id(bad)
    assert raised.value.code is ErrorCode.BAD_REQUEST
    assert check_id("5fdc7404-f9dc-4798-b6e1-8f715e2f9e71") == "5fdc7404-f9dc-4798-b6e1-8f715e2f9e71"
