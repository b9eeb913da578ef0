"""Plan names read like the SQL users already write, Prisma's quoted mixed case included."""

from __future__ import annotations

import pytest

from pgkeeper.idents import display, parse_name, qualify


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("sessions", ("sessions",)),
        ("Public.Sessions", ("public", "sessions")),
        ('"Session"', ("Session",)),
        ('public."Companion"', ("public", "Companion")),
        ('"my ""odd"" name"', ('my "odd" name',)),
    ],
)
def test_names_fold_like_postgres(text, parts):
    assert parse_name(text) == parts


@pytest.mark.parametrize("text", ["", "a.b.c", "1abc", "a;drop table x", '"unterminated', "a..b"])
def test_bad_names_are_refused(text):
    with pytest.raises(ValueError):
        parse_name(text)


def test_qualify_and_display_round_trip():
    assert qualify('"Companion"') == ("public", "Companion")
    assert display("public", "Companion") == 'public."Companion"'
    assert display("public", "sessions") == "public.sessions"
