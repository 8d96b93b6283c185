"""The IAM policies of deploy/aws/template.yaml (and policy examples in docs/) meet our standard,
and the checker that says so really catches the original guide's flaws: each negative test feeds
it a broken copy and asserts the exact problem is reported.

Run: bash deploy/aws/check.sh   (or: python3 -m pytest tests/iam)
"""

from __future__ import annotations

import json
import textwrap

import pytest

import policy_checks as pc

# ------------------------------------------------------------------------------------------------
# The real template and docs pass
# ------------------------------------------------------------------------------------------------


def test_every_policy_in_the_template_meets_the_standard(parsed_template):
    assert pc.check_template_dict(parsed_template, "template") == []


def test_the_checker_sees_every_policy_document_of_the_template(parsed_template):
    # Guards against a vacuous pass: if discovery found nothing, the test above would be green.
    found = {where for where, _ in pc.iter_policy_documents(parsed_template["Resources"], "R")}
    assert found == {
        "R.VoiceFunctionRole.Properties.AssumeRolePolicyDocument",
        "R.VoiceFunctionRole.Properties.Policies[0].PolicyDocument",
        "R.KvsClientRole.Properties.AssumeRolePolicyDocument",
        "R.KvsClientRole.Properties.Policies[0].PolicyDocument",
        "R.VoiceFunctionPolicy.Properties.PolicyDocument",
        "R.ChatStorePolicy.Properties.PolicyDocument",
        "R.ResumeKeyPolicy.Properties.PolicyDocument",
        "R.WebClientBucketPolicy.Properties.PolicyDocument",
        "R.RecordingsBucketPolicy.Properties.PolicyDocument",
    }


def test_sam_generates_no_extra_policy_and_the_transformed_template_passes(transformed_template):
    found = {w for w, _ in pc.iter_policy_documents(transformed_template["Resources"], "R")}
    assert len(found) == 9, found
    assert pc.check_template_dict(transformed_template, "transformed") == []


def test_every_policy_example_in_the_docs_meets_the_standard():
    files = pc.markdown_files()
    assert pc.DOCS / "deploy-aws.md" in files, "docs/deploy-aws.md is missing"
    problems = [p for f in files for p in pc.check_markdown(f)]
    assert problems == []


def test_the_deploy_doc_shows_a_session_policy_that_is_checked():
    # The scoped session policy is the core of the security model; its example must be real JSON
    # that the checker parses (not just text that happens to mention "Statement").
    text = (pc.DOCS / "deploy-aws.md").read_text(encoding="utf-8")
    docs = []
    for m in pc.FENCE.finditer(text):
        if '"Statement"' in m.group(1):
            docs.append(json.loads(m.group(1)))
    assert docs, "docs/deploy-aws.md has no JSON policy example"
    actions = {a for d in docs for st in d["Statement"] for a in pc._as_list(st["Action"])}
    assert {"kinesisvideo:ConnectAsMaster", "kinesisvideo:ConnectAsViewer"} <= actions


# ------------------------------------------------------------------------------------------------
# The one "*" exception
# ------------------------------------------------------------------------------------------------


def test_each_star_exception_is_unscopable_per_the_service_authorization_reference():
    assert pc.UNSCOPABLE_ACTIONS, "the exception list must not be empty by accident"
    for action in pc.UNSCOPABLE_ACTIONS:
        assert pc.action_resource_types(action) == [], action
    # Control: the data source does know resource types, so "[]" above means something.
    assert pc.action_resource_types("kinesisvideo:ConnectAsMaster") == ["channel"]
    assert pc.action_resource_types("kinesisvideo:CreateSignalingChannel") == ["channel"]
    assert pc.action_resource_types("kinesisvideo:NoSuchAction") is None


def test_the_exception_is_exactly_one_list_action():
    assert set(pc.UNSCOPABLE_ACTIONS) == {"kinesisvideo:ListSignalingChannels"}


def test_star_grants_in_the_template_are_exactly_the_exception(parsed_template):
    star = set()
    for _, doc in pc.iter_policy_documents(parsed_template["Resources"]):
        for action, resources in pc.granted_actions(doc).items():
            if "*" in resources:
                star.add(action)
    assert star == {"kinesisvideo:ListSignalingChannels"}


def test_the_exception_is_documented():
    text = (pc.DOCS / "deploy-aws.md").read_text(encoding="utf-8")
    assert "kinesisvideo:ListSignalingChannels" in text
    assert "service authorization reference" in text.lower()


# ------------------------------------------------------------------------------------------------
# Negative tests: broken copies are caught
# ------------------------------------------------------------------------------------------------


def _res(template, name):
    return template["Resources"][name]["Properties"]


def _kvs_statement(template):
    return _res(template, "KvsClientRole")["Policies"][0]["PolicyDocument"]["Statement"][0]


