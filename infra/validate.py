"""Offline validation of the SAM template: `python -m infra.validate [template.yaml]`.

cfn-lint alone lints a SAM template through its own partial transform and misses errors
a deployment would hit (a mistyped `!Ref` inside `Environment.Variables`, a bad `Runtime`
in `Globals`). So this does what CloudFormation does first: expand the template with
`aws-sam-translator` into plain CloudFormation, then lint *that* with cfn-lint.

Offline means three substitutions:
- the managed-policy loader returns `{}` (the real one asks IAM for the policy list);
- `AWS_DEFAULT_REGION` is set if missing (the translator builds ARNs for a region);
- local `CodeUri`/`ContentUri` folders become `s3://` placeholders (the real ones are
  uploaded by `sam build`/`sam deploy`, which cannot run here).

Exit status: 0 when there are no errors (warnings are printed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMPLATE_PATH = Path(__file__).resolve().parent / "template.yaml"
PLACEHOLDER_BUCKET = "s3://validate-placeholder-bucket/"
_DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class Finding:
    """One problem found in the template. `severity` is error, warning or informational."""

    severity: str
    rule: str
    message: str
    where: str = ""

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return f"{self.severity.upper()} {self.rule}: {self.message}{where}"


class _NoManagedPolicies:
    """Offline stand-in for samtranslator's ManagedPolicyLoader (which calls IAM)."""

    def load(self) -> dict[str, str]:
        return {}


def load_template(path: Path) -> dict[str, Any]:
    """Parse a CloudFormation/SAM YAML or JSON file, short-form tags (`!Ref`) included."""
    from cfnlint.decode import decode_str

    template, errors = decode_str(path.read_text(encoding="utf-8"))
    if errors or template is None:
        messages = "; ".join(str(e) for e in errors) or "empty template"
        raise ValueError(f"{path}: cannot parse: {messages}")
    # cfn-lint's node types carry line marks; the translator wants plain dicts and strs.
    plain: dict[str, Any] = json.loads(json.dumps(template))
    return plain


def with_placeholder_code(template: dict[str, Any]) -> dict[str, Any]:
    """A copy where local code folders are `s3://` URIs the translator accepts."""
    out = copy.deepcopy(template)
    sections: list[dict[str, Any]] = list(out.get("Resources", {}).values())
    globals_function = out.get("Globals", {}).get("Function")
    if isinstance(globals_function, dict):
        sections.append({"Type": "AWS::Serverless::Function", "Properties": globals_function})
    for resource in sections:
        props = resource.get("Properties")
        if not isinstance(props, dict):
            continue
        for key in ("CodeUri", "ContentUri"):
            value = props.get(key)
            if isinstance(value, str) and not value.startswith("s3://"):
                props[key] = PLACEHOLDER_BUCKET + value.strip("./").replace("/", "-") + ".zip"
    return out


def to_cloudformation(template: dict[str, Any]) -> dict[str, Any]:
    """Expand the SAM transform, as CloudFormation would before creating anything."""
    os.environ.setdefault("AWS_DEFAULT_REGION", _DEFAULT_REGION)
    from samtranslator.translator.transform import transform

    result: dict[str, Any] = transform(with_placeholder_code(template), {}, _NoManagedPolicies())
    return result


def lint_cloudformation(template: dict[str, Any], regions: list[str] | None = None) -> list[Finding]:
    from cfnlint.api import ManualArgs, lint

    matches = lint(json.dumps(template), config=ManualArgs(regions=regions or [_DEFAULT_REGION]))
    findings = []
    for m in matches:
        path = "/".join(str(p) for p in getattr(m, "path", None) or [])
        findings.append(Finding(m.rule.severity.lower(), m.rule.id, m.message, path))
    return findings


def validate(path: Path = TEMPLATE_PATH) -> list[Finding]:
    """Every finding for the template at `path`; the caller decides what fails."""
    from samtranslator.model.exceptions import InvalidDocumentException, InvalidTemplateException

    try:
        sam = load_template(path)
    except ValueError as exc:
        return [Finding("error", "parse", str(exc))]
    try:
        cloudformation = to_cloudformation(sam)
    except InvalidDocumentException as exc:
        return [Finding("error", "sam-transform", str(cause)) for cause in exc.causes]
    except InvalidTemplateException as exc:
        return [Finding("error", "sam-transform", str(exc))]
    return lint_cloudformation(cloudformation)


def errors_in(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.validate", description=__doc__.splitlines()[0])
    parser.add_argument("template", nargs="?", type=Path, default=TEMPLATE_PATH)
    parser.add_argument("--print-cloudformation", action="store_true", help="print the expanded template")
    args = parser.parse_args(argv)
    if args.print_cloudformation:
        print(json.dumps(to_cloudformation(load_template(args.template)), indent=2))
    findings = validate(args.template)
    for finding in findings:
        print(finding, file=sys.stderr)
    errors = errors_in(findings)
    warnings = len(findings) - len(errors)
    print(f"{args.template}: {len(errors)} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
