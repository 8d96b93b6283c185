#!/usr/bin/env bash
# Checks of the AWS deployment, run by CI through scripts/test:
#   1. cfn-lint on the SAM template (schema, intrinsic functions, SAM transform, dependency cycles);
#   2. pytest tests/iam: every IAM policy (template, SAM output, docs examples) uses Version
#      2012-10-17, no action wildcards, no Resource "*" beyond the one documented exception, the
#      KVS role trusts only the function role; and the template matches what voice-lambda and
#      voice-adapters-aws read (env vars, table key, TTL attribute, routes); the web client's
#      CloudFront response headers (a CSP as strict as the self-hosted server's, HSTS, framing).
#   The page itself is loaded under that CSP in headless Chromium by tests/browser/aws-mode.test.mjs.
# Needs cfn-lint and pytest: python3 -m pip install -r deploy/aws/requirements-dev.txt
set -euo pipefail
cd "$(dirname "$0")/../.."

PY="${PYTHON:-python3}"
missing=()
command -v cfn-lint >/dev/null 2>&1 || missing+=("cfn-lint")
"$PY" -c 'import cfnlint, samtranslator' >/dev/null 2>&1 || missing+=("cfn-lint (python module for $PY)")
"$PY" -c 'import pytest' >/dev/null 2>&1 || missing+=("pytest")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deploy/aws/check.sh: missing ${missing[*]}." >&2
  echo "  install: $PY -m pip install -r deploy/aws/requirements-dev.txt   (or run scripts/setup-test-deps)" >&2
  exit 1
fi

echo "== $(cfn-lint --version) deploy/aws/template.yaml"
cfn-lint -- deploy/aws/template.yaml
echo "cfn-lint: no findings"

echo "== pytest tests/iam"
# No cache dir or bytecode in the repository; exit code 5 (no tests collected) is a failure too.
status=0
PYTHONDONTWRITEBYTECODE=1 "$PY" -m pytest -q -p no:cacheprovider tests/iam || status=$?
if [ "$status" -eq 5 ]; then
  echo "deploy/aws/check.sh: pytest collected no tests in tests/iam" >&2
  exit 1
fi
if [ "$status" -ne 0 ]; then
  exit "$status"
fi
echo "deploy/aws/check.sh: all checks passed"
