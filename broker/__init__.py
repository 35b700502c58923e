"""luabroker: an Orthanc-compatible DICOM server whose Lua scripts run in sandboxed processes.

Dependencies point one way: front ends (``broker.http``, ``broker.dicom``) → core (``broker.core``,
``broker.rest``) → scripting bridge (``broker.scripting``) → sandbox (the ``sandbox`` package).
"""
from importlib import metadata

try:
    #: luabroker's own version (read once: ``/system`` and every written file meta report it).
    __version__ = metadata.version("luabroker")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0.0.0"
