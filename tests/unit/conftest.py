"""Fixtures of the template tests (test_template.py, test_template_deploy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgkeeper.local.template import Template, load_template

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    """template.yaml as YAML (intrinsics as {"Ref": ...}, {"Fn::If": ...})."""
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def template() -> Template:
    """template.yaml evaluated with its parameters' defaults."""
    return Template(TEMPLATE)
