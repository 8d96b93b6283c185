"""Shared fixtures of the deployment-template tests: the template parsed once per session."""

import copy
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import policy_checks  # noqa: E402


@pytest.fixture(scope="session")
def parsed_template() -> dict:
    """deploy/aws/template.yaml, parsed with cfn-lint's decoder (read-only: use `template`)."""
    return policy_checks.load_template()


@pytest.fixture
def template(parsed_template) -> dict:
    """A private deep copy that a test may mutate to build a broken variant."""
    return copy.deepcopy(parsed_template)


@pytest.fixture(scope="session")
def transformed_template(parsed_template) -> dict:
    """The template after the AWS::Serverless transform (what CloudFormation deploys)."""
    return policy_checks.sam_transform(parsed_template)
