"""Split one source line into words and quoted texts, keeping source columns for errors."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ActionSyntaxError

BLANKS = " \t"
_ESCAPABLE = '"\\'


@dataclass(frozen=True, slots=True)
class Token:
    value: str  # for a quoted text: the unescaped content, without the quotes
    column: int  # 1-based column of the first source character (the opening quote if quoted)
    raw: str  # the source text, for error messages
    quoted: bool
    # Column of each character of `value`; only quoted texts need it, because escapes make source
    # and value lengths differ. Bare words map index i to column + i.
    offsets: tuple[int, ...] | None = None

    def column_of(self, index: int) -> int:
        if self.offsets is None:
            return self.column + index
        return self.offsets[index]

    @property
    def end_column(self) -> int:
        """The column just past the token, where a missing next token is reported."""
        return self.column + len(self.raw)


def tokenize(text: str, line: int) -> list[Token]:
    """Words are runs of non-blank characters; a quoted text may contain blanks.

    Tabs are accepted between tokens (they are common in hand-written files) but not inside a
    quoted text, where they would reach speech synthesis as a control character.
    """
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch in BLANKS:
            i += 1
        elif ch == '"':
            token, i = _quoted(text, i, line)
            if i < n and text[i] not in BLANKS:
                raise ActionSyntaxError("expected a space after the closing quote", line, i + 1)
            tokens.append(token)
        else:
            start = i
            while i < n and text[i] not in BLANKS:
                if text[i] == '"':
                    # Reject rather than split here: `say en"hi"` is more likely a typo than intent.
                    raise ActionSyntaxError(
                        "unexpected quote inside a word; put a space before a quoted text", line, i + 1
                    )
                i += 1
            word = text[start:i]
            tokens.append(Token(value=word, column=start + 1, raw=word, quoted=False))
    return tokens


def _quoted(text: str, start: int, line: int) -> tuple[Token, int]:
    """Scan a quoted text whose opening quote is at index `start`; return it and the next index."""
    chars: list[str] = []
    offsets: list[int] = []
    i = start + 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            token = Token(
                value="".join(chars),
                column=start + 1,
                raw=text[start : i + 1],
                quoted=True,
                offsets=tuple(offsets),
            )
            return token, i + 1
        if ch == "\\":
            if i + 1 >= n:
                raise ActionSyntaxError('unterminated quoted text: missing closing "', line, start + 1)
            escaped = text[i + 1]
            if escaped not in _ESCAPABLE:
                shown = f"\\{escaped}" if escaped.isprintable() else f"\\ followed by U+{ord(escaped):04X}"
                raise ActionSyntaxError(
                    f'unknown escape {shown} in quoted text; only \\" and \\\\ are allowed', line, i + 1
                )
            chars.append(escaped)
            offsets.append(i + 1)
            i += 2
            continue
        if ch == "\t":
            raise ActionSyntaxError("tab is not allowed inside a quoted text", line, i + 1)
        chars.append(ch)
        offsets.append(i + 1)
        i += 1
    raise ActionSyntaxError('unterminated quoted text: missing closing "', line, start + 1)
