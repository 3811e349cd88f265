"""Credentials never reach a person's screen, a log, a JSON event or a report.

``redact(text)`` is the one function every message goes through (``MedAIError`` applies it to its
message and hint; events, logs and reports apply it to what they write). It removes:

- the user name and password of any URL (``https://alice:pw@host/`` -> ``https://***@host/``);
- secret-looking query parameters (``?token=...``, ``&X-Amz-Signature=...``) and ``Authorization``
  header values;
- the literal password (and ``user:password``) of every credential URL MedAI knows about: the
  ``MEDAI_MIRROR`` and proxy environment variables and any URL given to :func:`remember_url`
  (``--mirror``). Why literal too: libraries quote fragments of a URL without its scheme, e.g.
  ``http.client.InvalidURL: nonnumeric port: 'S3cretPW@mirror.example'``, which no URL pattern sees.
"""

from __future__ import annotations

import os
import re
import urllib.parse

MASK = "***"
# Environment variables whose value may be a URL holding credentials.
SECRET_URL_VARS = ("MEDAI_MIRROR", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                   "all_proxy")
# A password shorter than this is only removed where it sits in URL syntax (user:pw@ / pw@host):
# removing a 2-letter word everywhere would garble messages.
MIN_LITERAL = 4

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)([^/\s?#'\"<>]*)@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:password|passwd|pwd|pass|token|access_token|auth|api_?key|key|secret|sig|signature|"
    r"x-amz-signature|x-amz-credential|x-amz-security-token)=)[^&;#\s'\"<>]+")
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?(?:basic|bearer|token)?\s*)[A-Za-z0-9+/=._~\-]+")

_remembered: set = set()


def remember_url(url) -> None:
    """Treat the credentials of ``url`` (e.g. a ``--mirror`` value) as secrets from now on."""
    if url:
        _remembered.add(str(url))


def _credentials(url: str) -> list:
    """[(user, password, host)] of one URL (percent-encoded and decoded forms); [] without credentials."""
    try:
        parts = urllib.parse.urlsplit(url.strip())
    except ValueError:
        return []
    netloc = parts.netloc
    if "@" not in netloc:
        return []
    userinfo, host = netloc.rsplit("@", 1)
    user, _, password = userinfo.partition(":")
    out = [(user, password, host)]
    decoded = (urllib.parse.unquote(user), urllib.parse.unquote(password), host)
    if decoded != out[0]:
        out.append(decoded)
    return out


def _known_secrets() -> list:
    urls = [os.environ.get(v) for v in SECRET_URL_VARS] + sorted(_remembered)
    found = []
    for url in urls:
        if url:
            found += _credentials(url)
    return found


def redact(text) -> str:
    """``text`` without credentials (see module doc). Non-strings are converted with ``str``."""
    if text is None:
        return text
    s = str(text)
    for user, password, host in _known_secrets():
        for literal in (f"{user}:{password}@{host}", f"{password}@{host}", f"{user}:{password}@"):
            if password and literal in s:
                s = s.replace(literal, f"{MASK}@{host}" if literal.endswith(host) else f"{MASK}@")
        if len(password) >= MIN_LITERAL:
            s = s.replace(password, MASK)
        if len(user) >= MIN_LITERAL and password:
            s = s.replace(f"{user}:", f"{MASK}:")
    s = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", s)
    s = _SECRET_PARAM.sub(lambda m: f"{m.group(1)}{MASK}", s)
    s = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{MASK}", s)
    return s


def redact_obj(obj):
    """``obj`` (dicts, lists, tuples, strings: a JSON event or a report row) with every string redacted."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k) if isinstance(k, str) else k: redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


def redact_url(url: str) -> str:
    """One URL without its user name and password (``https://user:pass@host/`` -> ``https://***@host/``)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" in parts.netloc:
        url = urllib.parse.urlunsplit(parts._replace(netloc=MASK + "@" + parts.netloc.rsplit("@", 1)[1]))
    return redact(url)


class RedactingFilter:
    """A ``logging`` filter that redacts each record's final message (attach it to handlers: a
    handler's filters see the records of every logger that reaches it)."""

    def filter(self, record) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string: leave the record to logging
            return True
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, ()
        return True


def install_log_redaction(logger=None) -> None:
    """Redact everything the handlers of ``logger`` (default: the root logger) write."""
    import logging

    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
