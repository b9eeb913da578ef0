"""Lambda entry point of the backup job: an init check, decorators, one call, nothing else."""

from pgkeeper.backup.job import JOB
from pgkeeper.handler import check_at_init, handle
from pgkeeper.log import logger, metrics

check_at_init()  # a configuration that cannot work fails the cold start, not every request


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event, context):
    return handle(JOB, event, context)
