"""Channel and group name rules, and the one-pass check-and-copy of message content."""

import re
import secrets

MAX_NAME_LENGTH = 100

_channel_name = re.compile(r"[a-zA-Z0-9\-_.]+([!?][a-zA-Z0-9\-_.]*)?", re.ASCII)
_group_name = re.compile(r"[a-zA-Z0-9\-_.]+", re.ASCII)


_known_channel_names = set()
_KNOWN_LIMIT = 20000


def check_positive_numbers(**values):
    """Raise ``ValueError`` naming the first of ``values`` that is not a positive number."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, not {value!r}")


def validate_channel_name(name, receive=False):
    """
    Return ``name`` if it is a valid channel name, else raise ``TypeError``.

    Letters, digits, ``-_.``, optionally one ``!`` (process-specific) or
    ``?`` (single reader), shorter than 100 characters. With ``receive``,
    a process-specific name must be the bare prefix (``"abc!"``).
    """
    # Sends go to the same names again and again: remember the good ones.
    if not receive and type(name) is str and name in _known_channel_names:
        return name
    if type(name) is not str:
        raise TypeError(f"channel name must be a str, not {type(name).__name__}: {name!r}")
    if len(name) >= MAX_NAME_LENGTH or not _channel_name.fullmatch(name):
        raise TypeError(
            f"invalid channel name {name!r}: use ASCII letters, digits, '-', '_', '.' "
            f"and at most one '!' or '?', fewer than {MAX_NAME_LENGTH} characters"
        )
    if receive and "!" in name and not name.endswith("!"):
        raise TypeError(
            f"cannot receive on {name!r}: receive on its process prefix "
            f"{name[:name.index('!') + 1]!r} instead"
        )
    if len(_known_channel_names) >= _KNOWN_LIMIT:
        _known_channel_names.clear()
    _known_channel_names.add(name)
    return name


class ReceiveNameChecker:
    """
    Checks the channel list of a ``receive`` (a list, each name valid to
    receive on), remembering lists already checked: receive loops pass the
    same few lists again and again.
    """

    def __init__(self, limit=1000):
        self._checked = {}
        self._limit = limit

    def __call__(self, channels):
        if isinstance(channels, str):
            raise TypeError("receive takes a list of channel names, not a str")
        key = tuple(channels)
        names = self._checked.get(key)
        if names is None:
            names = [validate_channel_name(c, receive=True) for c in key]
            if not names:
                raise TypeError("receive needs at least one channel name")
            if len(self._checked) >= self._limit:
                self._checked.clear()
            self._checked[key] = names
        return names


def validate_group_name(name):
    """Return ``name`` if it is a valid group name, else raise ``TypeError``."""
    if type(name) is not str:
        raise TypeError(f"group name must be a str, not {type(name).__name__}: {name!r}")
    if len(name) >= MAX_NAME_LENGTH or not _group_name.fullmatch(name):
        raise TypeError(
            f"invalid group name {name!r}: use ASCII letters, digits, '-', '_', '.', "
            f"fewer than {MAX_NAME_LENGTH} characters"
        )
    return name


def new_channel_name(pattern):
    """A fresh name for ``pattern`` (ending in ``!`` or ``?``) with 128 random bits."""
    if type(pattern) is not str or not pattern.endswith(("!", "?")):
        raise TypeError(f"new_channel pattern must end with '!' or '?': {pattern!r}")
    validate_channel_name(pattern)
    name = pattern + secrets.token_urlsafe(16)
    return validate_channel_name(name)


def process_prefix(channel):
    """The queue key of a channel: ``"abc!"`` for ``"abc!xyz"``, else the name itself."""
    i = channel.find("!")
    return channel if i < 0 else channel[: i + 1]


_ATOMS = frozenset((str, bytes, int, float, bool, type(None)))
_COERCE = ((bool, bool), (int, int), (float, float), (str, str), (bytes, bytes))


def _describe(path):
    return "".join(path) or "<message>"


def _copy(value, path):
    t = type(value)
    if t in _ATOMS:
        return value
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(
                    f"message key {k!r} in {_describe(path)} is a {type(k).__name__}; "
                    f"keys must be str"
                )
            path.append(f"[{k!r}]")
            out[k] = _copy(v, path)
            path.pop()
        return out
    if t is list or t is tuple:
        out = []
        for i, v in enumerate(value):
            path.append(f"[{i}]")
            out.append(_copy(v, path))
            path.pop()
        return out
    # Subclasses of the plain types (Django's SafeString, IntEnum, ...) travel
    # as their base type; bytearray and memoryview as bytes.
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, dict):
        return _copy(dict(value), path)
    for base, conv in _COERCE:
        if isinstance(value, base):
            return conv(value)
    raise TypeError(
        f"message value at {_describe(path)} is a {t.__name__}, which cannot be sent; "
        f"use str, bytes, int, float, bool, None, list or dict"
    )


class _NotPlain(Exception):
    """Something the fast copy doesn't handle: take the careful path."""


def _fast_copy(value):
    # The common case, per message on the hot path: plain types only, no
    # bookkeeping of where we are (the careful path names the culprit).
    t = type(value)
    if t is dict:
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _NotPlain
            out[k] = v if type(v) in _ATOMS else _fast_copy(v)
        return out
    if t is list or t is tuple:
        return [v if type(v) in _ATOMS else _fast_copy(v) for v in value]
    if t in _ATOMS:
        return value
    raise _NotPlain


def validate_content(message):
    """
    Check ``message`` and return a private deep copy of it.

    Content is a dict with str keys whose values are str, bytes, int, float,
    bool, None, lists and dicts of those (tuples become lists). Anything else
    raises ``TypeError`` naming where it is.
    """
    if type(message) is not dict:
        if isinstance(message, dict):
            message = dict(message)
        else:
            raise TypeError(f"a message must be a dict, not {type(message).__name__}")
    try:
        return _fast_copy(message)
    except (_NotPlain, RecursionError):
        return _copy(message, [])
