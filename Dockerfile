# refload: one image, one handler (Step Functions sends the step in the payload).
FROM public.ecr.aws/lambda/python:3.11

WORKDIR ${LAMBDA_TASK_ROOT}
# Pinned versions: the same constraints the tests ran with.
COPY constraints.txt pyproject.toml README.md ./
COPY handler/ handler/
COPY steps/ steps/
# Bytecode compiled here: /var/task is read-only, so it could not be cached at run time
# and every cold start would compile refload's modules again.
RUN pip install --no-cache-dir -c constraints.txt ".[postgres,redshift]" \
    && rm -rf build ./*.egg-info \
    && python -m compileall -q handler steps

CMD ["handler.lambda_handler"]
