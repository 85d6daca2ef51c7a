#!/usr/bin/env bash
# Package the Spark ingest engine for EMR Serverless (README: "Big tables on Spark").
#
#   scripts/build_spark_job.sh image REPO:TAG [RELEASE]   # custom image, pushed to ECR
#   scripts/build_spark_job.sh venv                       # dist/refload_spark_venv.tar.gz
#   scripts/build_spark_job.sh upload s3://BUCKET/PREFIX  # the entry point (+ venv if built)
#
# image (recommended): AWS's EMR Serverless Spark base image (RELEASE, default emr-7.9.0)
#   plus Python 3.11 and refload pinned by constraints.txt; pyspark comes from the image's
#   Spark. Deploy with SparkImageUri=REPO:TAG. The image must be in ECR, in the
#   application's region, readable by EMR Serverless (see the ECR repository policy in the
#   EMR Serverless guide, "Customizing an image").
# venv: a packed virtual env (venv-pack) built on Amazon Linux 2023 with the Python of the
#   EMR release's image; add to SparkSubmitParameters:
#     --conf spark.archives=s3://BUCKET/PREFIX/refload_spark_venv.tar.gz#environment
#     --conf spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON=./environment/bin/python
#     --conf spark.emr-serverless.driverEnv.PYSPARK_PYTHON=./environment/bin/python
#     --conf spark.executorEnv.PYSPARK_PYTHON=./environment/bin/python
#   refload needs Python >= 3.11: use it with a release whose image has one.
# upload: spark_job.py (the job's EntryPoint: deploy with SparkJobEntryPoint=s3://.../spark_job.py).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
case "$mode" in
  image)
    tag=${2:?usage: build_spark_job.sh image REPO:TAG [RELEASE]}
    release=${3:-emr-7.9.0}
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    cp -r constraints.txt pyproject.toml README.md handler steps hooks "$build/"
    cat > "$build/Dockerfile" <<DOCKERFILE
FROM public.ecr.aws/emr-serverless/spark/${release}:latest
USER root
RUN dnf install -y python3.11 python3.11-pip && dnf clean all
WORKDIR /opt/refload
COPY constraints.txt pyproject.toml README.md ./
COPY handler/ handler/
COPY steps/ steps/
COPY hooks/ hooks/
# Runtime dependencies only (pyspark is the image's own), plus pandas for hooks.
RUN python3.11 -m pip install --no-cache-dir -c constraints.txt ".[pandas]" && rm -rf build ./*.egg-info
ENV PYSPARK_PYTHON=/usr/bin/python3.11 PYSPARK_DRIVER_PYTHON=/usr/bin/python3.11
# EMR Serverless runs jobs as this user.
USER hadoop:hadoop
DOCKERFILE
    docker build --platform linux/amd64 --provenance=false -t "$tag" "$build"
    docker push "$tag"
    ;;
  venv)
    mkdir -p dist
    docker run --rm --platform linux/amd64 -v "$PWD:/src" -w /src amazonlinux:2023 bash -euc '
      dnf install -y -q python3.11 python3.11-pip >/dev/null
      python3.11 -m venv /tmp/venv
      /tmp/venv/bin/pip install -q -c constraints.txt ".[pandas]" venv-pack
      /tmp/venv/bin/venv-pack -p /tmp/venv -o dist/refload_spark_venv.tar.gz -f'
    echo "dist/refload_spark_venv.tar.gz"
    ;;
  upload)
    prefix=${2:?usage: build_spark_job.sh upload s3://BUCKET/PREFIX}
    aws s3 cp scripts/spark_job.py "${prefix%/}/spark_job.py"
    if [ -f dist/refload_spark_venv.tar.gz ]; then
      aws s3 cp dist/refload_spark_venv.tar.gz "${prefix%/}/refload_spark_venv.tar.gz"
    fi
    echo "SparkJobEntryPoint=${prefix%/}/spark_job.py"
    ;;
  *)
    sed -n '2,22p' "$0" >&2
    exit 2
    ;;
esac
