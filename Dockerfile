# refload: one image, one handler (Step Functions sends the step in the payload).
# Python 3.12 on Amazon Linux 2023 (glibc 2.34): pyarrow and duckdb ship only
# manylinux_2_28 wheels, which the Amazon Linux 2 bases (python:3.11 and older, glibc 2.26)
# cannot install. scripts/check_wheels.py proves every package has a wheel for this base.
FROM public.ecr.aws/lambda/python:3.12

WORKDIR ${LAMBDA_TASK_ROOT}
# Pinned versions: the same constraints the tests ran with.
COPY constraints.txt pyproject.toml README.md ./
COPY handler/ handler/
COPY steps/ steps/
COPY hooks/ hooks/
# pandas only for tables with a python_transform hook: in its own folder, which
# steps/ingest/hooks.py puts on sys.path for them alone (pyarrow imports pandas and numpy whenever
# they are importable, and every other table would pay for it; ADR 5).
ENV REFLOAD_PANDAS_SITE=/opt/refload-pandas
# Bytecode compiled here: /var/task is read-only, so it could not be cached at run time
# and every cold start would compile refload's modules again.
RUN pip install --no-cache-dir -c constraints.txt ".[postgres,redshift,lineage]" \
    && pip install --no-cache-dir -c constraints.txt --target "${REFLOAD_PANDAS_SITE}" pandas \
    && rm -rf build ./*.egg-info \
    && python -m compileall -q handler steps hooks

CMD ["handler.lambda_handler"]
