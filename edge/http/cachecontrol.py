"""Cache-Control-style field parsing (RFC 9111 §5.2, §1.2.2; RFC 9213 targeted fields).

Pure functions of header values: no I/O, no clock.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from types import MappingProxyType
from typing import TypeAlias

from multidict import MultiMapping

from pinedge.edge.http.tokens import TCHAR
from pinedge.edge.http.tokens import TOKEN as _TOKEN

Headers: TypeAlias = MultiMapping[str]  # CIMultiDict[str] or CIMultiDictProxy[str]

DELTA_SECONDS_MAX = 2**31  # RFC 9111 §1.2.2
DIRECTIVES_MEMO_LENGTH = 256  # longer fields are parsed but not remembered (bounds the memo)

_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class Directives:
    """Parsed directives: lower-case name -> unquoted argument, or None when bare.

    `targeted` is True when they came from an RFC 9213 targeted field, whose
    use makes the cache ignore Expires as well as Cache-Control (RFC 9213 §2.2).
    """

    items: Mapping[str, str | None]
    targeted: bool = False

    def __contains__(self, name: str) -> bool:
        return name in self.items

    def delta_seconds(self, name: str) -> int | None:
        """The argument as delta-seconds (§1.2.2); None when absent, bare or invalid."""
        value = self.items.get(name)
        if value is None or not _DIGITS.fullmatch(value):
            return None
        return min(int(value), DELTA_SECONDS_MAX)

    def field_names(self, name: str) -> frozenset[str] | None:
        """Lower-case field names qualifying `name`; frozenset() when bare, None when absent.

        Members that are not field names are dropped, so a malformed list reads
        as unqualified: the stricter meaning for no-cache and private.
        """
        if name not in self.items:
            return None
        value = self.items[name]
        if value is None:
            return frozenset()
        members = (member.strip() for member in value.split(","))
        return frozenset(m.lower() for m in members if _TOKEN.fullmatch(m))


EMPTY = Directives(MappingProxyType({}))


def split_list(value: str, separator: str = ",") -> list[str]:
    """Split on `separator` outside quoted-strings (RFC 9110 §5.6.1, §5.6.4); members unstripped."""
    if '"' not in value:
        return value.split(separator)
    members: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char == separator:
            members.append(value[start:i])
            start = i + 1
    members.append(value[start:])
    return members


def unquote(value: str) -> str:
    """The content of a quoted-string (an unterminated one runs to the end); tokens as is."""
    if not value.startswith('"'):
        return value
    out: list[str] = []
    escaped = False
    for char in value[1:]:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            break
        else:
            out.append(char)
    return "".join(out)


def _parse_member(member: str) -> tuple[str, str | None] | None:
    name, eq, argument = member.partition("=")
    name = name.strip().lower()
    if not _TOKEN.fullmatch(name):
        return None
    # A recognisable name with a malformed argument still counts as present, so
    # `private=<junk>` keeps the response private; delta_seconds() rejects the junk.
    return name, unquote(argument.strip()) if eq else None


def parse_directives(values: Iterable[str]) -> Directives:
    """Parse every line of a Cache-Control-style field; the first occurrence of a name wins."""
    lines = (values,) if isinstance(values, str) else tuple(values)
    if not lines:
        return EMPTY
    if sum(map(len, lines)) <= DIRECTIVES_MEMO_LENGTH:
        return _remembered_directives(lines)
    return _read_directives(lines)


def _read_directives(lines: tuple[str, ...]) -> Directives:
    items: dict[str, str | None] = {}
    for line in lines:
        for member in split_list(line):
            parsed = _parse_member(member)
            if parsed is not None and parsed[0] not in items:
                items[parsed[0]] = parsed[1]
    return Directives(MappingProxyType(items)) if items else EMPTY


# An origin sends the same few Cache-Control values on every response, and each
# is read several times per fill: recent ones are remembered (Directives are immutable).
_remembered_directives = functools.lru_cache(maxsize=256)(_read_directives)


def request_directives(headers: Headers) -> Directives:
    """Request Cache-Control; without it, `Pragma: no-cache` means no-cache (§5.4)."""
    if "cache-control" in headers:
        return parse_directives(headers.getall("cache-control"))
    if "no-cache" in parse_directives(headers.getall("pragma", ())):
        return Directives(MappingProxyType({"no-cache": None}))
    return EMPTY


def response_directives(
    headers: Headers,
    targeted: Sequence[str] = ("CDN-Cache-Control", "Surrogate-Control"),
) -> tuple[Directives, str | None]:
    """The directives this cache obeys, and the lower-case targeted field they came from.

    The first field of `targeted` with a valid, non-empty value replaces
    Cache-Control (RFC 9213 §2.2); None as the name means Cache-Control was used.
    """
    for name in targeted:
        lines = headers.getall(name, ())
        if not lines:
            continue
        lower = name.lower()
        if lower == "surrogate-control":
            items = _surrogate_control(lines)
        else:
            items = parse_sf_dictionary(",".join(lines))
        if items:
            return Directives(MappingProxyType(items), targeted=True), lower
    return parse_directives(headers.getall("cache-control", ())), None


def _surrogate_control(lines: Sequence[str]) -> dict[str, str | None]:
    """Edge Architecture Surrogate-Control, minus what is not for us.

    `content="..."` declares processing capabilities, not caching policy, and a
    member with a `;device` suffix targets a device by name, which we are not.
    """
    untargeted = [m for line in lines for m in split_list(line) if not _targets_device(m)]
    items = dict(parse_directives([",".join(untargeted)]).items)
    items.pop("content", None)
    return items


def _targets_device(member: str) -> bool:
    return len(split_list(member, ";")) > 1


# RFC 8941 Structured Field Dictionary, reduced to what a cache directive needs.

_SF_KEY = re.compile(r"[a-z*][a-z0-9_.*-]*")
_SF_NUMBER = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,3})?")
_SF_TOKEN = re.compile(rf"[A-Za-z*][:/{TCHAR}]*")  # RFC 8941 §3.3.4
_SF_BYTES = re.compile(r":[A-Za-z0-9+/=]*:")
_SF_BOOLEAN = re.compile(r"\?[01]")


class _SFType(Enum):
    """The type of a Dictionary member's value (RFC 8941 §3.3, §3.1.1)."""

    INTEGER = auto()
    DECIMAL = auto()
    STRING = auto()
    TOKEN = auto()
    BYTES = auto()
    BOOLEAN = auto()
    INNER_LIST = auto()


