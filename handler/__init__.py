"""refload's one Lambda entry point: `handler.lambda_handler(event, context)`."""

from handler.dispatch import STEPS, lambda_handler

__all__ = ["STEPS", "lambda_handler"]
