"""Static checks of the IAM policies in deploy/aws/template.yaml and of policy examples in docs/.

Why a checker of our own and not only cfn-lint: cfn-lint validates that policies are well formed,
but not our standards, which the original console guide broke (seed-summary.md, flaws 1 and 2):

* every policy document says ``"Version": "2012-10-17"`` (the original wrote 2012-10-16);
* no Allow grants an action wildcard (``"*"``, ``"kinesisvideo:*"``, ``"kinesisvideo:Get*"``) or
  uses ``NotAction`` / ``NotResource`` / ``NotPrincipal``;
* no Allow grants ``Resource: "*"``, except for the actions in :data:`UNSCOPABLE_ACTIONS`, each of
  which the service authorization reference (as shipped with cfn-lint) confirms cannot be scoped;
* kinesisvideo resources are signaling channels named ``voice-*``; ``sts:AssumeRole`` names a role;
* no Allow is public (``Principal: "*"``), and no role attaches managed policies we cannot read.

Every check returns a list of human-readable problems (empty = fine), so that the tests can show
both that the real template passes and that a broken copy is caught.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "deploy" / "aws" / "template.yaml"
DOCS = REPO / "docs"

POLICY_VERSION = "2012-10-17"

# Actions that may be granted on Resource "*", and why. Keep this list short and documented in
# docs/deploy-aws.md ("Security model"); the tests prove each one is really unscopable.
UNSCOPABLE_ACTIONS = {
    "kinesisvideo:ListSignalingChannels": (
        "the service authorization reference lists no resource type for it; the sweep needs it "
        "to find orphaned voice-* channels, and it grants no access to any channel"
    ),
}

# kinesisvideo resources must be our channels: arn:<partition>:kinesisvideo:<region>:<account>:channel/voice-...
# Region and account may be CloudFormation pseudo parameters or (in docs) placeholders, never "*".
KVS_CHANNEL_RESOURCE = re.compile(
    r"^arn:(\$\{AWS::Partition\}|aws[a-z-]*):kinesisvideo:"
    r"(\$\{AWS::Region\}|[^:*]+):(\$\{AWS::AccountId\}|[^:*]+):channel/voice-"
)


# ------------------------------------------------------------------------------------------------
# Loading
# ------------------------------------------------------------------------------------------------


def load_template(path: Path | str = TEMPLATE) -> dict:
    """Parses a CloudFormation/SAM YAML template with cfn-lint's own decoder (understands !Sub,
    !GetAtt, !If ... and yields the long ``Fn::`` form). Raises on a template that does not parse."""
    from cfnlint.decode import decode

    template, matches = decode(str(path))
    if matches or template is None:
        raise ValueError(f"{path} does not parse: {[str(m) for m in matches]}")
    return _plain(template)


def load_template_str(text: str) -> dict:
    """Same as :func:`load_template`, from a string."""
    from cfnlint.decode import decode_str

    template, matches = decode_str(text)
    if matches or template is None:
        raise ValueError(f"template does not parse: {[str(m) for m in matches]}")
    return _plain(template)


def _plain(node: Any) -> Any:
    """cfn-lint's node classes -> plain dicts/lists/strs (deep-copyable, comparable)."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)
    return node


def sam_transform(template: dict, region: str = "us-east-1") -> dict:
    """The template after the AWS::Serverless transform, as CloudFormation would see it, so that
    anything SAM generates (roles, permissions) is checked as well. Local CodeUri paths are
    replaced by a dummy S3 location, as `sam package` would."""
    from samtranslator.parser import parser
    from samtranslator.translator.translator import Translator

    t = copy.deepcopy(template)
    for res in t.get("Resources", {}).values():
        if res.get("Type") == "AWS::Serverless::Function":
            res.setdefault("Properties", {})["CodeUri"] = "s3://example-bucket/voice-lambda.zip"
    old = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        out = Translator(managed_policy_map={}, sam_parser=parser.Parser()).translate(
            sam_template=t, parameter_values={}
        )
    finally:
        if old is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = old
    return _plain(json.loads(json.dumps(out, default=str)))


