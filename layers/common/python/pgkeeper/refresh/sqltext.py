"""Just enough of PostgreSQL's lexer to split a definition file into statements and find names in them.

Definition files are SQL the user already runs (`CREATE MATERIALIZED VIEW ...; CREATE UNIQUE INDEX
...;`). To build a view under another name (a scratch schema for comparison, a staging schema for
repair) pgkeeper swaps the name tokens and keeps every other character as written, so the scanner
must know where strings, quoted identifiers, dollar quotes and comments begin and end: a `;` or a
name inside any of them is not one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# One regex per token kind, tried in this order at each position (comments are handled apart).
_TOKENS = [
    ("string", re.compile(r"[eE]'(?:[^'\\]|\\.|'')*'", re.S)),
    ("string", re.compile(r"(?:[uU]&|[bBxXnN])?'(?:[^']|'')*'", re.S)),
    ("quoted", re.compile(r'(?:[uU]&)?"(?:[^"]|"")+"', re.S)),
    ("word", re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_$\u0080-\U0010ffff]*")),
    ("number", re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")),
    ("param", re.compile(r"\$\d+")),
]
_DOLLAR_OPEN = re.compile(r"\$([A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)?\$")


class SqlTextError(ValueError):
    """The text cannot be split safely (an unterminated string, identifier or comment)."""


@dataclass(frozen=True)
class Token:
    kind: str  # word | quoted | string | dollar | number | param | punct
    text: str
    start: int
    end: int

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words

    @property
    def ident(self) -> str:
        """The identifier this token names, folded or unquoted as Postgres does."""
        if self.kind == "quoted":
            body = self.text[self.text.index('"') + 1 : -1]
            return body.replace('""', '"')
        return self.text.lower()


@dataclass(frozen=True)
class Statement:
    text: str
    """The whole file's text (spans below index into it)."""
    tokens: tuple[Token, ...]

    @property
    def start(self) -> int:
        return self.tokens[0].start

    @property
    def end(self) -> int:
        return self.tokens[-1].end

    def line(self) -> int:
        return line_of(self.text, self.start)


def line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos, n = 0, len(text)
    while pos < n:
        ch = text[pos]
        if ch.isspace():
            pos += 1
            continue
        if text.startswith("--", pos):
            nl = text.find("\n", pos)
            pos = n if nl < 0 else nl + 1
            continue
        if text.startswith("/*", pos):
            pos = _skip_block_comment(text, pos)
            continue
        if ch == "$":
            m = _DOLLAR_OPEN.match(text, pos)
            if m:
                close = text.find(m.group(0), m.end())
                if close < 0:
                    raise SqlTextError(f"line {line_of(text, pos)}: unterminated dollar-quoted string {m.group(0)}")
                end = close + len(m.group(0))
                tokens.append(Token("dollar", text[pos:end], pos, end))
                pos = end
                continue
        for kind, rx in _TOKENS:
            m = rx.match(text, pos)
            if m:
                tokens.append(Token(kind, m.group(0), pos, m.end()))
                pos = m.end()
                break
        else:
            if ch in "'\"":
                what = "string" if ch == "'" else "quoted identifier"
                raise SqlTextError(f"line {line_of(text, pos)}: unterminated {what}")
            # Operators and punctuation one character at a time: we never need to read them.
            tokens.append(Token("punct", ch, pos, pos + 1))
            pos += 1
    return tokens


def _skip_block_comment(text: str, pos: int) -> int:
    """Block comments nest in PostgreSQL."""
    depth, i = 0, pos
    while i < len(text):
        if text.startswith("/*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*/", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        else:
            i += 1
    raise SqlTextError(f"line {line_of(text, pos)}: unterminated /* comment")


def split_statements(text: str) -> list[Statement]:
    """Statements separated by top-level `;` (empty ones dropped)."""
    out: list[Statement] = []
    current: list[Token] = []
    for tok in tokenize(text):
        if tok.kind == "punct" and tok.text == ";":
            if current:
                out.append(Statement(text, tuple(current)))
            current = []
        else:
            current.append(tok)
    if current:
        out.append(Statement(text, tuple(current)))
    return out
