"""EMR Serverless entry point of the Spark ingest engine (scripts/build_spark_job.sh uploads it).

spark-submit spark_job.py '<ingest payload as JSON, with spark_result_uri>'
"""

import sys

from steps.ingest.emr import job_main

if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))
