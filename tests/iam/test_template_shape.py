"""The template deploys what voice-lambda and voice-adapters-aws expect (names are read from their
sources, so a rename on either side fails here), and its security-relevant shape is right: the
trust between the two roles, exact action lists, routes that reply, a private HTTPS web client.
"""

from __future__ import annotations

import json
import re

import pytest

import policy_checks as pc
import sdk_calls

REPO = pc.REPO

# The chat variables, read by voice-adapters-aws's parser: the mode, builtin's tables and key,
# and existing mode's attribute names (ENV_ATTRIBUTES, an array the const scan does not see).
CHAT_STORE_ENV = {
    "CHAT_MODE",
    "USERS_TABLE",
    "MESSAGES_TABLE",
    "RESUME_KEY_SECRET_ARN",
    "CHAT_CONNECTION_ID_ATTR",
    "CHAT_CONNECTION_USER_ATTR",
    "CHAT_ROOM_ID_ATTR",
    "CHAT_ROOM_ADMIN_ATTR",
    "CHAT_ROOM_MEMBERS_ATTR",
    "CHAT_ROOM_PENDING_ATTR",
}
CHAT_TABLES = ("ChatConnectionsTable", "ChatRoomsTable", "ChatUsersTable", "ChatMessagesTable")

# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def props(template, name):
    return template["Resources"][name]["Properties"]


def of_type(template, type_):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def rust_consts(path):
    """`pub const NAME: &str = "value";` pairs of a Rust source file."""
    text = (REPO / path).read_text(encoding="utf-8")
    return dict(re.findall(r'pub const (\w+): &str = "([^"]*)";', text))


def substitute(pattern, **values):
    """Resolves ${AWS::...}/${Name} in a Fn::Sub pattern with example values."""
    defaults = {
        "AWS::Partition": "aws",
        "AWS::Region": "us-east-1",
        "AWS::AccountId": "123456789012",
        "AWS::URLSuffix": "amazonaws.com",
    }
    defaults.update(values)
    return re.sub(r"\$\{([^}]+)\}", lambda m: defaults[m.group(1)], pattern)


def sub_pattern(value):
    """The pattern string of a Fn::Sub (short or list form)."""
    arg = value["Fn::Sub"]
    return arg[0] if isinstance(arg, list) else arg


# ------------------------------------------------------------------------------------------------
# Alignment with the Rust crates
# ------------------------------------------------------------------------------------------------


def test_voice_rooms_table_matches_the_dynamodb_adapter(parsed_template):
    attrs = rust_consts("voice-adapters-aws/src/store.rs")
    table = props(parsed_template, "VoiceRoomsTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": attrs["ID"], "KeyType": "HASH"}]
    assert attrs["ID"] == "voiceRoomId"
    assert table["AttributeDefinitions"] == [{"AttributeName": "voiceRoomId", "AttributeType": "S"}]
    assert table["TimeToLiveSpecification"] == {"AttributeName": attrs["EXPIRES_AT"], "Enabled": True}
    assert attrs["EXPIRES_AT"] == "expiresAt"
    assert table["SSESpecification"] == {"SSEEnabled": True}
    # Lock items share the table (no second table, no GSI needed).
    assert "GlobalSecondaryIndexes" not in table


