"""The options of the bounds on input and of the DICOM server's connections (issue 7, findings 3 and 4)."""
from __future__ import annotations

from pathlib import Path

import pytest

from broker.config import Config, ConfigError
from broker.core.bounds import MIB, InflateBound, InputBounds


def config(**raw: object) -> Config:
    return Config.from_json(dict(raw), Path("/tmp"))


def test_defaults() -> None:
    defaults = config()
    assert defaults.input_bounds == InputBounds(max_body=4096 * MIB, max_elements=1_000_000,
                                                inflate=InflateBound(max_size=4096 * MIB, max_ratio=100.0))
    assert (defaults.dicom_scp_timeout, defaults.dicom_scp_acse_timeout, defaults.dicom_scp_maximum_associations) \
        == (30.0, 10.0, 32)


def test_sizes_are_in_mb_and_zero_means_no_limit() -> None:
    bounds = config(MaximumHttpBodySize=1, MaximumInflatedSize=0, MaximumDicomElements=0,
                    MaximumCompressionRatio=0).input_bounds
    assert bounds == InputBounds(max_body=MIB, max_elements=None, inflate=InflateBound(max_size=None, max_ratio=None))
    assert config(DicomScpTimeout=0).dicom_scp_timeout is None  # as Orthanc


@pytest.mark.parametrize("raw", [{"MaximumHttpBodySize": -1}, {"MaximumHttpBodySize": "1"},
                                 {"MaximumDicomElements": 1.5}, {"MaximumCompressionRatio": 0.5},
                                 {"DicomScpAcseTimeout": 0}, {"DicomScpTimeout": -1},
                                 {"DicomScpMaximumAssociations": 0}])
def test_bad_values_stop_start_up_naming_the_option(raw: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match=f"Option '{next(iter(raw))}' has value"):
        config(**raw)
