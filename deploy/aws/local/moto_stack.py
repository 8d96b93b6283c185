#!/usr/bin/env python3
"""The data half of deploy/aws/template.yaml, on a local moto server: what the local stack
(tests/browser/aws-local-stack.mjs, docs/deploy-aws.md "Try the AWS stack locally") runs the real
voice-lambda bootstrap against.

    python3 deploy/aws/local/moto_stack.py --api-domain 127.0.0.1:8443 [--param ChatMode=builtin]

It starts moto (DynamoDB, Secrets Manager, S3) on 127.0.0.1 (a free port), and then, reading the
template rather than a hand copy of it:

- creates every AWS::DynamoDB::Table whose Condition holds, with the template's TableName (a
  table without one, like ChannelPoolTable, gets CloudFormation's <stack>-<logical id>-<random>
  shape with LOCAL as the random part), keys, attribute definitions, indexes, billing mode and
  TTL attribute;
- creates the S3 buckets the function's environment names (the recordings bucket), with their
  encryption, public access block, lifecycle and CORS rules;
- creates every AWS::SecretsManager::Secret whose Condition holds; a GenerateSecretString is
  honoured by asking Secrets Manager's own GetRandomPassword with the template's length and
  exclusions, as CloudFormation does;
- resolves VoiceFunction's Environment.Variables as CloudFormation would (Ref, GetAtt, Sub,
  If, Select, Split, AWS::NoValue, the pseudo parameters) for a stack named --stack in
  us-east-1, account 123456789012. The one substitution: the WebSocket API's domain
  (`${ApiId}.execute-api.${AWS::Region}.${AWS::URLSuffix}`) is --api-domain, the local API
  Gateway stand-in.

Then it prints one JSON line on stdout, {"endpoint", "stackId", "environment", "tables",
"secrets", "roles"}, and serves until its stdin closes (so it cannot outlive whoever started
it), answering one request at a time: moto's TransactWriteItems is not safe under concurrent
requests (voice-adapters-aws/src/testing.rs, SERIAL_MOTO, says why).
"""

import argparse
import json
import os
import re
import secrets
import sys
import threading
import uuid

import boto3
import yaml
from moto.server import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import WSGIRequestHandler, make_server

TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "template.yaml")
REGION = "us-east-1"
ACCOUNT = "123456789012"
# Fixed test-only credentials for moto (it checks none); never real ones.
ACCESS_KEY, SECRET_KEY = "AKIDLOCALSTACK", "local-stack-not-a-secret"


class Tag:
    def __init__(self, name, value):
        self.name, self.value = name, value


