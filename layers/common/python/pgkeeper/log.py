"""The module-level Powertools singletons every handler and job shares."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics

# Defaults so local runs (tests, `pgkeeper invoke`) work without the template's env block.
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "pgkeeper")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "pgkeeper")

logger = Logger()
metrics = Metrics()