def test_channel_pool_table_matches_the_pool_adapter(parsed_template):
    attrs = rust_consts("voice-adapters-aws/src/pool.rs")
    table = props(parsed_template, "ChannelPoolTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["KeySchema"] == [{"AttributeName": attrs["ARN"], "KeyType": "HASH"}]
    defs = {d["AttributeName"]: d["AttributeType"] for d in table["AttributeDefinitions"]}
    assert defs == {attrs["ARN"]: "S", attrs["FREE_KEY"]: "S", attrs["FREE_FROM"]: "N"}
    [index] = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == attrs["FREE_INDEX"]
    assert index["KeySchema"] == [
        {"AttributeName": attrs["FREE_KEY"], "KeyType": "HASH"},
        {"AttributeName": attrs["FREE_FROM"], "KeyType": "RANGE"},
    ]
    assert table["SSESpecification"] == {"SSEEnabled": True}
    env = props(parsed_template, "VoiceFunction")["Environment"]["Variables"]
    assert env["CHANNEL_POOL_TABLE"] == {"Ref": "ChannelPoolTable"}
    assert env["CHANNEL_POOL_IDLE_HOURS"] == {"Ref": "ChannelPoolIdleHours"}
    hours = parsed_template["Parameters"]["ChannelPoolIdleHours"]
    # The adapters' parser accepts 1..=8760; the parameter must not allow more.
    assert (hours["MinValue"], hours["MaxValue"], hours["Default"]) == (1, 8760, 168)


def test_the_pool_may_query_only_its_free_index(parsed_template):
    doc = props(parsed_template, "VoiceFunctionPolicy")["PolicyDocument"]
    items = next(s for s in doc["Statement"] if s["Sid"] == "ChannelPoolItems")
    assert items["Resource"] == {"Fn::GetAtt": ["ChannelPoolTable", "Arn"]}
    assert "dynamodb:Query" not in items["Action"]
    index = next(s for s in doc["Statement"] if s["Sid"] == "ChannelPoolFreeIndex")
    assert index["Action"] == "dynamodb:Query"
    assert index["Resource"] == {"Fn::Sub": "${ChannelPoolTable.Arn}/index/free-by-time"}


def test_environment_matches_what_the_lambda_reads(parsed_template):
    # The AWS settings are parsed by voice-adapters-aws (one parser); the Lambda adds its own.
    aws = {k: v for k, v in rust_consts("voice-adapters-aws/src/config.rs").items() if k.startswith("ENV_")}
    consts = {**aws, **rust_consts("voice-lambda/src/config.rs")}
    env = props(parsed_template, "VoiceFunction")["Environment"]["Variables"]
    read_by_lambda = set(consts.values())
    required = {consts[k] for k in ("ENV_CONNECTIONS_TABLE", "ENV_ROOMS_TABLE", "ENV_VOICE_ROOMS_TABLE", "ENV_KVS_ROLE_ARN")}
    assert required <= set(env), f"missing: {required - set(env)}"
    # Set for the chat store (DynamoChat) ahead of voice-lambda reading them; documented in
    # docs/aws-adapters.md ("Environment") so that the wiring is one step.
    assert set(env) - read_by_lambda <= CHAT_STORE_ENV, f"set but never read: {set(env) - read_by_lambda}"
    config_rs = (REPO / "voice-adapters-aws" / "src" / "config.rs").read_text(encoding="utf-8")
    for name in CHAT_STORE_ENV - read_by_lambda:
        assert f'"{name}"' in config_rs, f"{name} is set but voice-adapters-aws never reads it"
    assert set(env) == required | {
        "VOICE_ROOM_CAPACITY",
        "VOICE_RECONNECT_GRACE_SECS",
        "VOICE_LIVENESS_TIMEOUT_SECS",
        "APIGW_MANAGEMENT_ENDPOINT",
        "VOICE_STACK_ID",
        "CHANNEL_POOL_TABLE",
        "CHANNEL_POOL_IDLE_HOURS",
        "RECORDINGS_BUCKET",
    } | CHAT_STORE_ENV
    doc = (REPO / "docs" / "aws-adapters.md").read_text(encoding="utf-8")
    for name in CHAT_STORE_ENV:
        assert f"`{name}`" in doc, f"{name} is not documented in docs/aws-adapters.md"
    # Lambda sets AWS_REGION itself; defining it is rejected at deploy time (reserved key).
    assert "AWS_REGION" not in env and "AWS_REGION" in read_by_lambda


def test_the_management_endpoint_is_this_apis_stage(parsed_template):
    env = props(parsed_template, "VoiceFunction")["Environment"]["Variables"]
    pattern = sub_pattern(env["APIGW_MANAGEMENT_ENDPOINT"])
    assert substitute(pattern, ApiId="abc123defg", StageName="production") == (
        "https://abc123defg.execute-api.us-east-1.amazonaws.com/production"
    )


def test_code_uri_is_where_cargo_lambda_puts_the_binary(parsed_template):
    fn = props(parsed_template, "VoiceFunction")
    cargo = (REPO / "voice-lambda" / "Cargo.toml").read_text(encoding="utf-8")
    assert re.search(r'^name = "voice-lambda"$', cargo, re.M)
    # A [[bin]] with another name would change the cargo-lambda output directory.
    assert "[[bin]]" not in cargo
    assert fn["CodeUri"] == "../../target/lambda/voice-lambda/"
    assert (pc.TEMPLATE.parent / fn["CodeUri"]).resolve() == REPO / "target" / "lambda" / "voice-lambda"
    assert fn["Handler"] == "bootstrap"
    assert fn["Runtime"] == "provided.al2023"
    assert fn["Architectures"] == ["arm64"]
    assert fn["Timeout"] == 30
    assert fn["MemorySize"] == 256


def test_the_sweep_runs_every_minute(parsed_template):
    # The liveness backstop (a room where nobody sends keepalives any more) needs EventBridge's
    # shortest rate; cost in docs/deploy-aws.md.
    events = props(parsed_template, "VoiceFunction")["Events"]
    schedules = [e for e in events.values() if e["Type"] == "Schedule"]
    assert [e["Properties"]["Schedule"] for e in schedules] == ["rate(1 minute)"]


def test_routes_are_the_protocols_actions(parsed_template):
    text = (REPO / "voice-domain" / "src" / "protocol.rs").read_text(encoding="utf-8")
    block = re.search(r"pub const VOICE_ACTIONS: &\[&str\] = &\[(.*?)\];", text, re.S).group(1)
    actions = set(re.findall(r'"(\w+)"', block))
    assert actions == {"createVoiceRoom", "getVoiceCredentials", "endVoiceRoom", "leaveVoiceRoom", "setMute", "serverMute", "getVoiceRoom", "startRecording", "stopRecording", "startScreenShare", "stopScreenShare", "setScreenSharePolicy"}
    routes = {r["Properties"]["RouteKey"]: name for name, r in of_type(parsed_template, "AWS::ApiGatewayV2::Route").items()}
    assert set(routes) == actions | {"$disconnect", "$default"}


# ------------------------------------------------------------------------------------------------
# WebSocket API
# ------------------------------------------------------------------------------------------------


def test_the_api_selects_routes_on_the_action_field(parsed_template):
    api = props(parsed_template, "WebSocketApi")
    assert api["ProtocolType"] == "WEBSOCKET"
    assert api["RouteSelectionExpression"] == "$request.body.action"


def test_every_route_is_a_lambda_proxy_and_replies(parsed_template):
    integration = props(parsed_template, "VoiceIntegration")
    assert integration["IntegrationType"] == "AWS_PROXY"
    assert "${VoiceFunction.Arn}" in sub_pattern(integration["IntegrationUri"])
    responses = {
        r["Properties"]["RouteId"]["Ref"]: r["Properties"]["RouteResponseKey"]
        for r in of_type(parsed_template, "AWS::ApiGatewayV2::RouteResponse").values()
    }
    for name, route in of_type(parsed_template, "AWS::ApiGatewayV2::Route").items():
        p = route["Properties"]
        assert p["Target"] == {"Fn::Sub": "integrations/${VoiceIntegration}"}, name
        if p["RouteKey"] == "$disconnect":
            # One-way by nature: the socket is already closed.
            assert "RouteResponseSelectionExpression" not in p and name not in responses
            continue
        assert p["RouteResponseSelectionExpression"] == "$default", name
        assert responses.get(name) == "$default", f"{name} has no $default route response"


def test_existing_api_mode_adds_only_the_voice_routes(parsed_template):
    # The chat app owns $disconnect/$default on its own API; creating them again would fail.
    for name, route in of_type(parsed_template, "AWS::ApiGatewayV2::Route").items():
        key = route["Properties"]["RouteKey"]
        if key.startswith("$"):
            assert route.get("Condition") == "CreateWebSocketApi", name
        else:
            assert "Condition" not in route, name
    deps = parsed_template["Resources"]["ExistingApiDeployment"]
    assert deps["Condition"] == "UseExistingWebSocketApi"
    assert props(parsed_template, "ExistingApiDeployment")["StageName"] == {"Ref": "StageName"}
    created = parsed_template["Resources"]["WebSocketDeployment"]["DependsOn"]
    assert {"DisconnectRoute", "DefaultRoute"} <= set(created)


def test_stage_is_production_by_default(parsed_template):
    assert parsed_template["Parameters"]["StageName"]["Default"] == "production"
    assert props(parsed_template, "WebSocketStage")["StageName"] == {"Ref": "StageName"}


def test_api_gateway_may_invoke_the_function_only_from_this_stage(parsed_template):
    perm = props(parsed_template, "VoiceFunctionApiPermission")
    assert perm["Principal"] == "apigateway.amazonaws.com"
    assert perm["Action"] == "lambda:InvokeFunction"
    arn = substitute(sub_pattern(perm["SourceArn"]), ApiId="abc123defg", StageName="production")
    assert arn == "arn:aws:execute-api:us-east-1:123456789012:abc123defg/production/*"


# ------------------------------------------------------------------------------------------------
# IAM: exact grants
# ------------------------------------------------------------------------------------------------

CHANNEL = "arn:aws:kinesisvideo:us-east-1:123456789012:channel/voice-0f8fad5b-d9cb-469f-a165-70867728950e/1700000000000"
OTHER_CHANNEL = "arn:aws:kinesisvideo:us-east-1:123456789012:channel/prod-camera/1700000000000"


def test_kvs_role_trust_admits_only_the_function_role(parsed_template):
    assert pc.kvs_role_problems(parsed_template) == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda t: props(t, "KvsClientRole")["AssumeRolePolicyDocument"]["Statement"][0]["Principal"].__setitem__(
                "Service", "lambda.amazonaws.com"
            ),
            "trust Principal must be only",
        ),
        (
            lambda t: props(t, "KvsClientRole")["AssumeRolePolicyDocument"]["Statement"][0]["Principal"].__setitem__(
                "AWS", {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
            ),
            "trust must admit only VoiceFunctionRole",
        ),
        (
            lambda t: props(t, "KvsClientRole")["AssumeRolePolicyDocument"]["Statement"].append(
                {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
            ),
            "exactly one statement",
        ),
        (
            lambda t: props(t, "VoiceFunctionPolicy")["PolicyDocument"]["Statement"].append(
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": {"Fn::GetAtt": ["VoiceFunctionRole", "Arn"]}}
            ),
            "must be able to assume exactly KvsClientRole",
        ),
        (
            lambda t: props(t, "KvsClientRole")["Policies"][0]["PolicyDocument"]["Statement"].append(
                {"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": {"Fn::GetAtt": ["KvsClientRole", "Arn"]}}
            ),
            "KvsClientRole may assume roles",
        ),
        (
            lambda t: props(t, "VoiceFunction")["Environment"]["Variables"].__setitem__("KVS_ROLE_ARN", "arn:aws:iam::123456789012:role/x"),
            "KVS_ROLE_ARN must be",
        ),
    ],
    ids=["service-principal", "account-root", "second-statement", "assume-other", "kvs-role-chains", "env"],
)
def test_trust_checker_catches_a_widened_trust(template, mutate, expected):
    mutate(template)
    problems = pc.kvs_role_problems(template)
    assert any(expected in p for p in problems), problems


