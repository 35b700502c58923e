"""Secrets of the configuration, hidden from what scripts see (docs/security.md).

Orthanc gives scripts the configuration as written, passwords included; here anyone allowed to run
execute-script could then read every user's password. Unless ``LuaExposeSecrets`` is true, what a
script reads of the configuration goes through ``redact``: same keys, same shape, each secret value
replaced by ``REDACTED``, so scripts that read URLs, user names or hosts keep working.

The rules are by shape, not by a list of known plugins, so that the options of a plugin we have never
heard of are covered too:

- the values of ``RegisteredUsers`` and of any ``HttpHeaders`` object (Orthanc's own ``/peers``
  answer hides header values too: they carry ``Authorization`` or API keys);
- a member whose name ends in a secret word (``Password``, ``Secret``, ``Token``, ``Key``, ``Pin``,
  ``Credentials``, ``ConnectionString`` ...), at any depth;
- the password of a web service in the array form ``[url, username, password, ...]``
  (``OrthancPeers``, ``DicomWeb.Servers``);
- the password in a URL's user information (``https://user:password@host/``).
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from broker.core.origin import Origin, RequestOrigin

REDACTED = "<redacted>"

#: Objects whose every value is a secret.
_SECRET_VALUES = frozenset({"RegisteredUsers", "HttpHeaders"})
#: A name is secret if it ends in one of these words, at a word boundary (``CertificateKeyPassword``,
#: ``db_password``, ``api-key``), or is one of the run-together forms.
_SECRET_WORDS = ("password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "tokens", "key", "keys",
                 "pin", "credential", "credentials", "connectionstring")
_SECRET_NAMES = frozenset({"apikey", "apitoken", "accesstoken", "privatekey", "secretkey", "connectionstring"})
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)([^/?#@]*)(@)")


def is_secret_name(name: str) -> bool:
    """True for a member name that says it holds a secret (``Password``, ``SecretKey``, ``Pin``)."""
    lowered = name.lower()
    if lowered in _SECRET_NAMES:
        return True
    for word in _SECRET_WORDS:
        start = len(name) - len(word)
        if lowered.endswith(word) and (start == 0 or name[start].isupper() or name[start - 1] in "_-. "):
            return True
    return False


def redact(value: Any) -> Any:
    """A copy of a JSON value with every secret replaced by ``REDACTED`` (the input is not changed)."""
    if isinstance(value, Mapping):
        return {key: _redact_member(key, item) for key, item in value.items()}
    if isinstance(value, list):
        if _is_web_service_array(value):
            return [redact(value[0]), value[1], REDACTED, *map(redact, value[3:])]
        return [redact(item) for item in value]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), value)
    return value


def shown_to(origin: Origin, config: Any, value: Any) -> Any:
    """``value`` as the caller may see it: redacted for a script's ``RestApi*`` call (origin Lua) unless
    ``LuaExposeSecrets``; as it is for an HTTP client, who gets Orthanc's answer."""
    if origin.request_origin is RequestOrigin.LUA and not config.lua_expose_secrets:
        return redact(value)
    return value


def hide_credentials(authorization: str) -> str:
    """An ``Authorization`` header with its credentials replaced (``Basic <redacted>``): the scheme stays."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return f"{scheme} {REDACTED}" if credentials else REDACTED


def _redact_member(key: Any, item: Any) -> Any:
    if isinstance(key, str) and key in _SECRET_VALUES and isinstance(item, Mapping):
        return {name: _hide(value) for name, value in item.items()}
    if isinstance(key, str) and is_secret_name(key):
        return _hide(item)
    return redact(item)


def _hide(value: Any) -> Any:
    """Every leaf replaced, the shape kept; ``null`` and booleans are no secret and stay."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, Mapping):
        return {key: _hide(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_hide(item) for item in value]
    return REDACTED


def _is_web_service_array(value: list[Any]) -> bool:
    """Orthanc's ``WebServiceParameters`` array form: ``[url, username, password]``."""
    return (len(value) >= 3 and all(isinstance(item, str) for item in value[:3])
            and value[0].lower().startswith(("http://", "https://")) and "://" not in value[1])
