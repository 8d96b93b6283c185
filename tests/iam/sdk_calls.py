"""Which AWS calls the production code of voice-adapters-aws makes, read from its Rust source, and
whether the function's IAM policy grants exactly those.

Why from the source: "least privilege" drifts both ways. An adapter that starts calling
`UpdateItem` fails in production with AccessDenied (moto enforces no IAM, so no Rust test would
notice); a permission nobody calls any more stays granted forever. Matching SDK method names
(`.get_item()`, `.create_signaling_channel()`) against the operations botocore knows for the five
services turns both into a failing test.
"""

from __future__ import annotations

import re
from pathlib import Path

import policy_checks as pc

ADAPTERS = pc.REPO / "voice-adapters-aws" / "src"

# botocore service name -> IAM service prefix.
SERVICES = {
    "dynamodb": "dynamodb",
    "kinesisvideo": "kinesisvideo",
    "kinesis-video-signaling": "kinesisvideo",
    "sts": "sts",
    "apigatewaymanagementapi": "execute-api",
    "secretsmanager": "secretsmanager",
    "s3": "s3",
}

# S3 operations whose IAM action is not s3:<Operation>
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html):
# HeadObject needs s3:GetObject, ListObjectsV2 s3:ListBucket, the multipart calls s3:PutObject,
# DeleteObjects s3:DeleteObject for each key.
S3_ACTIONS = {
    "HeadObject": "s3:GetObject",
    "ListObjectsV2": "s3:ListBucket",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "DeleteObjects": "s3:DeleteObject",
}

# DynamoDB transactions are authorized item by item, as the item's own action.
TRANSACTION_ITEMS = {
    "put": "dynamodb:PutItem",
    "delete": "dynamodb:DeleteItem",
    "update": "dynamodb:UpdateItem",
    "condition_check": "dynamodb:ConditionCheckItem",
}

# API Gateway management operations -> the HTTP method in execute-api:ManageConnections' resource.
MANAGEMENT_METHODS = {"PostToConnection": "POST", "DeleteConnection": "DELETE", "GetConnection": "GET"}

# Granted although no SDK method of that name is called, and why.
IMPLIED = {
    "kinesisvideo:TagResource": "tags passed to CreateSignalingChannel (tag-on-create)",
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _operations() -> dict[str, list[tuple[str, str]]]:
    """snake_case SDK method -> [(botocore service, OperationName)]."""
    import botocore.session

    session = botocore.session.get_session()
    ops: dict[str, list[tuple[str, str]]] = {}
    for service in SERVICES:
        for op in session.get_service_model(service).operation_names:
            ops.setdefault(_snake(op), []).append((service, op))
    return ops


def production_modules(src: Path = ADAPTERS) -> list[Path]:
    """The crate's modules that ship: `pub mod x;` in lib.rs not gated behind a cfg attribute
    (the moto/test helpers are behind `#[cfg(feature = "test-support")]`)."""
    lines = (src / "lib.rs").read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines):
        m = re.match(r"\s*(?:pub\s+)?mod\s+(\w+)\s*;", line)
        if not m:
            continue
        if i > 0 and lines[i - 1].strip().startswith("#[cfg("):
            continue
        out.append(src / f"{m.group(1)}.rs")
    return out


def _without_tests(text: str) -> str:
    return text.split("#[cfg(test)]", 1)[0]


def calls_in(text: str) -> set[str]:
    """IAM actions the SDK calls in `text` need (tests excluded)."""
    ops = _operations()
    code = _without_tests(text)
    actions: set[str] = set()
    # A module may build transaction items and hand them to a shared helper that sends them
    # (the chat store uses the voice store's): its items count wherever the call itself is.
    for item in re.findall(r"TransactWriteItem::builder\(\)\s*\.(\w+)\(", code):
        actions.add(TRANSACTION_ITEMS[item])
    for method in set(re.findall(r"\.([a-z_][a-z0-9_]*)\(\)", code)) & set(ops):
        for service, op in ops[method]:
            prefix = SERVICES[service]
            if op == "TransactWriteItems":
                continue
            elif service == "s3":
                actions.add(S3_ACTIONS.get(op, f"s3:{op}"))
            elif service == "apigatewaymanagementapi":
                actions.add(f"execute-api:ManageConnections/{MANAGEMENT_METHODS[op]}")
            else:
                actions.add(f"{prefix}:{op}")
    return actions