def test_browsers_can_signal_on_voice_channels_and_nothing_else(parsed_template):
    doc = props(parsed_template, "KvsClientRole")["Policies"][0]["PolicyDocument"]
    grants = pc.granted_actions(doc)
    assert set(grants) == {
        "kinesisvideo:ConnectAsMaster",
        "kinesisvideo:ConnectAsViewer",
        "kinesisvideo:GetSignalingChannelEndpoint",
        "kinesisvideo:GetIceServerConfig",
        "kinesisvideo:DescribeSignalingChannel",
    }
    for resources in grants.values():
        assert resources == ["arn:${AWS::Partition}:kinesisvideo:${AWS::Region}:${AWS::AccountId}:channel/voice-*/*"]
        pattern = substitute(resources[0])
        assert pc.matches_arn_pattern(CHANNEL, pattern)
        assert not pc.matches_arn_pattern(OTHER_CHANNEL, pattern)


def test_the_function_role_has_exactly_the_calls_it_makes(parsed_template):
    doc = props(parsed_template, "VoiceFunctionPolicy")["PolicyDocument"]
    grants = pc.granted_actions(doc)
    kvs = {a for a in grants if a.startswith("kinesisvideo:")}
    assert kvs == {
        "kinesisvideo:CreateSignalingChannel",
        "kinesisvideo:TagResource",
        "kinesisvideo:DeleteSignalingChannel",
        "kinesisvideo:DescribeSignalingChannel",
        "kinesisvideo:GetSignalingChannelEndpoint",
        "kinesisvideo:GetIceServerConfig",
        "kinesisvideo:ListTagsForResource",
        "kinesisvideo:ListSignalingChannels",
    }
    # Connecting is for browsers only: the Lambda never signals itself.
    assert "kinesisvideo:ConnectAsMaster" not in grants and "kinesisvideo:ConnectAsViewer" not in grants
    for action in kvs - {"kinesisvideo:ListSignalingChannels"}:
        for r in grants[action]:
            assert pc.matches_arn_pattern(CHANNEL, substitute(r)), (action, r)
            assert not pc.matches_arn_pattern(OTHER_CHANNEL, substitute(r)), (action, r)
    assert grants["sts:AssumeRole"] == ["<GetAtt KvsClientRole.Arn>"]
    assert grants["execute-api:ManageConnections"] == [
        "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${ApiId}/${StageName}/POST/@connections/*"
    ]
    services = {a.split(":")[0] for a in grants}
    assert services == {"kinesisvideo", "sts", "dynamodb", "execute-api", "s3"}
    # Recordings: objects under recordings/ of this stack's bucket, listing only that prefix.
    for action in ("s3:PutObject", "s3:GetObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert grants[action] == ["${RecordingsBucket.Arn}/recordings/*"], (action, grants[action])
    listing = next(s for s in doc["Statement"] if s.get("Sid") == "RecordingsList")
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Condition"] == {"StringLike": {"s3:prefix": "recordings/*"}}


def test_the_function_may_only_read_the_chat_tables(parsed_template):
    doc = props(parsed_template, "VoiceFunctionPolicy")["PolicyDocument"]
    st = next(s for s in doc["Statement"] if s["Sid"] == "ChatTablesReadOnly")
    assert sorted(st["Action"]) == ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"]
    rw = next(s for s in doc["Statement"] if s["Sid"] == "VoiceRoomsReadWrite")
    assert sorted(rw["Action"]) == ["dynamodb:BatchGetItem", "dynamodb:DeleteItem", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Scan"]
    assert rw["Resource"] == {"Fn::GetAtt": ["VoiceRoomsTable", "Arn"]}


# ------------------------------------------------------------------------------------------------
# IAM vs. the adapters' source: exactly the calls they make
# ------------------------------------------------------------------------------------------------


def test_the_adapters_calls_are_found():
    # Guards against a vacuous comparison below: the scan must see the calls we know exist.
    required = sdk_calls.required_by_module()
    assert "testing.rs" not in required, "test helpers must not count as production calls"
    assert {"store.rs", "directory.rs", "chat_store.rs", "channels.rs", "credentials.rs", "notifier.rs", "pool.rs"} <= set(required)
    assert required["pool.rs"] == {
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Scan",
        "dynamodb:Query",
    }
    # The chat store's transaction items count although the call that sends them is store.rs's.
    assert {"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"} <= required["chat_store.rs"]
    assert "dynamodb:PutItem" in required["store.rs"] and "dynamodb:DeleteItem" in required["store.rs"]
    assert "kinesisvideo:CreateSignalingChannel" in required["channels.rs"]
    assert "kinesisvideo:GetIceServerConfig" in required["channels.rs"]
    assert required["credentials.rs"] == {"sts:AssumeRole"}
    assert required["notifier.rs"] == {"execute-api:ManageConnections/POST"}


def test_the_function_policy_grants_exactly_what_the_adapters_call(parsed_template):
    assert sdk_calls.function_policy_problems(parsed_template, sdk_calls.required_by_module()) == []


def test_a_call_the_policy_lacks_is_caught(parsed_template):
    required = sdk_calls.required_by_module()
    required["store.rs"] = required["store.rs"] | sdk_calls.calls_in(
        "fn f() { client.update_item().send(); client.transact_write_items(); "
        "TransactWriteItem::builder().condition_check(c).build(); }"
    )
    required["channels.rs"] = required["channels.rs"] | {"kinesisvideo:UpdateSignalingChannel"}
    problems = sdk_calls.function_policy_problems(parsed_template, required)
    assert "store.rs calls dynamodb:UpdateItem, but statement VoiceRoomsReadWrite does not grant it" in problems
    assert "store.rs calls dynamodb:ConditionCheckItem, but statement VoiceRoomsReadWrite does not grant it" in problems
    assert "the adapters call kinesisvideo:UpdateSignalingChannel, which the function policy does not grant" in problems


def test_a_grant_no_call_needs_is_caught(template):
    doc = props(template, "VoiceFunctionPolicy")["PolicyDocument"]
    rw = next(s for s in doc["Statement"] if s["Sid"] == "VoiceRoomsReadWrite")
    rw["Action"].append("dynamodb:BatchWriteItem")
    doc["Statement"].append(
        {"Effect": "Allow", "Action": "kinesisvideo:ConnectAsMaster", "Resource": {"Fn::Sub": "arn:aws:kinesisvideo:us-east-1:123456789012:channel/voice-*/*"}}
    )
    push = next(s for s in doc["Statement"] if s["Sid"] == "PushToThisApiStageOnly")
    push["Resource"] = {"Fn::Sub": ["arn:aws:execute-api:us-east-1:123456789012:${ApiId}/production/*/@connections/*", {}]}
    problems = sdk_calls.function_policy_problems(template, sdk_calls.required_by_module())
    assert "statement VoiceRoomsReadWrite grants dynamodb:BatchWriteItem, which store.rs never calls" in problems
    assert "the function policy grants kinesisvideo:ConnectAsMaster, which no adapter calls" in problems
    assert any(p.startswith("ManageConnections granted on") for p in problems), problems


