"""Definition files: the SQL that (re)creates one materialized view and its indexes.

A file holds exactly one `CREATE MATERIALIZED VIEW` for its view, any number of `CREATE [UNIQUE]
INDEX ... ON` that view, and optionally a `DROP MATERIALIZED VIEW [IF EXISTS]` of it (as in the
fix scripts people already have; pgkeeper drops views itself, safely, so it is ignored). Anything
else is refused: a definition file must never be a way to run arbitrary SQL during a refresh.

Parsing is pure (it runs at plan load, with no database); building the statements under another
name (`build_view`, `build_indexes`) keeps every other character of the user's SQL as written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from ..idents import display
from .sqltext import SqlTextError, Statement, Token, split_statements

ALLOWED = "CREATE MATERIALIZED VIEW, CREATE [UNIQUE] INDEX ... ON the view, DROP MATERIALIZED VIEW"


class DefinitionError(ValueError):
    """A definition file pgkeeper cannot use; the message names the line."""


@dataclass(frozen=True)
class Span:
    start: int
    end: int


@dataclass(frozen=True)
class IndexStatement:
    statement: Statement
    target: Span
    """The `ON <name>` name, replaced when the view is built elsewhere."""
    drop: tuple[Span, ...]
    """`CONCURRENTLY` / `IF NOT EXISTS`: meaningless on a view built inside one transaction."""
    unique: bool


@dataclass(frozen=True)
class Definition:
    path: Path
    text: str
    schema: str | None
    """Schema written in the file, None when unqualified (then it is the plan's)."""
    name: str
    view: Statement
    view_name: Span
    view_data: Span | None
    """A trailing `WITH [NO] DATA`; replaced by what the caller asks for."""
    view_drop: tuple[Span, ...]
    indexes: tuple[IndexStatement, ...]

    def build_view(self, target: sql.Composable, *, with_data: bool) -> sql.Composed:
        """The file's CREATE MATERIALIZED VIEW, naming `target` instead."""
        end = self.view_data.start if self.view_data else self.view.end
        parts = _replace(self.text, self.view.start, end, self.view_name, target, self.view_drop)
        return parts + sql.SQL(" WITH DATA" if with_data else " WITH NO DATA")

    def build_indexes(self, target: sql.Composable) -> list[sql.Composed]:
        return [
            _replace(self.text, ix.statement.start, ix.statement.end, ix.target, target, ix.drop)
            for ix in self.indexes
        ]

    @property
    def has_unique_index(self) -> bool:
        return any(ix.unique for ix in self.indexes)


def _replace(text: str, start: int, end: int, span: Span, target: sql.Composable,
             drop: tuple[Span, ...]) -> sql.Composed:
    """text[start:end] with `span` replaced by `target` and the `drop` spans removed."""
    pieces: list[sql.Composable] = []
    pos = start
    cuts = sorted([(s, "drop") for s in drop] + [(span, "target")], key=lambda c: c[0].start)
    for s, what in cuts:
        pieces.append(sql.SQL(text[pos : s.start]))
        if what == "target":
            pieces.append(target)
        pos = s.end
    pieces.append(sql.SQL(text[pos:end]))
    return sql.Composed(pieces)


def load_definition(path: Path, schema: str, name: str) -> Definition:
    """Parse `path` as the definition of `schema.name`; DefinitionError says what is wrong and where."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DefinitionError(f"cannot read: {exc}") from None
    return parse_definition(text, path, schema, name)


def parse_definition(text: str, path: Path, schema: str, name: str) -> Definition:
    try:
        statements = split_statements(text)
    except SqlTextError as exc:
        raise DefinitionError(str(exc)) from None
    wanted = (schema, name)
    view: tuple[Statement, Span, Span | None, tuple[Span, ...], str | None] | None = None
    indexes: list[IndexStatement] = []
    problems: list[str] = []
    for st in statements:
        toks = st.tokens
        where = f"line {st.line()}"
        try:
            if _starts(toks, "create", "materialized", "view"):
                if view is not None:
                    problems.append(f"{where}: a second CREATE MATERIALIZED VIEW (one view per file)")
                    continue
                i, drop = _skip_if_not_exists(toks, 3)
                span, (fschema, fname), i = _name_at(toks, i, where)
                if (fschema or schema, fname) != wanted:
                    problems.append(f"{where}: creates {display(fschema or schema, fname)}, "
                                    f"but this file is the definition of {display(schema, name)}")
                view = (st, span, _data_clause(toks), drop, fschema)
            elif _starts(toks, "create", "index") or _starts(toks, "create", "unique", "index"):
                ix = _index(st, where)
                tschema, tname = ix[1]
                if (tschema or schema, tname) != wanted:
                    problems.append(f"{where}: the index is on {display(tschema or schema, tname)}, "
                                    f"not on {display(schema, name)}")
                indexes.append(ix[0])
            elif _starts(toks, "drop", "materialized", "view"):
                i, _ = _skip_if_exists(toks, 3)
                _span, (dschema, dname), i = _name_at(toks, i, where)
                if (dschema or schema, dname) != wanted:
                    problems.append(f"{where}: drops {display(dschema or schema, dname)}; only "
                                    f"{display(schema, name)} may be named here")
            else:
                head = " ".join(t.text.upper() for t in toks[:3])
                problems.append(f"{where}: {head} ... is not allowed in a definition file (allowed: {ALLOWED})")
        except DefinitionError as exc:
            problems.append(str(exc))
    if view is None and not problems:
        problems.append(f"no CREATE MATERIALIZED VIEW {display(schema, name)} statement")
    if problems:
        raise DefinitionError("; ".join(problems))
    assert view is not None
    st, span, data, drop, fschema = view
    return Definition(path=path, text=text, schema=fschema, name=name, view=st, view_name=span,
                      view_data=data, view_drop=drop, indexes=tuple(indexes))


def _starts(toks: tuple[Token, ...], *words: str) -> bool:
    return len(toks) >= len(words) and all(t.is_word(w) for t, w in zip(toks, words, strict=False))


def _skip_if_not_exists(toks: tuple[Token, ...], i: int) -> tuple[int, tuple[Span, ...]]:
    if _starts(toks[i:], "if", "not", "exists"):
        return i + 3, (Span(toks[i].start, toks[i + 2].end),)
    return i, ()


def _skip_if_exists(toks: tuple[Token, ...], i: int) -> tuple[int, tuple[Span, ...]]:
    if _starts(toks[i:], "if", "exists"):
        return i + 2, (Span(toks[i].start, toks[i + 1].end),)
    return i, ()


def _is_name(tok: Token) -> bool:
    return tok.kind == "quoted" or (tok.kind == "word" and tok.text.lower() not in {"as", "on", "using", "with"})


def _name_at(toks: tuple[Token, ...], i: int, where: str) -> tuple[Span, tuple[str | None, str], int]:
    """A possibly schema-qualified name starting at toks[i]."""
    if i >= len(toks) or not _is_name(toks[i]):
        raise DefinitionError(f"{where}: expected a name after {toks[i - 1].text.upper()}")
    first = toks[i]
    if i + 2 < len(toks) and toks[i + 1].kind == "punct" and toks[i + 1].text == "." and _is_name(toks[i + 2]):
        return Span(first.start, toks[i + 2].end), (first.ident, toks[i + 2].ident), i + 3
    return Span(first.start, first.end), (None, first.ident), i + 1


def _data_clause(toks: tuple[Token, ...]) -> Span | None:
    if len(toks) >= 3 and toks[-3].is_word("with") and toks[-2].is_word("no") and toks[-1].is_word("data"):
        return Span(toks[-3].start, toks[-1].end)
    if len(toks) >= 2 and toks[-2].is_word("with") and toks[-1].is_word("data"):
        return Span(toks[-2].start, toks[-1].end)
    return None


def _index(st: Statement, where: str) -> tuple[IndexStatement, tuple[str | None, str]]:
    """CREATE [UNIQUE] INDEX [CONCURRENTLY] [[IF NOT EXISTS] name] ON [ONLY] table ..."""
    toks = st.tokens
    i = 1
    unique = toks[i].is_word("unique")
    i += 2 if unique else 1
    drop: list[Span] = []
    if i < len(toks) and toks[i].is_word("concurrently"):
        drop.append(Span(toks[i].start, toks[i].end))
        i += 1
    i, ine = _skip_if_not_exists(toks, i)
    drop.extend(ine)
    if i < len(toks) and not toks[i].is_word("on"):
        i += 1  # the index's own name (never schema-qualified: it lives with its table)
    if i >= len(toks) or not toks[i].is_word("on"):
        raise DefinitionError(f"{where}: CREATE INDEX without ON <view>")
    i += 1
    if i < len(toks) and toks[i].is_word("only"):
        i += 1
    span, name, _ = _name_at(toks, i, where)
    return IndexStatement(statement=st, target=span, drop=tuple(drop), unique=unique), name


def retarget_index(ddl: str, target: sql.Composable, name: sql.Composable | None) -> sql.Composed:
    """A stored index's `pg_get_indexdef` on another relation, named `name` (None: Postgres picks one).
    Every other character (method, opclasses, INCLUDE, WHERE, storage options) stays as deparsed."""
    try:
        [st] = split_statements(ddl)
        ix, _ = _index(st, "index definition")
    except (SqlTextError, DefinitionError, ValueError) as exc:
        raise DefinitionError(f"cannot read the index definition {ddl!r}: {exc}") from None
    toks = st.tokens
    on = next(i for i, t in enumerate(toks) if t.is_word("on"))
    head_end = toks[on - 1].end
    named = on >= 3 and not toks[on - 1].is_word("index", "exists", "concurrently")
    pieces: list[sql.Composable] = [sql.SQL(ddl[st.start : toks[on - 1].start if named else head_end])]
    if name is not None:
        pieces += [sql.SQL(" ") if not named else sql.SQL(""), name]
    pieces += [sql.SQL(ddl[head_end : ix.target.start]), target, sql.SQL(ddl[ix.target.end : st.end])]
    return sql.Composed(pieces)