def required_by_module(src: Path = ADAPTERS) -> dict[str, set[str]]:
    """Module file name -> IAM actions its calls need."""
    return {p.name: calls_in(p.read_text(encoding="utf-8")) for p in production_modules(src)}


def _statement(template: dict, sid: str) -> dict:
    doc = template["Resources"]["VoiceFunctionPolicy"]["Properties"]["PolicyDocument"]
    for st in doc["Statement"]:
        if st.get("Sid") == sid:
            return st
    return {}


def function_policy_problems(template: dict, required: dict[str, set[str]]) -> list[str]:
    """The function policy vs. the adapters' calls: every call granted, on the right resources,
    and nothing granted that no call needs (except :data:`IMPLIED`)."""
    problems: list[str] = []
    doc = template["Resources"]["VoiceFunctionPolicy"]["Properties"]["PolicyDocument"]
    granted = pc.granted_actions(doc)
    all_required = set().union(*required.values()) if required else set()

    # Per table: the store's DynamoDB calls on the voice table, the directory's on the chat tables.
    # The channel pool's calls are split over two statements: items on the table, Query only on
    # its free index.
    for module, sids in (
        ("store.rs", ("VoiceRoomsReadWrite",)),
        ("directory.rs", ("ChatTablesReadOnly",)),
        ("pool.rs", ("ChannelPoolItems", "ChannelPoolFreeIndex")),
    ):
        want = {a for a in required.get(module, set()) if a.startswith("dynamodb:")}
        have = set()
        for sid in sids:
            have |= set(pc._as_list(_statement(template, sid).get("Action")))
        sid = " + ".join(sids)
        for a in sorted(want - have):
            problems.append(f"{module} calls {a}, but statement {sid} does not grant it")
        for a in sorted(have - want):
            problems.append(f"statement {sid} grants {a}, which {module} never calls")

    # Secrets Manager calls are granted by ResumeKeyPolicy (see resume_key_policy_problems).
    others = {a for a in all_required if not a.startswith(("dynamodb:", "secretsmanager:"))}
    for a in sorted(others):
        if a.startswith("execute-api:ManageConnections/"):
            method = a.rsplit("/", 1)[1]
            resources = granted.get("execute-api:ManageConnections", [])
            if not any(f"/{method}/@connections/" in r for r in resources):
                problems.append(f"the adapters call the management API with {method}, which is not granted")
        elif a not in granted:
            problems.append(f"the adapters call {a}, which the function policy does not grant")
    for a in sorted(granted):
        if a.startswith("dynamodb:"):
            continue
        if a == "execute-api:ManageConnections":
            methods = {x.rsplit("/", 1)[1] for x in others if x.startswith("execute-api:ManageConnections/")}
            for r in granted[a]:
                m = re.search(r"/([A-Z*]+)/@connections/", r)
                if not m or m.group(1) not in methods:
                    problems.append(f"ManageConnections granted on {r!r}, but the adapters only use {sorted(methods)}")
            continue
        if a not in others and a not in IMPLIED:
            problems.append(f"the function policy grants {a}, which no adapter calls")
    return problems


def resume_key_policy_problems(template: dict, required: dict[str, set[str]]) -> list[str]:
    """ResumeKeyPolicy vs. secrets.rs: only in builtin mode, exactly the Secrets Manager calls
    the adapters make, on exactly the stack's ResumeKeySecret (no other secret, no wildcard)."""
    problems: list[str] = []
    want = {a for acts in required.values() for a in acts if a.startswith("secretsmanager:")}
    res = template["Resources"].get("ResumeKeyPolicy")
    if res is None:
        return ["no ResumeKeyPolicy resource"]
    if res.get("Condition") != "BuiltinChat":
        problems.append("ResumeKeyPolicy must exist only with ChatMode=builtin (Condition: BuiltinChat)")
    if template["Resources"].get("ResumeKeySecret", {}).get("Condition") != "BuiltinChat":
        problems.append("ResumeKeySecret must exist only with ChatMode=builtin (Condition: BuiltinChat)")
    doc = res["Properties"]["PolicyDocument"]
    have: set[str] = set()
    for st in doc["Statement"]:
        actions = set(pc._as_list(st.get("Action")))
        have |= actions
        if st.get("Resource") != {"Ref": "ResumeKeySecret"}:
            problems.append(f"ResumeKeyPolicy grants {sorted(actions)} on {st.get('Resource')!r}, not exactly ResumeKeySecret")
    for a in sorted(want - have):
        problems.append(f"secrets.rs calls {a}, but ResumeKeyPolicy does not grant it")
    for a in sorted(have - want):
        problems.append(f"ResumeKeyPolicy grants {a}, which no adapter calls")
    for name, other in template["Resources"].items():
        if name == "ResumeKeyPolicy":
            continue
        for where, d in pc.iter_policy_documents({name: other}, "R"):
            if any(a.startswith("secretsmanager:") for a in pc.granted_actions(d)):
                problems.append(f"{where} grants Secrets Manager actions; only ResumeKeyPolicy may")
    return problems


