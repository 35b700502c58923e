"""What several test folders share: the running server, Orthanc peer and receivers (pytest plugins
registered in ``tests/conftest.py``), free ports, waiting, DICOM instances and samples, fake shims."""