def test_session_policies_fit_inside_the_kvs_role(parsed_template):
    # A session policy can only narrow the role: an action the adapter puts in it that the role
    # lacks would be silently dropped, and browsers would get AccessDenied.
    creds = REPO / "voice-adapters-aws" / "src" / "credentials.rs"
    master = set(sdk_calls.rust_str_array(creds, "MASTER_ACTIONS"))
    viewer = set(sdk_calls.rust_str_array(creds, "VIEWER_ACTIONS"))
    assert "kinesisvideo:ConnectAsMaster" in master and "kinesisvideo:ConnectAsViewer" in viewer
    role = pc.granted_actions(props(parsed_template, "KvsClientRole")["Policies"][0]["PolicyDocument"])
    assert master | viewer == set(role)
    assert rust_consts("voice-adapters-aws/src/credentials.rs")["POLICY_VERSION"] == "2012-10-17"


def test_channel_creation_requires_the_tag_the_adapter_sets(parsed_template):
    tags = rust_consts("voice-adapters-aws/src/channels.rs")
    st = next(
        s
        for s in props(parsed_template, "VoiceFunctionPolicy")["PolicyDocument"]["Statement"]
        if s["Sid"] == "CreateVoiceChannels"
    )
    stack_id = {"Fn::Select": [2, {"Fn::Split": ["/", {"Ref": "AWS::StackId"}]}]}
    assert st["Condition"] == {
        "StringEquals": {f"aws:RequestTag/{tags['APP']}": tags["APP_VALUE"], f"aws:RequestTag/{tags['STACK']}": stack_id}
    }
    assert (tags["APP"], tags["APP_VALUE"], tags["STACK"]) == ("app", "voice-rooms", "voiceStack")
    # Deleting only this stack's channels, with the id the function tags them with.
    delete = [
        s
        for s in props(parsed_template, "VoiceFunctionPolicy")["PolicyDocument"]["Statement"]
        if "kinesisvideo:DeleteSignalingChannel" in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]
    assert [s["Sid"] for s in delete] == ["DeleteThisStacksChannels"]
    assert delete[0]["Condition"] == {"StringEquals": {f"aws:ResourceTag/{tags['STACK']}": stack_id}}
    assert props(parsed_template, "VoiceFunction")["Environment"]["Variables"]["VOICE_STACK_ID"] == stack_id