def _fn_statement(template, sid):
    for st in _res(template, "VoiceFunctionPolicy")["PolicyDocument"]["Statement"]:
        if st.get("Sid") == sid:
            return st
    raise KeyError(sid)


def _problems(template):
    return pc.check_template_dict(template, "broken")


def test_version_2012_10_16_everywhere_in_the_file_is_caught(tmp_path):
    text = pc.TEMPLATE.read_text(encoding="utf-8")
    assert text.count('Version: "2012-10-17"') == 9
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace('Version: "2012-10-17"', 'Version: "2012-10-16"'), encoding="utf-8")
    problems = pc.check_template(broken)
    version_problems = [p for p in problems if "Version is '2012-10-16'" in p]
    # 9 documents, each reported before and after the SAM transform.
    assert len(version_problems) == 18, problems


def test_one_wrong_version_is_caught(template):
    _res(template, "KvsClientRole")["Policies"][0]["PolicyDocument"]["Version"] = "2012-10-16"
    problems = _problems(template)
    assert any("KvsClientRole.Properties.Policies[0].PolicyDocument: Version is '2012-10-16'" in p for p in problems)


def test_a_trust_policy_with_the_wrong_version_is_caught(template):
    _res(template, "KvsClientRole")["AssumeRolePolicyDocument"]["Version"] = "2012-10-16"
    assert any("AssumeRolePolicyDocument: Version is '2012-10-16'" in p for p in _problems(template))


def test_a_missing_version_is_caught(template):
    del _res(template, "WebClientBucketPolicy")["PolicyDocument"]["Version"]
    assert any("WebClientBucketPolicy.Properties.PolicyDocument: Version is None" in p for p in _problems(template))


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda t: _kvs_statement(t).__setitem__("Resource", "*"), "Resource '*' for kinesisvideo:ConnectAsMaster"),
        (lambda t: _fn_statement(t, "AssumeKvsClientRoleOnly").__setitem__("Resource", "*"), "Resource '*' for sts:AssumeRole"),
        (lambda t: _fn_statement(t, "VoiceRoomsReadWrite").__setitem__("Resource", "*"), "Resource '*' for dynamodb:PutItem"),
        (lambda t: _fn_statement(t, "PushToThisApiStageOnly").__setitem__("Resource", "*"), "Resource '*' for execute-api:ManageConnections"),
        (lambda t: _fn_statement(t, "ManageVoiceChannels").__setitem__("Resource", ["*"]), "Resource '*' for kinesisvideo:DescribeSignalingChannel"),
        # Widening the exception statement with a scopable action is caught for that action.
        (
            lambda t: _fn_statement(t, "ListChannelsUnscopable").__setitem__(
                "Action", ["kinesisvideo:ListSignalingChannels", "kinesisvideo:DeleteSignalingChannel"]
            ),
            "Resource '*' for kinesisvideo:DeleteSignalingChannel",
        ),
        # A "*" hidden in one branch of a condition is still a "*".
        (
            lambda t: _kvs_statement(t).__setitem__("Resource", {"Fn::If": ["CreateWebSocketApi", "*", "arn:aws:kinesisvideo:us-east-1:123456789012:channel/voice-x/1"]}),
            "Resource '*' for kinesisvideo:ConnectAsViewer",
        ),
    ],
    ids=["kvs-role", "sts", "dynamodb", "execute-api", "kvs-list-form", "widened-exception", "star-in-if"],
)
def test_resource_star_is_caught(template, mutate, expected):
    mutate(template)
    problems = _problems(template)
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize(
    "action",
    ["kinesisvideo:*", "*", "kinesisvideo:Get*", "sts:Assume*", "kinesisvideo:ConnectAs?aster"],
)
def test_action_wildcards_are_caught(template, action):
    _kvs_statement(template)["Action"] = [action]
    problems = _problems(template)
    assert any(f"action wildcard {action!r}" in p for p in problems), problems


def test_the_originals_kvs_policy_is_caught_on_every_count():
    # Step 2 of the original guide, verbatim.
    original = {
        "Version": "2012-10-16",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["kinesisvideo:ConnectAsMaster", "kinesisvideo:ConnectAsViewer"],
                "Resource": "*",
            }
        ],
    }
    problems = pc.check_policy(original, "original")
    assert any("Version is '2012-10-16'" in p for p in problems)
    assert any("Resource '*' for kinesisvideo:ConnectAsMaster" in p for p in problems)
    assert any("Resource '*' for kinesisvideo:ConnectAsViewer" in p for p in problems)


def test_a_misspelled_action_is_caught(template):
    _kvs_statement(template)["Action"] = ["kinesisvideo:ConnectAsMater"]
    assert any("unknown IAM action 'kinesisvideo:ConnectAsMater'" in p for p in _problems(template))


def test_not_action_is_caught(template):
    st = _kvs_statement(template)
    st["NotAction"] = st.pop("Action")
    assert any("Allow with NotAction" in p for p in _problems(template))