# ------------------------------------------------------------------------------------------------
# IAM action data (the service authorization reference, as cfn-lint ships it)
# ------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _service_map() -> dict:
    import cfnlint

    path = Path(cfnlint.__file__).parent / "data" / "AdditionalSpecs" / "Policies.json"
    return json.loads(path.read_text())


def action_resource_types(action: str) -> list[str] | None:
    """Resource types an IAM action can be scoped to (``[]``: none, so only ``"*"`` works);
    ``None`` when the action does not exist."""
    service, _, name = action.partition(":")
    svc = _service_map().get(service.lower())
    if svc is None:
        return None
    entry = svc.get("Actions", {}).get(name.lower())
    if entry is None:
        return None
    return list(entry.get("Resources", []))


# ------------------------------------------------------------------------------------------------
# Finding policy documents
# ------------------------------------------------------------------------------------------------


def iter_policy_documents(node: Any, where: str = "") -> Iterator[tuple[str, dict]]:
    """Every policy document in a template (or any JSON-like tree): a mapping that has a
    ``Statement``, or that sits under a key named like ``*PolicyDocument``."""
    if isinstance(node, dict):
        if "Statement" in node:
            yield where, node
            return
        for k, v in node.items():
            here = f"{where}.{k}" if where else k
            if k.endswith("PolicyDocument") and isinstance(v, dict) and "Statement" not in v:
                # A policy document without statements is malformed; report it as one.
                yield here, v
                continue
            yield from iter_policy_documents(v, here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from iter_policy_documents(v, f"{where}[{i}]")


def _as_list(v: Any) -> list:
    if v is None:
        return []
    return v if isinstance(v, list) else [v]


def _candidates(value: Any) -> list[str]:
    """The strings a (possibly intrinsic) value may resolve to, with intrinsics shown literally:
    both branches of Fn::If, the pattern of Fn::Sub, ``<GetAtt X.Arn>`` / ``<Ref X>``."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        out: list[str] = []
        for v in value:
            out.extend(_candidates(v))
        return out
    if isinstance(value, dict) and len(value) == 1:
        (fn, arg), = value.items()
        if fn == "Fn::If" and isinstance(arg, list) and len(arg) == 3:
            return _candidates(arg[1]) + _candidates(arg[2])
        if fn == "Fn::Sub":
            pattern = arg[0] if isinstance(arg, list) else arg
            return [pattern] if isinstance(pattern, str) else [json.dumps(pattern)]
        if fn == "Fn::GetAtt":
            target = ".".join(arg) if isinstance(arg, list) else str(arg)
            return [f"<GetAtt {target}>"]
        if fn == "Ref":
            return [f"<Ref {arg}>"]
        if fn == "Fn::Join" and isinstance(arg, list) and len(arg) == 2:
            return [str(arg[0]).join(str(p) for p in _as_list(arg[1]))]
    return [json.dumps(value, sort_keys=True)]


# ------------------------------------------------------------------------------------------------
# Checks
# ------------------------------------------------------------------------------------------------


def check_policy(doc: Any, where: str) -> list[str]:
    """Problems with one policy document (identity, trust, resource or session policy)."""
    problems: list[str] = []
    if not isinstance(doc, dict):
        return [f"{where}: policy document is not a mapping"]
    version = doc.get("Version")
    if version != POLICY_VERSION:
        problems.append(
            f"{where}: Version is {version!r}, must be {POLICY_VERSION!r} "
            "(the only current IAM policy language version)"
        )
    statements = _as_list(doc.get("Statement"))
    if not statements:
        problems.append(f"{where}: no Statement")
    for i, st in enumerate(statements):
        problems.extend(_check_statement(st, f"{where}.Statement[{i}]"))
    return problems


def _check_statement(st: Any, where: str) -> list[str]:
    if not isinstance(st, dict):
        return [f"{where}: statement is not a mapping"]
    problems: list[str] = []
    effect = st.get("Effect")
    if effect not in ("Allow", "Deny"):
        return [f"{where}: Effect is {effect!r}, must be Allow or Deny"]
    if effect == "Deny":
        # A Deny only takes permissions away: wildcards there narrow access, never widen it.
        return problems

    for key in ("NotAction", "NotResource", "NotPrincipal"):
        if key in st:
            problems.append(f"{where}: Allow with {key} grants everything not listed; name what is allowed")

    actions = _as_list(st.get("Action"))
    if not actions and "NotAction" not in st:
        problems.append(f"{where}: Allow without Action")
    names: list[str] = []
    for a in actions:
        if not isinstance(a, str):
            problems.append(f"{where}: Action {a!r} is not a literal string")
            continue
        if "*" in a or "?" in a:
            problems.append(f"{where}: action wildcard {a!r}; list the exact actions")
            continue
        if action_resource_types(a) is None:
            problems.append(f"{where}: unknown IAM action {a!r} (not in the service authorization reference)")
            continue
        names.append(a)

    principal = st.get("Principal")
    for p in _principal_values(principal):
        if p == "*":
            problems.append(f"{where}: Allow to Principal '*' (public)")

    if "Resource" in st:
        resources = _candidates(st["Resource"])
        if any(r == "*" for r in resources):
            for a in names:
                if a not in UNSCOPABLE_ACTIONS:
                    problems.append(
                        f"{where}: Resource '*' for {a}; scope it to ARNs "
                        f"(only {sorted(UNSCOPABLE_ACTIONS)} may use '*')"
                    )
        for a in names:
            service = a.split(":", 1)[0].lower()
            for r in resources:
                if r == "*":
                    continue
                if service == "kinesisvideo" and not KVS_CHANNEL_RESOURCE.match(r):
                    problems.append(f"{where}: {a} on {r!r}; must be a voice-* signaling channel ARN")
                if service == "sts" and "*" in r:
                    problems.append(f"{where}: {a} on wildcard resource {r!r}; name the role")
    elif principal is None:
        problems.append(f"{where}: identity-policy Allow without Resource")
    return problems


def _principal_values(principal: Any) -> list[str]:
    if principal is None:
        return []
    if isinstance(principal, str):
        return [principal]
    out: list[str] = []
    if isinstance(principal, dict):
        for v in principal.values():
            out.extend(c for c in _candidates(v))
    return out


def check_template_dict(template: dict, label: str = "template") -> list[str]:
    """Every policy problem in a parsed template, before and after the SAM transform."""
    problems: list[str] = []
    for where, doc in iter_policy_documents(template.get("Resources", {}), f"{label}:Resources"):
        problems.extend(check_policy(doc, where))
    for name, res in template.get("Resources", {}).items():
        props = res.get("Properties", {}) if isinstance(res, dict) else {}
        if res.get("Type") in ("AWS::IAM::Role", "AWS::IAM::User", "AWS::IAM::Group") and props.get(
            "ManagedPolicyArns"
        ):
            problems.append(
                f"{label}:Resources.{name}: ManagedPolicyArns {props['ManagedPolicyArns']!r}; "
                "managed policies cannot be checked here (AWSLambdaBasicExecutionRole grants logs on '*'): inline exact permissions"
            )
        if res.get("Type") == "AWS::Serverless::Function" and "Policies" in props:
            problems.append(
                f"{label}:Resources.{name}: SAM Policies/policy templates; use the explicit role and VoiceFunctionPolicy"
            )
    if "Transform" in template:
        transformed = sam_transform(template)
        for where, doc in iter_policy_documents(
            transformed.get("Resources", {}), f"{label}(after SAM transform):Resources"
        ):
            problems.extend(check_policy(doc, where))
    return sorted(set(problems))


def check_template(path: Path | str = TEMPLATE) -> list[str]:
    """Every policy problem in a template file."""
    return check_template_dict(load_template(path), str(path))


# ------------------------------------------------------------------------------------------------
# Policy examples in Markdown docs
# ------------------------------------------------------------------------------------------------

# Fenced code blocks, also indented ones (inside list items).
FENCE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
VERSION_IN_TEXT = re.compile(r'"Version"\s*:\s*"([^"]*)"')


def check_markdown(path: Path | str) -> list[str]:
    """Policy examples in fenced code blocks of a Markdown file: full checks when the block is
    JSON, at least the Version when it is not (placeholders, comments)."""
    path = Path(path)
    problems: list[str] = []
    for n, m in enumerate(FENCE.finditer(path.read_text(encoding="utf-8"))):
        block = m.group(1)
        if '"Statement"' not in block:
            continue
        where = f"{path.name} code block {n + 1}"
        try:
            data = json.loads(block)
        except json.JSONDecodeError:
            for v in VERSION_IN_TEXT.findall(block):
                if v != POLICY_VERSION:
                    problems.append(f"{where}: Version is {v!r}, must be {POLICY_VERSION!r}")
            continue
        for w, doc in iter_policy_documents(data, where):
            problems.extend(check_policy(doc, w))
    return problems


def markdown_files(docs: Path = DOCS) -> list[Path]:
    """The Markdown docs whose policy examples are checked."""
    return sorted(docs.glob("*.md")) if docs.is_dir() else []


# ------------------------------------------------------------------------------------------------
# Shape of the trust between the two roles (the heart of the security model)
# ------------------------------------------------------------------------------------------------


def _roles_assuming(template: dict) -> dict[str, list]:
    """Role logical id -> the Resource values of sts:AssumeRole grants in policies attached to it."""
    out: dict[str, list] = {}
    for name, res in template.get("Resources", {}).items():
        t = res.get("Type")
        props = res.get("Properties", {})
        docs: list[tuple[list[str], dict]] = []
        if t == "AWS::IAM::Role":
            for p in props.get("Policies", []):
                docs.append(([name], p.get("PolicyDocument", {})))
        elif t in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"):
            refs = _as_list(props.get("Roles")) + _as_list(props.get("RoleName"))
            roles = [r.get("Ref") for r in refs if isinstance(r, dict) and r.get("Ref")]
            docs.append((roles, props.get("PolicyDocument", {})))
        for roles, doc in docs:
            for st in _as_list(doc.get("Statement")):
                if st.get("Effect") == "Allow" and "sts:AssumeRole" in _as_list(st.get("Action")):
                    for r in roles:
                        out.setdefault(r, []).extend(_as_list(st.get("Resource")))
    return out


def kvs_role_problems(template: dict, kvs_role: str = "KvsClientRole", function: str = "VoiceFunction") -> list[str]:
    """The KVS client role is assumable only by the function's execution role, the function's
    role may assume only that role, and the function is told that role's ARN."""
    problems: list[str] = []
    res = template.get("Resources", {})
    fn = res.get(function, {}).get("Properties", {})
    role_ref = fn.get("Role")
    if not (isinstance(role_ref, dict) and role_ref.get("Fn::GetAtt") in (["VoiceFunctionRole", "Arn"], "VoiceFunctionRole.Arn")):
        problems.append(f"{function}.Role must be !GetAtt VoiceFunctionRole.Arn, got {role_ref!r}")
        return problems
    fn_role = "VoiceFunctionRole"

    kvs = res.get(kvs_role)
    if not kvs or kvs.get("Type") != "AWS::IAM::Role":
        return problems + [f"{kvs_role} is not an AWS::IAM::Role"]
    trust = kvs["Properties"].get("AssumeRolePolicyDocument", {})
    statements = _as_list(trust.get("Statement"))
    if len(statements) != 1:
        problems.append(f"{kvs_role} trust must have exactly one statement, has {len(statements)}")
    for st in statements:
        if st.get("Effect") != "Allow":
            continue
        principal = st.get("Principal")
        if not isinstance(principal, dict) or set(principal) != {"AWS"}:
            problems.append(f"{kvs_role} trust Principal must be only {{AWS: <function role ARN>}}, got {principal!r}")
            continue
        if _as_list(principal["AWS"]) != [{"Fn::GetAtt": [fn_role, "Arn"]}]:
            problems.append(f"{kvs_role} trust must admit only {fn_role}'s ARN, got {principal['AWS']!r}")
        if _as_list(st.get("Action")) != ["sts:AssumeRole"]:
            problems.append(f"{kvs_role} trust must allow only sts:AssumeRole, got {st.get('Action')!r}")

    assumes = _roles_assuming(template)
    for role, targets in assumes.items():
        if role != fn_role:
            problems.append(f"{role} may assume roles ({targets!r}); only {fn_role} should")
    if _as_list(assumes.get(fn_role)) != [{"Fn::GetAtt": [kvs_role, "Arn"]}]:
        problems.append(f"{fn_role} must be able to assume exactly {kvs_role}, got {assumes.get(fn_role)!r}")

    env = fn.get("Environment", {}).get("Variables", {})
    if env.get("KVS_ROLE_ARN") != {"Fn::GetAtt": [kvs_role, "Arn"]}:
        problems.append(f"{function} KVS_ROLE_ARN must be !GetAtt {kvs_role}.Arn, got {env.get('KVS_ROLE_ARN')!r}")
    return problems


def granted_actions(policy_doc: dict) -> dict[str, list]:
    """Action -> Resource values it is allowed on, over a document's Allow statements."""
    out: dict[str, list] = {}
    for st in _as_list(policy_doc.get("Statement")):
        if st.get("Effect") != "Allow":
            continue
        for a in _as_list(st.get("Action")):
            out.setdefault(a, []).extend(_candidates(st.get("Resource")))
    return out


def dynamodb_scope_problems(doc: dict, where: str) -> list[str]:
    """DynamoDB grants name tables: no ``dynamodb:*``, no ``Resource "*"``, and no ARN with a
    wildcard (``table/*``, ``.../index/*``): every Allow of a dynamodb action is on table ARNs
    (``!GetAtt X.Arn`` or an ``arn:...:table/${Name}`` pattern without ``*``) or on one named
    index of a template table (``${X.Arn}/index/name``)."""
    problems: list[str] = []
    for i, st in enumerate(_as_list(doc.get("Statement"))):
        if not isinstance(st, dict) or st.get("Effect") != "Allow":
            continue
        actions = [a for a in _as_list(st.get("Action")) if isinstance(a, str) and a.startswith("dynamodb:")]
        if not actions:
            continue
        for a in actions:
            if "*" in a:
                problems.append(f"{where}.Statement[{i}]: action wildcard {a!r}")
        for r in _candidates(st.get("Resource")):
            if r == "*" or "*" in r:
                problems.append(f"{where}.Statement[{i}]: {actions[0]} on a wildcard table {r!r}")
            elif not (
                r.startswith("<GetAtt ")
                or ":dynamodb:" in r and ":table/" in r
                # One named index of a table of this template (`!Sub ${Table.Arn}/index/name`).
                or re.fullmatch(r"\$\{\w+\.Arn\}/index/[A-Za-z0-9_.-]+", r)
            ):
                problems.append(f"{where}.Statement[{i}]: {actions[0]} on {r!r}, not a table ARN")
    return problems


def matches_arn_pattern(arn: str, pattern: str) -> bool:
    """IAM-style match (``*`` any run of characters, ``?`` one) of a concrete ARN."""
    return fnmatch.fnmatchcase(arn, pattern)