def test_logs_go_only_to_the_functions_own_log_group(parsed_template):
    role = props(parsed_template, "VoiceFunctionRole")
    assert "ManagedPolicyArns" not in role
    doc = role["Policies"][0]["PolicyDocument"]
    assert pc.granted_actions(doc) == {
        "logs:CreateLogStream": ["<GetAtt VoiceFunctionLogGroup.Arn>"],
        "logs:PutLogEvents": ["<GetAtt VoiceFunctionLogGroup.Arn>"],
    }
    assert props(parsed_template, "VoiceFunction")["LoggingConfig"]["LogGroup"] == {"Ref": "VoiceFunctionLogGroup"}


# ------------------------------------------------------------------------------------------------
# Web client
# ------------------------------------------------------------------------------------------------


def test_the_bucket_is_private_and_read_only_by_this_distribution(parsed_template):
    bucket = props(parsed_template, "WebClientBucket")
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    allow = [s for s in props(parsed_template, "WebClientBucketPolicy")["PolicyDocument"]["Statement"] if s["Effect"] == "Allow"]
    assert len(allow) == 1
    assert allow[0]["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert allow[0]["Action"] == "s3:GetObject"
    assert "${WebClientDistribution}" in allow[0]["Condition"]["StringEquals"]["AWS:SourceArn"]["Fn::Sub"]


def test_the_client_is_served_over_https_so_the_microphone_works(parsed_template):
    dist = props(parsed_template, "WebClientDistribution")["DistributionConfig"]
    behaviors = [dist["DefaultCacheBehavior"], *dist.get("CacheBehaviors", [])]
    assert all(b["ViewerProtocolPolicy"] in ("redirect-to-https", "https-only") for b in behaviors)
    assert dist["Origins"][0]["OriginAccessControlId"] == {"Fn::GetAtt": ["WebClientOriginAccessControl", "Id"]}
    assert dist["DefaultRootObject"] == "index.html"
    # config.json is never cached, so a redeploy's WebSocket URL takes effect at once.
    config = [b for b in dist["CacheBehaviors"] if b["PathPattern"] == "config.json"]
    assert config and config[0]["CachePolicyId"] == "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"


# ------------------------------------------------------------------------------------------------
# Outputs
# ------------------------------------------------------------------------------------------------


def test_outputs_name_everything_an_operator_needs(parsed_template):
    outputs = parsed_template["Outputs"]
    assert {
        "WebSocketUrl",
        "WebClientUrl",
        "WebClientConfig",
        "WebClientBucketName",
        "WebClientDistributionId",
        "VoiceRoomsTableName",
        "KvsRoleArn",
        "VoiceFunctionName",
        "VoiceFunctionLogGroupName",
    } <= set(outputs)
    ws = substitute(sub_pattern(outputs["WebSocketUrl"]["Value"]), ApiId="abc123defg", StageName="production")
    assert ws == "wss://abc123defg.execute-api.us-east-1.amazonaws.com/production"


def test_the_config_output_is_the_documented_config_json(parsed_template):
    value = parsed_template["Outputs"]["WebClientConfig"]["Value"]
    # "chat" tells the web client whether this stack serves the chat (builtin: the page signs in
    # with hello and shows rooms) or an existing chat app does (the page does voice only).
    for chat_mode in parsed_template["Parameters"]["ChatMode"]["AllowedValues"]:
        config = json.loads(substitute(sub_pattern(value), ApiId="abc123defg", StageName="production", ChatMode=chat_mode))
        assert config == {
            "mode": "aws",
            "webSocketUrl": "wss://abc123defg.execute-api.us-east-1.amazonaws.com/production",
            "region": "us-east-1",
            "chat": chat_mode,
        }


# ------------------------------------------------------------------------------------------------
# Chat modes: builtin creates the chat tables and may write exactly them; existing creates none
# ------------------------------------------------------------------------------------------------


def test_chat_mode_is_builtin_by_default_and_existing_is_the_only_other(parsed_template):
    p = parsed_template["Parameters"]["ChatMode"]
    assert p["Default"] == "builtin"
    assert p["AllowedValues"] == ["builtin", "existing"]
    assert parsed_template["Conditions"]["BuiltinChat"] == {"Fn::Equals": [{"Ref": "ChatMode"}, "builtin"]}
    assert parsed_template["Conditions"]["ExistingChat"] == {"Fn::Equals": [{"Ref": "ChatMode"}, "existing"]}
    # existing mode must be told its tables: an empty name fails the deploy before anything is made.
    rule = parsed_template["Rules"]["ExistingChatNamesItsTables"]
    asserted = json.dumps(rule["Assertions"])
    assert "ExistingConnectionsTable" in asserted and "ExistingRoomsTable" in asserted


def test_existing_mode_creates_no_chat_table(parsed_template):
    tables = of_type(parsed_template, "AWS::DynamoDB::Table")
    assert set(tables) == {"VoiceRoomsTable", "ChannelPoolTable", *CHAT_TABLES}
    for name in CHAT_TABLES:
        assert tables[name].get("Condition") == "BuiltinChat", name
    # Voice's own tables exist in both modes.
    assert "Condition" not in tables["VoiceRoomsTable"]
    assert "Condition" not in tables["ChannelPoolTable"]


def test_chat_tables_match_the_chat_store(parsed_template):
    chat = rust_consts("voice-adapters-aws/src/chat_store.rs")
    directory = (REPO / "voice-adapters-aws/src/directory.rs").read_text(encoding="utf-8")
    # The shared tables' keys are DirectorySchema's defaults (what both adapters use).
    assert 'connection_id_attr: "connectionId".into()' in directory
    assert 'room_id_attr: "roomId".into()' in directory
    keys = {
        "ChatConnectionsTable": [("connectionId", "S", "HASH")],
        "ChatRoomsTable": [("roomId", "S", "HASH")],
        "ChatUsersTable": [(chat["USER_ID"], "S", "HASH")],
        "ChatMessagesTable": [(chat["ROOM_ID"], "S", "HASH"), (chat["SEQ"], "N", "RANGE")],
    }
    for name, want in keys.items():
        t = props(parsed_template, name)
        assert t["BillingMode"] == "PAY_PER_REQUEST", name
        assert t["SSESpecification"] == {"SSEEnabled": True}, name
        assert [(k["AttributeName"], k["KeyType"]) for k in t["KeySchema"]] == [(a, k) for a, _, k in want], name
        types = {d["AttributeName"]: d["AttributeType"] for d in t["AttributeDefinitions"]}
        assert types == {a: ty for a, ty, _ in want}, name
        # No index: the store never queries one, and an index would be paid for on every write.
        assert "GlobalSecondaryIndexes" not in t, name
    # TTL where data expires: connections (the store writes expiresAt); nothing else expires by age.
    assert props(parsed_template, "ChatConnectionsTable")["TimeToLiveSpecification"] == {
        "AttributeName": chat["EXPIRES_AT"],
        "Enabled": True,
    }
    for name in ("ChatRoomsTable", "ChatUsersTable", "ChatMessagesTable"):
        assert "TimeToLiveSpecification" not in props(parsed_template, name), name
    # Point-in-time recovery as the voice table has it (it has none).
    for name in ("VoiceRoomsTable", *CHAT_TABLES):
        assert "PointInTimeRecoverySpecification" not in props(parsed_template, name), name


def test_chat_table_names_reach_the_function(parsed_template):
    env = props(parsed_template, "VoiceFunction")["Environment"]["Variables"]
    assert env["CONNECTIONS_TABLE"] == {
        "Fn::If": ["BuiltinChat", {"Ref": "ChatConnectionsTable"}, {"Ref": "ExistingConnectionsTable"}]
    }
    assert env["ROOMS_TABLE"] == {"Fn::If": ["BuiltinChat", {"Ref": "ChatRoomsTable"}, {"Ref": "ExistingRoomsTable"}]}
    assert env["USERS_TABLE"] == {"Fn::If": ["BuiltinChat", {"Ref": "ChatUsersTable"}, {"Ref": "AWS::NoValue"}]}
    assert env["MESSAGES_TABLE"] == {"Fn::If": ["BuiltinChat", {"Ref": "ChatMessagesTable"}, {"Ref": "AWS::NoValue"}]}
    assert env["CHAT_MODE"] == {"Ref": "ChatMode"}
    # existing mode's attribute names, each from its parameter, defaulting to DirectorySchema's.
    directory = (REPO / "voice-adapters-aws/src/directory.rs").read_text(encoding="utf-8")
    for var, param, field in [
        ("CHAT_CONNECTION_ID_ATTR", "ExistingConnectionIdAttribute", "connection_id_attr"),
        ("CHAT_CONNECTION_USER_ATTR", "ExistingConnectionUserAttribute", "connection_user_attr"),
        ("CHAT_ROOM_ID_ATTR", "ExistingRoomIdAttribute", "room_id_attr"),
        ("CHAT_ROOM_ADMIN_ATTR", "ExistingRoomAdminAttribute", "room_admin_attr"),
        ("CHAT_ROOM_MEMBERS_ATTR", "ExistingRoomMembersAttribute", "room_members_attr"),
        ("CHAT_ROOM_PENDING_ATTR", "ExistingRoomPendingAttribute", "room_pending_attr"),
    ]:
        assert env[var] == {"Fn::If": ["ExistingChat", {"Ref": param}, {"Ref": "AWS::NoValue"}]}, var
        default = parsed_template["Parameters"][param]["Default"]
        assert f'{field}: "{default}".into()' in directory, (param, default)


def test_the_chat_store_policy_grants_exactly_its_calls_per_table(parsed_template):
    assert sdk_calls.chat_store_policy_problems(parsed_template, sdk_calls.required_by_module()) == []


def test_no_dynamodb_grant_is_wider_than_a_named_table(parsed_template):
    for where, doc in pc.iter_policy_documents(parsed_template["Resources"], "R"):
        assert pc.dynamodb_scope_problems(doc, where) == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda st: st.__setitem__("Action", ["dynamodb:*"]), "action wildcard 'dynamodb:*'"),
        (lambda st: st.__setitem__("Resource", "*"), "Resource '*' for dynamodb:GetItem"),
        (
            lambda st: st.__setitem__(
                "Resource", {"Fn::Sub": "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/*"}
            ),
            "dynamodb:GetItem on a wildcard table",
        ),
        (
            lambda st: st.__setitem__(
                "Resource", [{"Fn::GetAtt": ["ChatUsersTable", "Arn"]}, {"Fn::Sub": "${ChatUsersTable.Arn}/index/*"}]
            ),
            "dynamodb:GetItem on a wildcard table",
        ),
    ],
)
def test_a_wider_chat_grant_is_caught(template, mutate, expected):
    doc = props(template, "ChatStorePolicy")["PolicyDocument"]
    mutate(doc["Statement"][0])
    problems = pc.check_policy(doc, "broken") + pc.dynamodb_scope_problems(doc, "broken")
    assert any(expected in p for p in problems), problems
    assert sdk_calls.chat_store_policy_problems(template, sdk_calls.required_by_module()) != []