def _loader():
    class Loader(yaml.SafeLoader):
        pass

    def construct(loader, suffix, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return Tag(suffix, value)

    Loader.add_multi_constructor("!", construct)
    return Loader


def short(name):
    """A CloudFormation intrinsic in long form (Fn::If) or short (!If) -> 'If'."""
    return name[4:] if name.startswith("Fn::") else name


class Stack:
    def __init__(self, template, name, params, api_domain):
        self.t = template
        self.name = name
        self.id = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{name}/{uuid.uuid4()}"
        self.api_domain = api_domain
        self.params = {}
        for key, spec in template.get("Parameters", {}).items():
            value = params.get(key, spec.get("Default", ""))
            allowed = spec.get("AllowedValues")
            if allowed is not None and value not in allowed:
                raise SystemExit(f"parameter {key}={value!r} is not one of {allowed}")
            self.params[key] = str(value)
        unknown = set(params) - set(self.params)
        if unknown:
            raise SystemExit(f"the template has no parameter(s) {sorted(unknown)}")
        self.physical = {}  # logical id -> Ref value
        self.arns = {}  # logical id -> Arn attribute

    def pseudo(self, name):
        return {
            "AWS::StackName": self.name,
            "AWS::StackId": self.id,
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }.get(name)

    def condition(self, name):
        return bool(self.value(self.t["Conditions"][name]))

    def enabled(self, resource):
        return "Condition" not in resource or self.condition(resource["Condition"])

    def ref(self, name):
        if name in self.params:
            return self.params[name]
        if self.pseudo(name) is not None:
            return self.pseudo(name)
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.physical:
            return self.physical[name]
        raise SystemExit(f"Ref {name}: not a parameter or a resource this script creates")

    def get_att(self, spec):
        logical, attr = spec.split(".", 1) if isinstance(spec, str) else spec
        if attr == "Arn" and logical in self.arns:
            return self.arns[logical]
        # The web client is served by the local front (CloudFront's stand-in), on the API's host.
        if logical == "WebClientDistribution" and attr == "DomainName":
            return self.api_domain
        raise SystemExit(f"GetAtt {logical}.{attr}: not known locally")

    def sub(self, text, variables):
        # The WebSocket API's domain is the local API Gateway stand-in's.
        text = re.sub(r"\$\{\w+\}\.execute-api\.\$\{AWS::Region\}\.\$\{AWS::URLSuffix\}", self.api_domain, text)

        def one(m):
            key = m.group(1)
            if key in variables:
                return str(self.value(variables[key]))
            if "." in key:
                return self.get_att(key)
            return str(self.ref(key))

        return re.sub(r"\$\{([\w:.]+)\}", one, text)

    def value(self, node):
        if isinstance(node, Tag):
            return self.fn(short(node.name), node.value)
        if isinstance(node, dict) and len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref" or key.startswith("Fn::") or key == "Condition":
                return self.fn(short(key), arg)
        if isinstance(node, dict):
            out = {k: self.value(v) for k, v in node.items()}
            return {k: v for k, v in out.items() if v is not NO_VALUE}
        if isinstance(node, list):
            return [v for v in (self.value(x) for x in node) if v is not NO_VALUE]
        return node

    def fn(self, name, arg):
        if name == "Ref":
            return self.ref(arg)
        if name == "GetAtt":
            return self.get_att(arg)
        if name == "Condition":
            return self.condition(arg)
        if name == "Equals":
            a, b = (self.value(x) for x in arg)
            return str(a) == str(b)
        if name == "Not":
            return not self.value(arg[0])
        if name == "And":
            return all(self.value(x) for x in arg)
        if name == "Or":
            return any(self.value(x) for x in arg)
        if name == "If":
            cond, yes, no = arg
            return self.value(yes if self.condition(cond) else no)
        if name == "Sub":
            if isinstance(arg, list):
                text, variables = arg
                return self.sub(text, variables)  # evaluated when used
            return self.sub(arg, {})
        if name == "Split":
            sep, text = arg
            return str(self.value(text)).split(sep)
        if name == "Select":
            index, items = arg
            return self.value(items)[int(self.value(index))]
        if name == "Join":
            sep, items = arg
            return sep.join(str(x) for x in self.value(items))
        raise SystemExit(f"intrinsic {name} is not supported by moto_stack.py")


NO_VALUE = object()


def create_tables(stack, ddb):
    tables = {}
    for logical, res in stack.t["Resources"].items():
        if res.get("Type") != "AWS::DynamoDB::Table" or not stack.enabled(res):
            continue
        p = stack.value(res["Properties"])
        # Without a TableName, CloudFormation names the table <stack>-<logical id>-<random>.
        name = p.get("TableName") or f"{stack.name}-{logical}-LOCAL"
        p["TableName"] = name
        args = {
            "TableName": name,
            "AttributeDefinitions": p["AttributeDefinitions"],
            "KeySchema": p["KeySchema"],
            "BillingMode": p.get("BillingMode", "PROVISIONED"),
        }
        if args["BillingMode"] == "PROVISIONED":
            args["ProvisionedThroughput"] = p["ProvisionedThroughput"]
        if p.get("GlobalSecondaryIndexes"):
            args["GlobalSecondaryIndexes"] = p["GlobalSecondaryIndexes"]
        if p.get("SSESpecification"):
            args["SSESpecification"] = {"Enabled": bool(p["SSESpecification"].get("SSEEnabled"))}
        if p.get("Tags"):
            args["Tags"] = p["Tags"]
        ddb.create_table(**args)
        ttl = p.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            ddb.update_time_to_live(
                TableName=p["TableName"],
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        # Ref of a table is its name; GetAtt Arn its ARN.
        stack.physical[logical] = p["TableName"]
        stack.arns[logical] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{p['TableName']}"
        tables[logical] = p["TableName"]
    return tables


def create_secrets(stack, sm):
    made = {}
    for logical, res in stack.t["Resources"].items():
        if res.get("Type") != "AWS::SecretsManager::Secret" or not stack.enabled(res):
            continue
        p = stack.value(res["Properties"])
        gen = p.get("GenerateSecretString")
        if gen:
            opts = {"PasswordLength": int(gen.get("PasswordLength", 32))}
            for flag in ("ExcludePunctuation", "ExcludeNumbers", "ExcludeLowercase", "ExcludeUppercase", "IncludeSpace", "RequireEachIncludedType"):
                if flag in gen:
                    opts[flag] = bool(gen[flag])
            if "ExcludeCharacters" in gen:
                opts["ExcludeCharacters"] = gen["ExcludeCharacters"]
            value = sm.get_random_password(**opts)["RandomPassword"]
        else:
            value = p["SecretString"]
        # CloudFormation names an unnamed secret <logical id>-<random>.
        name = p.get("Name") or f"{logical}-{secrets.token_hex(6)}"
        arn = sm.create_secret(Name=name, SecretString=value, Description=p.get("Description", ""))["ARN"]
        stack.physical[logical] = arn  # Ref of a secret is its ARN
        made[logical] = arn
    return made


def create_buckets(stack, s3):
    """The template's recordings bucket (every AWS::S3::Bucket the function's environment names)
    with its encryption, public access block, lifecycle and CORS rules as far as moto keeps them.
    CloudFormation names an unnamed bucket <stack>-<logical id>-<random>, lowercased."""
    made = {}
    env = stack.t["Resources"]["VoiceFunction"]["Properties"]["Environment"]["Variables"]
    wanted = {v.value for v in env.values() if isinstance(v, Tag) and short(v.name) == "Ref" and isinstance(v.value, str)}
    for logical, res in stack.t["Resources"].items():
        if res.get("Type") != "AWS::S3::Bucket" or logical not in wanted or not stack.enabled(res):
            continue
        p = stack.value(res["Properties"])
        name = p.get("BucketName") or f"{stack.name}-{logical}-local".lower()
        s3.create_bucket(Bucket=name)
        if "BucketEncryption" in p:
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": r["ServerSideEncryptionByDefault"], "BucketKeyEnabled": bool(r.get("BucketKeyEnabled"))} for r in p["BucketEncryption"]["ServerSideEncryptionConfiguration"]]})
        if "PublicAccessBlockConfiguration" in p:
            s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=p["PublicAccessBlockConfiguration"])
        rules = []
        for r in p.get("LifecycleConfiguration", {}).get("Rules", []):
            rule = {"ID": r["Id"], "Status": r["Status"], "Filter": {"Prefix": r.get("Prefix", "")}}
            if "ExpirationInDays" in r:
                rule["Expiration"] = {"Days": int(r["ExpirationInDays"])}
            if "AbortIncompleteMultipartUpload" in r:
                rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": int(r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])}
            rules.append(rule)
        if rules:
            s3.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": rules})
        cors = p.get("CorsConfiguration", {}).get("CorsRules", [])
        if cors:
            s3.put_bucket_cors(Bucket=name, CORSConfiguration={"CORSRules": [
                {"AllowedOrigins": c["AllowedOrigins"], "AllowedMethods": c["AllowedMethods"], "AllowedHeaders": c.get("AllowedHeaders", []), "MaxAgeSeconds": int(c.get("MaxAge", 0))} for c in cors
            ]})
        stack.physical[logical] = name  # Ref of a bucket is its name
        stack.arns[logical] = f"arn:aws:s3:::{name}"
        made[logical] = {"name": name, "cors": cors}
    return made


def name_roles(stack):
    """IAM roles are not created (the local STS stand-in checks the role ARN itself); they get
    the ARN CloudFormation would give them: <stack>-<logical id>-<random>."""
    roles = {}
    for logical, res in stack.t["Resources"].items():
        if res.get("Type") == "AWS::IAM::Role" and stack.enabled(res):
            arn = f"arn:aws:iam::{ACCOUNT}:role/{stack.name}-{logical}-{secrets.token_hex(6).upper()}"
            stack.arns[logical] = arn
            roles[logical] = arn
    return roles


def function_environment(stack):
    fn = stack.t["Resources"]["VoiceFunction"]
    env = stack.value(fn["Properties"]["Environment"]["Variables"])
    return {k: str(v) for k, v in env.items()}


def api_routes(stack):
    """The WebSocket API's routes whose Condition holds: route key, and whether the Lambda's reply
    goes back to the caller (a RouteResponseSelectionExpression and a RouteResponse for it)."""
    resources = stack.t["Resources"]
    answered = set()
    for res in resources.values():
        if res.get("Type") == "AWS::ApiGatewayV2::RouteResponse" and stack.enabled(res):
            route = res["Properties"]["RouteId"]
            answered.add(route.value if isinstance(route, Tag) else route.get("Ref"))
    routes = []
    for logical, res in resources.items():
        if res.get("Type") == "AWS::ApiGatewayV2::Route" and stack.enabled(res):
            p = res["Properties"]
            two_way = "RouteResponseSelectionExpression" in p and logical in answered
            routes.append({"routeKey": p["RouteKey"], "twoWay": two_way})
    return routes


def outputs(stack, names):
    return {n: stack.value(stack.t["Outputs"][n]["Value"]) for n in names if n in stack.t.get("Outputs", {})}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--api-domain", required=True, help="host:port of the local API Gateway stand-in")
    ap.add_argument("--stack", default="voice-local")
    ap.add_argument("--param", action="append", default=[], help="Name=Value, a template parameter")
    ap.add_argument("--template", default=TEMPLATE)
    args = ap.parse_args()
    params = dict(p.split("=", 1) for p in args.param)

    with open(args.template) as f:
        template = yaml.load(f, Loader=_loader())
    stack = Stack(template, args.stack, params, args.api_domain)

    class Quiet(WSGIRequestHandler):
        def log_request(self, *args, **kwargs):
            pass

    server = make_server("127.0.0.1", 0, DomainDispatcherApplication(create_backend_app), threaded=False, request_handler=Quiet)
    endpoint = f"http://127.0.0.1:{server.server_port}"
    threading.Thread(target=server.serve_forever, daemon=True).start()

    session = boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY, region_name=REGION)
    tables = create_tables(stack, session.client("dynamodb", endpoint_url=endpoint))
    made_secrets = create_secrets(stack, session.client("secretsmanager", endpoint_url=endpoint))
    buckets = create_buckets(stack, session.client("s3", endpoint_url=endpoint))
    roles = name_roles(stack)
    env = function_environment(stack)
    fn = stack.t["Resources"]["VoiceFunction"]["Properties"]
    api = next(r for r in stack.t["Resources"].values() if r.get("Type") == "AWS::ApiGatewayV2::Api")

    print(json.dumps({"endpoint": endpoint, "stackId": stack.id, "environment": env, "tables": tables, "secrets": made_secrets, "roles": roles, "buckets": buckets,
        "routes": api_routes(stack),
        "routeSelectionExpression": api["Properties"]["RouteSelectionExpression"],
        "stage": stack.params["StageName"],
        "function": {"timeout": fn["Timeout"], "memorySize": fn["MemorySize"], "handler": fn["Handler"]},
        "outputs": outputs(stack, ["WebSocketUrl", "WebClientConfig"]),
        # The ceiling of the browsers' sessions: KvsClientRole's own policy (the session policy
        # can only narrow it).
        "kvsClientRolePolicies": [stack.value(p["PolicyDocument"]) for p in stack.t["Resources"]["KvsClientRole"]["Properties"]["Policies"]],
    }), flush=True)
    # Serve until whoever started us closes our stdin (or exits).
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