def rust_str_array(path: Path, name: str) -> list[str]:
    """The strings of `const NAME: &[&str] = &[ ... ];` in a Rust file."""
    text = path.read_text(encoding="utf-8")
    m = re.search(rf"const {name}: &\[&str\] = &\[(.*?)\];", text, re.S)
    if not m:
        raise AssertionError(f"{path} has no const {name}")
    return re.findall(r'"([^"]*)"', m.group(1))


# The chat store's DynamoDB actions, table by table, as docs/aws-adapters.md ("Chat tables")
# lists them. Which call reaches which table cannot be read from the source reliably; this map
# is that reading, and the tests check it against the source (its union is exactly the module's
# calls) and against the template (ChatStorePolicy grants exactly this, each on its table only).
CHAT_STORE_TABLE_ACTIONS = {
    # UpdateItem: the sign-up gate's per-address counter (signups.rs), kept in this table for its TTL.
    "ChatConnectionsTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Scan"},
    "ChatRoomsTable": {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Scan"},
    "ChatUsersTable": {"dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:BatchGetItem"},
    "ChatMessagesTable": {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"},
}


def chat_store_policy_problems(template: dict, required: dict[str, set[str]]) -> list[str]:
    """ChatStorePolicy vs. chat_store.rs: only in builtin mode, one statement per chat table
    granting exactly :data:`CHAT_STORE_TABLE_ACTIONS` on exactly that table's ARN (no index, no
    wildcard), and together exactly the DynamoDB calls the module makes."""
    problems: list[str] = []
    res = template["Resources"].get("ChatStorePolicy")
    if res is None:
        return ["no ChatStorePolicy resource"]
    if res.get("Condition") != "BuiltinChat":
        problems.append("ChatStorePolicy must exist only with ChatMode=builtin (Condition: BuiltinChat)")
    doc = res["Properties"]["PolicyDocument"]
    granted_total: set[str] = set()
    seen_tables: set[str] = set()
    for st in pc._as_list(doc.get("Statement")):
        sid = st.get("Sid", "?")
        resource = st.get("Resource")
        table = None
        if isinstance(resource, dict) and list(resource) == ["Fn::GetAtt"]:
            target = resource["Fn::GetAtt"]
            target = target if isinstance(target, list) else str(target).split(".")
            if len(target) == 2 and target[1] == "Arn":
                table = target[0]
        if table not in CHAT_STORE_TABLE_ACTIONS:
            problems.append(f"statement {sid} is on {resource!r}, not exactly one chat table's ARN")
            continue
        seen_tables.add(table)
        actions = set(pc._as_list(st.get("Action")))
        granted_total |= actions
        for a in sorted(CHAT_STORE_TABLE_ACTIONS[table] - actions):
            problems.append(f"statement {sid} lacks {a} on {table}")
        for a in sorted(actions - CHAT_STORE_TABLE_ACTIONS[table]):
            problems.append(f"statement {sid} grants {a} on {table}, which the chat store never calls there")
    for table in sorted(set(CHAT_STORE_TABLE_ACTIONS) - seen_tables):
        problems.append(f"ChatStorePolicy has no statement for {table}")
    mapped = set().union(*CHAT_STORE_TABLE_ACTIONS.values())
    calls: set[str] = set()
    for module in ("chat_store.rs", "signups.rs"):
        these = {a for a in required.get(module, set()) if a.startswith("dynamodb:")}
        calls |= these
        for a in sorted(these - mapped):
            problems.append(f"{module} calls {a}, which no chat table grants")
    for a in sorted(mapped - calls):
        problems.append(f"the chat tables are granted {a}, which neither chat_store.rs nor signups.rs calls")
    return problems