def test_a_chat_grant_on_the_wrong_table_or_without_a_call_is_caught(template):
    doc = props(template, "ChatStorePolicy")["PolicyDocument"]
    users = next(s for s in doc["Statement"] if s["Sid"] == "ChatUsersReadWrite")
    users["Action"].append("dynamodb:PutItem")
    messages = next(s for s in doc["Statement"] if s["Sid"] == "ChatMessagesReadWrite")
    messages["Resource"] = {"Fn::GetAtt": ["ChatRoomsTable", "Arn"]}
    required = sdk_calls.required_by_module()
    required["chat_store.rs"] = required["chat_store.rs"] | {"dynamodb:BatchWriteItem"}
    problems = sdk_calls.chat_store_policy_problems(template, required)
    assert "statement ChatUsersReadWrite grants dynamodb:PutItem on ChatUsersTable, which the chat store never calls there" in problems
    assert "ChatStorePolicy has no statement for ChatMessagesTable" in problems
    assert "chat_store.rs calls dynamodb:BatchWriteItem, which no chat table grants" in problems
    del template["Resources"]["ChatStorePolicy"]["Condition"]
    assert any("Condition: BuiltinChat" in p for p in sdk_calls.chat_store_policy_problems(template, sdk_calls.required_by_module()))


# ------------------------------------------------------------------------------------------------
# The resume-token key: generated by Secrets Manager, readable by the function only
# ------------------------------------------------------------------------------------------------


