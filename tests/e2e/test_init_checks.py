"""Configuration that cannot work fails the function's cold start with one clear error, as Lambda
reports an init error, instead of a 500 on every request."""

from __future__ import annotations

import json
from pathlib import Path

from test_invoke_events import EVENTS, SECRET, invoke


def test_an_unusable_signing_secret_is_an_init_error_naming_its_position(db_url: str, tmp_path: Path):
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps({"Parameters": {"DATABASE_URL": db_url,
                                                   "PGKEEPER_WEBHOOK_SECRETS": f"{SECRET},whsec_not-base64!"}}))
    proc = invoke("RefreshFunction", EVENTS / "refresh-scheduled.json", env_file)
    assert proc.returncode == 1
    error = json.loads(proc.stdout)
    assert error["errorType"] == "ConfigError"
    assert error["errorMessage"] == ("PGKEEPER_WEBHOOK_SECRETS: secret #2: the part after whsec_ is not valid base64")
    assert "not-base64" not in proc.stdout + proc.stderr  # the secret itself is never quoted
