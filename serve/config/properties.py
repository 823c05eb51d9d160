"""Java `.properties` text: reading it as `java.util.Properties.load` does, and writing it back.

`key=value`, `key: value` and `key value`; `#` and `!` comment lines; a line ending in an odd
number of backslashes continues on the next one (whose leading blanks are dropped); escapes
`\\t \\n \\r \\f \\uXXXX`, and a backslash before any other character keeps that character.
"""

from __future__ import annotations

_BLANKS = " \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class PropertiesError(ValueError):
    """Text that cannot be read as properties (a bad `\\uXXXX` escape); `line` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def parse_properties(text: str) -> dict[str, str]:
    """The key/value pairs of a properties text, in order; a repeated key keeps its last value."""
    values: dict[str, str] = {}
    for number, line in _logical_lines(text):
        key, value = _split(line)
        try:
            values[_unescape(key)] = _unescape(value)
        except ValueError as exc:
            raise PropertiesError(number, str(exc)) from None
    return values


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    pending: str | None = None
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        if pending is None:
            line = raw.lstrip(_BLANKS)
            if not line or line[0] in "#!":
                continue
            start = number
        else:
            line = pending + raw.lstrip(_BLANKS)
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:  # an odd count: the last backslash escapes the line break
            pending = line[:-1]
            continue
        pending = None
        lines.append((start, line))
    if pending is not None:  # a continuation at the end of the file ends the value
        lines.append((start, pending))
    return lines


def _split(line: str) -> tuple[str, str]:
    """The key ends at the first unescaped `=`, `:` or blank; one separator is skipped."""
    index = 0
    while index < len(line):
        char = line[index]
        if char == "\\":
            index += 2
            continue
        if char in "=:" or char in _BLANKS:
            break
        index += 1
    key, rest = line[:index], line[index:].lstrip(_BLANKS)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_BLANKS)
    return key, rest


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char != "\\" or index + 1 >= len(text):
            out.append(char)
            index += 1
            continue
        code = text[index + 1]
        if code == "u":
            digits = text[index + 2 : index + 6]
            if len(digits) < 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                raise ValueError(f"malformed \\uXXXX escape: \\u{digits}")
            out.append(chr(int(digits, 16)))
            index += 6
            continue
        out.append(_ESCAPES.get(code, code))
        index += 2
    return "".join(out)


def escape_key(key: str) -> str:
    """A key written so that `parse_properties` reads it back unchanged."""
    return "".join("\\" + c if c in "=: \t\f#!\\" else _escape_char(c) for c in key)


def escape_value(value: str) -> str:
    """A value written so that `parse_properties` reads it back unchanged."""
    text = "".join("\\\\" if c == "\\" else _escape_char(c) for c in value)
    if text[:1] in (" ", "\t", "\f"):
        text = "\\" + text  # a leading blank would be taken for the separator's
    return text


def _escape_char(char: str) -> str:
    for code, actual in _ESCAPES.items():
        if char == actual:
            return "\\" + code
    return char