def test_the_resume_key_is_generated_never_written_down(parsed_template):
    res = parsed_template["Resources"]["ResumeKeySecret"]
    assert res["Type"] == "AWS::SecretsManager::Secret"
    assert res["Condition"] == "BuiltinChat"
    p = res["Properties"]
    assert "SecretString" not in p, "the key must be generated, not written in the template"
    gen = p["GenerateSecretString"]
    assert gen["PasswordLength"] >= 32
    env = props(parsed_template, "VoiceFunction")["Environment"]["Variables"]
    assert env["RESUME_KEY_SECRET_ARN"] == {"Fn::If": ["BuiltinChat", {"Ref": "ResumeKeySecret"}, {"Ref": "AWS::NoValue"}]}
    # The parser and the adapter agree on the variable and the minimum length.
    consts = rust_consts("voice-adapters-aws/src/config.rs")
    assert consts["ENV_RESUME_KEY_SECRET_ARN"] == "RESUME_KEY_SECRET_ARN"
    text = (REPO / "voice-adapters-aws" / "src" / "secrets.rs").read_text(encoding="utf-8")
    m = re.search(r"MIN_RESUME_KEY_CHARS: usize = (\d+);", text)
    assert m and gen["PasswordLength"] >= int(m.group(1)) >= 32