# The type each directive's definition implies for its value (RFC 9213 §2.1):
# delta-seconds are Integers (never negative, RFC 9111 §1.2.2), field-name
# lists are Strings (or Tokens), the rest take no argument (Boolean true).
# Extension directives take any type.
_DIRECTIVE_TYPES: Mapping[str, frozenset[_SFType]] = MappingProxyType(
    {
        **dict.fromkeys(
            ("max-age", "s-maxage", "stale-while-revalidate", "stale-if-error"),
            frozenset({_SFType.INTEGER}),
        ),
        **dict.fromkeys(
            ("no-cache", "private"), frozenset({_SFType.BOOLEAN, _SFType.STRING, _SFType.TOKEN})
        ),
        **dict.fromkeys(
            (
                "no-store",
                "must-revalidate",
                "proxy-revalidate",
                "public",
                "immutable",
                "no-transform",
                "must-understand",
            ),
            frozenset({_SFType.BOOLEAN}),
        ),
    }
)

_SFValue: TypeAlias = tuple[_SFType, str | bool]


class _SFError(ValueError):
    pass


def parse_sf_dictionary(value: str) -> dict[str, str | None]:
    """Directives from an RFC 8941 Dictionary; {} when empty, malformed, or when a
    directive's value is not of the type its definition implies (RFC 9213 §2.1).

    Boolean true maps to None (a bare directive) and false removes the member;
    other values map to their text (strings unquoted); parameters are ignored.
    A repeated key takes the last value, as RFC 8941 §4.2.2 says.
    """
    try:
        members = _SFParser(value).dictionary()
    except _SFError:
        return {}
    # §2.1: such a value is not consumed, nor coerced (max-age=1.5 is not 1); the
    # field as a whole is then invalid, like one that fails to parse, so the
    # cache falls back to the next targeted field or Cache-Control.
    if any(not _value_fits(name, kind, value) for name, (kind, value) in members.items()):
        return {}
    return {
        name: None if value is True else str(value)
        for name, (_, value) in members.items()
        if value is not False
    }


