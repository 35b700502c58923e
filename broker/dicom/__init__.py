"""The DICOM front end: pynetdicom's AE as C-ECHO and C-STORE SCP."""