def test_only_the_function_may_read_the_resume_key_and_only_it(parsed_template):
    assert "secrets.rs" in sdk_calls.required_by_module()
    assert sdk_calls.required_by_module()["secrets.rs"] == {"secretsmanager:GetSecretValue"}
    assert sdk_calls.resume_key_policy_problems(parsed_template, sdk_calls.required_by_module()) == []


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda st: st.update(Resource="*"), "not exactly ResumeKeySecret"),
        (lambda st: st.update(Action=["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]), "grants secretsmanager:PutSecretValue"),
        (lambda st: st.update(Action="secretsmanager:DescribeSecret"), "does not grant it"),
    ],
)
def test_a_wider_resume_key_grant_is_caught(template, mutate, expected):
    mutate(props(template, "ResumeKeyPolicy")["PolicyDocument"]["Statement"][0])
    problems = sdk_calls.resume_key_policy_problems(template, sdk_calls.required_by_module())
    assert any(expected in p for p in problems), problems


def test_a_secrets_grant_elsewhere_is_caught(template):
    props(template, "VoiceFunctionPolicy")["PolicyDocument"]["Statement"].append(
        {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": {"Ref": "ResumeKeySecret"}}
    )
    problems = sdk_calls.resume_key_policy_problems(template, sdk_calls.required_by_module())
    assert any("only ResumeKeyPolicy may" in p for p in problems), problems


def test_the_recordings_bucket_is_private_encrypted_https_only_and_expires(parsed_template):
    """Issue 17: recordings in S3, encrypted, lifecycle expiry, HTTPS only, no public access,
    CORS only for the web client's own origin."""
    res = parsed_template["Resources"]
    b = res["RecordingsBucket"]["Properties"]
    enc = b["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    assert enc["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert all(b["PublicAccessBlockConfiguration"][k] is True for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    (rule,) = b["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and rule["Prefix"] == "recordings/"
    assert rule["ExpirationInDays"] == {"Ref": "RecordingRetentionDays"}
    assert rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] >= 1
    assert parsed_template["Parameters"]["RecordingRetentionDays"]["MinValue"] >= 1
    (cors,) = b["CorsConfiguration"]["CorsRules"]
    assert cors["AllowedOrigins"] == [{"Fn::Sub": "https://${WebClientDistribution.DomainName}"}]
    assert sorted(cors["AllowedMethods"]) == ["GET", "PUT"]
    policy = res["RecordingsBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "RecordingsBucket"}
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    fn = res["VoiceFunction"]["Properties"]["Environment"]["Variables"]
    assert fn["RECORDINGS_BUCKET"] == {"Ref": "RecordingsBucket"}
