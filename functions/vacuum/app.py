"""Lambda entry point of the vacuum job: decorators, one call, nothing else."""

from pgkeeper.handler import handle
from pgkeeper.log import logger, metrics
from pgkeeper.vacuum.job import JOB


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event, context):
    return handle(JOB, event, context)