def _value_fits(name: str, kind: _SFType, value: str | bool) -> bool:
    """Whether `value` (of type `kind`) is one the directive `name` takes."""
    allowed = _DIRECTIVE_TYPES.get(name)
    if allowed is None:
        return True
    return kind in allowed and not (kind is _SFType.INTEGER and str(value).startswith("-"))


class _SFParser:
    def __init__(self, text: str) -> None:
        self.text = text.strip(" \t")
        self.pos = 0

    def dictionary(self) -> dict[str, _SFValue]:
        members: dict[str, _SFValue] = {}
        while self.pos < len(self.text):
            key = self.match(_SF_KEY)
            if self.peek() == "=":
                self.pos += 1
                members[key] = self.item_or_inner_list()
            else:
                self.parameters()
                members[key] = (_SFType.BOOLEAN, True)
            self.skip_ows()
            if self.pos == len(self.text):
                break
            self.expect(",")
            self.skip_ows()
            if self.pos == len(self.text):
                raise _SFError("trailing comma")
        return members

    def item_or_inner_list(self) -> _SFValue:
        if self.peek() != "(":
            return self.item()
        start = self.pos
        self.pos += 1
        while True:
            while self.peek() == " ":
                self.pos += 1
            if self.peek() == ")":
                self.pos += 1
                break
            self.item()
            if self.peek() not in (" ", ")"):
                raise _SFError("bad inner list")
        raw = self.text[start : self.pos]
        self.parameters()
        return _SFType.INNER_LIST, raw

    def item(self) -> _SFValue:
        value = self.bare_item()
        self.parameters()
        return value

    def bare_item(self) -> _SFValue:
        char = self.peek()
        if char == '"':
            return _SFType.STRING, self.string()
        if char == "?":
            return _SFType.BOOLEAN, self.match(_SF_BOOLEAN) == "?1"
        if char == ":":
            return _SFType.BYTES, self.match(_SF_BYTES)
        if char == "-" or char.isdigit():
            number = self.match(_SF_NUMBER)
            return (_SFType.DECIMAL if "." in number else _SFType.INTEGER), number
        return _SFType.TOKEN, self.match(_SF_TOKEN)

    def string(self) -> str:
        out: list[str] = []
        self.pos += 1
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\"):
                    raise _SFError("bad escape")
                out.append(escaped)
                self.pos += 1
            elif char == '"':
                return "".join(out)
            elif not " " <= char <= "~":
                raise _SFError("bad string character")
            else:
                out.append(char)
        raise _SFError("unterminated string")

    def parameters(self) -> None:
        while self.peek() == ";":
            self.pos += 1
            while self.peek() == " ":
                self.pos += 1
            self.match(_SF_KEY)
            if self.peek() == "=":
                self.pos += 1
                self.bare_item()

    def match(self, pattern: re.Pattern[str]) -> str:
        found = pattern.match(self.text, self.pos)
        if found is None:
            raise _SFError(f"expected {pattern.pattern} at {self.pos}")
        self.pos = found.end()
        return found.group()

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _SFError(f"expected {char!r} at {self.pos}")
        self.pos += 1

    def skip_ows(self) -> None:
        while self.peek() in (" ", "\t"):
            self.pos += 1
