"""JSON answers as XML, for clients that ask for ``application/xml`` (Orthanc's ``JsonToXml``): the
value is the element ``root``; a list's values are ``item`` elements, an object's are named by their
keys; scalars are their JSON text (``null``, ``true``, ``42``)."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any


def wants_xml(accept: str) -> bool:
    """Orthanc answers XML as soon as the Accept header names ``application/xml``."""
    return "application/xml" in accept.lower()


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _fill(ET.SubElement(element, str(key)), child)
    elif isinstance(value, list):
        for child in value:
            _fill(ET.SubElement(element, "item"), child)
    elif isinstance(value, str):
        element.text = value
    else:
        element.text = json.dumps(value)


def json_to_xml(value: Any) -> bytes:
    root = ET.Element("root")
    _fill(root, value)
    ET.indent(root, space="  ")
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8",
                                                                      xml_declaration=False) + b"\n"