def test_a_public_allow_is_caught(template):
    st = _res(template, "WebClientBucketPolicy")["PolicyDocument"]["Statement"][0]
    st["Principal"] = "*"
    assert any("Allow to Principal '*'" in p for p in _problems(template))


def test_a_kvs_grant_beyond_voice_channels_is_caught(template):
    _kvs_statement(template)["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:kinesisvideo:${AWS::Region}:${AWS::AccountId}:channel/*"}
    assert any("must be a voice-* signaling channel ARN" in p for p in _problems(template))


def test_assuming_any_role_is_caught(template):
    _fn_statement(template, "AssumeKvsClientRoleOnly")["Resource"] = {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/*"}
    assert any("sts:AssumeRole on wildcard resource" in p for p in _problems(template))


def test_managed_policies_on_a_role_are_caught(template):
    _res(template, "VoiceFunctionRole")["ManagedPolicyArns"] = [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]
    assert any("ManagedPolicyArns" in p for p in _problems(template))


def test_a_policy_sam_generates_is_checked_too():
    # A function without an explicit role: SAM generates one (with the AWS managed basic
    # execution policy) and turns `Policies` into its inline policy. Only the transformed
    # template shows both.
    text = textwrap.dedent(
        """
        Transform: AWS::Serverless-2016-10-31
        Resources:
          Fn:
            Type: AWS::Serverless::Function
            Properties:
              CodeUri: .
              Handler: bootstrap
              Runtime: provided.al2023
              Policies:
                - Version: "2012-10-17"
                  Statement:
                    - Effect: Allow
                      Action: kinesisvideo:*
                      Resource: "*"
        """
    )
    template = pc.load_template_str(text)
    problems = pc.check_template_dict(template, "sam")
    assert any("(after SAM transform)" in p and "action wildcard 'kinesisvideo:*'" in p for p in problems), problems
    assert any("SAM Policies" in p for p in problems), problems
    transformed = pc.sam_transform(template)
    roles = [r for r in transformed["Resources"].values() if r["Type"] == "AWS::IAM::Role"]
    assert roles and all("ManagedPolicyArns" in r["Properties"] for r in roles)
    assert any("ManagedPolicyArns" in p for p in pc.check_template_dict(transformed, "transformed")), problems


def test_bad_policies_in_markdown_are_caught(tmp_path):
    md = tmp_path / "bad.md"
    md.write_text(
        textwrap.dedent(
            """
            A JSON example:

            ```json
            {"Version": "2012-10-16", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}]}
            ```

            Not JSON (placeholder), still checked for its Version:

            ```
            { "Version": "2012-10-16", "Statement": [ ... ] }
            ```

            - Indented inside a list item:

              ```json
              {"Version": "2012-10-16", "Statement": [{"Effect": "Allow", "Action": "kinesisvideo:*", "Resource": "*"}]}
              ```

            Not a policy:

            ```json
            {"Version": "2012-10-16"}
            ```
            """
        ),
        encoding="utf-8",
    )
    problems = pc.check_markdown(md)
    assert "bad.md code block 1: Version is '2012-10-16', must be '2012-10-17' (the only current IAM policy language version)" in problems
    assert any(p.startswith("bad.md code block 1.Statement[0]: Resource '*' for sts:AssumeRole") for p in problems)
    assert "bad.md code block 2: Version is '2012-10-16', must be '2012-10-17'" in problems
    assert any(p.startswith("bad.md code block 3: Version is '2012-10-16'") for p in problems)
    assert any(p.startswith("bad.md code block 3.Statement[0]: action wildcard 'kinesisvideo:*'") for p in problems)
    assert not any("code block 4" in p for p in problems)


def test_deny_statements_may_use_wildcards():
    # A Deny only removes permissions (e.g. our DenyInsecureTransport on s3:*): not a violation.
    doc = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": "*"}],
    }
    assert pc.check_policy(doc, "deny") == []


@pytest.mark.parametrize(
    "resource, ok",
    [
        ("arn:aws:kinesisvideo:us-east-1:123456789012:channel/voice-abc/1700000000000", True),
        ("arn:${AWS::Partition}:kinesisvideo:${AWS::Region}:${AWS::AccountId}:channel/voice-*/*", True),
        ("arn:aws:kinesisvideo:<region>:<account-id>:channel/voice-*/*", True),
        ("arn:aws:kinesisvideo:*:123456789012:channel/voice-*/*", False),
        ("arn:aws:kinesisvideo:us-east-1:*:channel/voice-*/*", False),
        ("arn:aws:kinesisvideo:us-east-1:123456789012:channel/*", False),
        ("arn:aws:kinesisvideo:us-east-1:123456789012:stream/voice-x/1", False),
    ],
)
def test_kvs_resources_must_be_voice_channels(resource, ok):
    doc = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "kinesisvideo:ConnectAsViewer", "Resource": resource}],
    }
    assert (pc.check_policy(doc, "doc") == []) is ok
