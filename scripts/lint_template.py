"""Lint template.yaml as CloudFormation deploys it: through the SAM translator first.

cfn-lint alone checks the SAM resources against SAM's schema; the translator expands them
(the function's schedule and role, the state machine's rule, retry policy and dead-letter
queue) into the CloudFormation resources AWS creates, and cfn-lint then checks those
deeply. `sam package` replaces the local DefinitionUri with an S3 object; so does this.

    python scripts/lint_template.py [TEMPLATE] [--out FILE]    # exit 0 clean, 1 otherwise
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def translate(template_path: Path) -> dict[str, Any]:
    """The template as CloudFormation sees it after the AWS::Serverless transform."""
    import boto3
    from cfnlint.decode import cfn_yaml
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    template = json.loads(json.dumps(cfn_yaml.load(str(template_path))))
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::StateMachine" and "DefinitionUri" in properties:
            properties["DefinitionUri"] = f"s3://sam-package/{properties['DefinitionUri']}"
    # The region only names the ARNs SAM builds; no managed policy is named by a bare name,
    # so none is looked up (offline).
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name="us-east-1"))
    return dict(translator.translate(template, parameter_values={}, get_managed_policy_map=dict))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("template", nargs="?", default=str(ROOT / "template.yaml"))
    parser.add_argument("--out", help="also keep the translated template here")
    args = parser.parse_args(argv)
    from samtranslator.model.exceptions import InvalidDocumentException

    try:
        translated = translate(Path(args.template))
    except InvalidDocumentException as error:
        for cause in error.causes:
            print(f"{args.template}: SAM: {cause.message}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        out = Path(args.out or Path(folder) / "translated.json")
        out.write_text(json.dumps(translated, indent=1))
        # The cfn-lint beside this interpreter, with its default rules (as on template.yaml).
        lint = subprocess.run(
            [str(Path(sys.executable).with_name("cfn-lint")), str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
    sys.stdout.write(lint.stdout)
    sys.stderr.write(lint.stderr)
    if lint.returncode == 0:
        print(f"{args.template}: clean after the SAM transform")
    return 0 if lint.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
