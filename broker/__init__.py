"""luabroker: an Orthanc-compatible DICOM server whose Lua scripts run in sandboxed processes.

Dependencies point one way: front ends (``broker.http``, ``broker.dicom``) → core (``broker.core``,
``broker.rest``) → scripting bridge (``broker.scripting``) → sandbox (the ``sandbox`` package).
"""
