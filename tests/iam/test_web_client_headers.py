"""The web client's response headers on CloudFront (AWS mode): a strict Content-Security-Policy
equal to the self-hosted server's (voice-server/src/http.rs) except that connect-src names exactly
this stack's WebSocket API and the regional Kinesis Video Streams signaling hosts, plus HSTS,
nosniff, frame denial and no referrer, on every cache behaviour of the distribution.

`header_problems` returns human-readable problems (empty = fine), so the tests show both that the
real template passes and that a broken copy is caught. The assumptions the policy rests on (what
the vendored KVS SDK and the page load and connect to) are checked against the files themselves.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

import policy_checks as pc

REPO = pc.REPO
STATIC = REPO / "voice-server" / "static"
SDK_BUNDLE = STATIC / "vendor" / "kvs-webrtc.min.js"

DISTRIBUTION = "WebClientDistribution"
REGION = "us-east-1"
URL_SUFFIX = "amazonaws.com"
# Example values for the two ways the stack gets its API (a new one, or the chat app's).
NEW_API_ID = "newapi0001"
EXISTING_API_ID = "oldapi0002"
BRANCHES = {
    "new-api": {"CreateWebSocketApi": True, "UseExistingWebSocketApi": False},
    "existing-api": {"CreateWebSocketApi": False, "UseExistingWebSocketApi": True},
}
KVS_SIGNALING = f"wss://*.kinesisvideo.{REGION}.{URL_SUFFIX}"
# signaling.js's GetIceServerConfig (fresh TURN credentials) on each channel's HTTPS endpoint.
KVS_HTTPS = f"https://*.kinesisvideo.{REGION}.{URL_SUFFIX}"
S3_REGIONAL = f"https://*.s3.{REGION}.{URL_SUFFIX}"
# CloudFront's limit on the Content-Security-Policy value of a response headers policy.
CLOUDFRONT_CSP_MAX_CHARS = 1783
# Directives whose sources may only be 'self' (no host, no scheme, no 'unsafe-*', no nonce).
SELF_ONLY = ("script-src", "script-src-elem", "script-src-attr", "style-src", "style-src-elem", "style-src-attr")

# ------------------------------------------------------------------------------------------------
# Resolving the template (just enough of Fn::Sub / Fn::If / Ref for these values)
# ------------------------------------------------------------------------------------------------


def _ref(name: str) -> str:
    return {
        "WebSocketApi": NEW_API_ID,
        "ExistingWebSocketApiId": EXISTING_API_ID,
        "AWS::Region": REGION,
        "AWS::URLSuffix": URL_SUFFIX,
        "AWS::Partition": "aws",
        "AWS::AccountId": "123456789012",
        "StageName": "production",
    }.get(name, f"{{unresolved {name}}}")


def resolve(value, conditions: dict):
    """A string for a literal, Ref, Fn::If or Fn::Sub (short or list form); None for anything else."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        return None
    (fn, arg), = value.items()
    if fn == "Ref":
        return _ref(arg)
    if fn == "Fn::If":
        cond, yes, no = arg
        return resolve(yes if conditions[cond] else no, conditions)
    if fn == "Fn::Sub":
        pattern, variables = (arg[0], arg[1]) if isinstance(arg, list) else (arg, {})
        values = {k: resolve(v, conditions) for k, v in variables.items()}
        return re.sub(r"\$\{([^}!]+)\}", lambda m: values.get(m.group(1)) or _ref(m.group(1)), pattern)
    return None


def parse_csp(text: str) -> tuple[dict[str, list[str]], list[str]]:
    """Directives (lower-cased name -> sources) and the names that occur more than once (a browser
    obeys only the first, so a later, stricter-looking duplicate would fool a reader)."""
    directives: dict[str, list[str]] = {}
    duplicates = []
    for part in text.split(";"):
        tokens = part.split()
        if not tokens:
            continue
        name = tokens[0].lower()
        if name in directives:
            duplicates.append(name)
            continue
        directives[name] = tokens[1:]
    return directives, duplicates


def self_hosted_csp() -> dict[str, list[str]]:
    """CONTENT_SECURITY_POLICY of voice-server/src/http.rs (a Rust string with `\\` continuations)."""
    text = (REPO / "voice-server" / "src" / "http.rs").read_text(encoding="utf-8")
    m = re.search(r'pub const CONTENT_SECURITY_POLICY: &str = "((?:[^"\\]|\\.)*)";', text, re.S)
    assert m, "CONTENT_SECURITY_POLICY not found in voice-server/src/http.rs"
    directives, duplicates = parse_csp(re.sub(r"\\\n\s*", "", m.group(1)))
    assert not duplicates
    return directives


def api_origin(template: dict, conditions: dict) -> str:
    """The origin of the WebSocketUrl output (what config.json tells the page to connect to)."""
    url = resolve(template["Outputs"]["WebSocketUrl"]["Value"], conditions)
    parts = urlsplit(url)
    assert parts.scheme == "wss" and parts.hostname, url
    return f"{parts.scheme}://{parts.netloc}"


def behaviours(template: dict) -> list[tuple[str, dict]]:
    dist = template["Resources"][DISTRIBUTION]["Properties"]["DistributionConfig"]
    out = [("DefaultCacheBehavior", dist["DefaultCacheBehavior"])]
    out += [(f"CacheBehaviors[{b.get('PathPattern')}]", b) for b in dist.get("CacheBehaviors", [])]
    return out


# ------------------------------------------------------------------------------------------------
# The checker
# ------------------------------------------------------------------------------------------------


def csp_problems(csp: dict[str, list[str]], duplicates: list[str], api: str) -> list[str]:
    problems = [f"CSP directive {d} appears more than once" for d in duplicates]
    expected_connect = ["'self'", api, KVS_SIGNALING, KVS_HTTPS, S3_REGIONAL]
    connect = csp.get("connect-src")
    if connect is None:
        problems.append("CSP has no connect-src")
    else:
        for source in expected_connect:
            if source not in connect:
                problems.append(f"connect-src lacks {source}: {connect}")
        for source in connect:
            if source not in expected_connect:
                problems.append(f"connect-src allows {source} beyond the API, the KVS signaling hosts and S3")
    if "script-src" not in csp:
        problems.append("CSP has no script-src")
    for name in SELF_ONLY:
        if name in csp and csp[name] != ["'self'"]:
            problems.append(f"{name} must be exactly 'self', is {csp[name]}")
    for name, sources in csp.items():
        for source in sources:
            if source.lower() in ("'unsafe-inline'", "'unsafe-eval'", "'wasm-unsafe-eval'", "'unsafe-hashes'"):
                problems.append(f"{name} allows {source}")
    # Everything but connect-src exactly as the self-hosted server sends it.
    self_hosted = self_hosted_csp()
    for name in sorted(set(self_hosted) | set(csp)):
        if name == "connect-src":
            continue
        if csp.get(name) != self_hosted.get(name):
            problems.append(f"{name} is {csp.get(name)}, the self-hosted server sends {self_hosted.get(name)}")
    return problems


def header_problems(template: dict) -> list[str]:
    """What is wrong with the headers CloudFront sends for the web client (empty = fine)."""
    problems: list[str] = []
    resources = template["Resources"]
    policies = set()
    for where, b in behaviours(template):
        ref = b.get("ResponseHeadersPolicyId")
        if isinstance(ref, dict) and set(ref) == {"Ref"} and resources.get(ref["Ref"], {}).get("Type") == "AWS::CloudFront::ResponseHeadersPolicy":
            policies.add(ref["Ref"])
        else:
            problems.append(f"{DISTRIBUTION} {where}: ResponseHeadersPolicyId must !Ref this template's ResponseHeadersPolicy (a managed policy sends no CSP), is {ref!r}")
    for name in sorted(policies):
        config = resources[name]["Properties"]["ResponseHeadersPolicyConfig"]
        sec = config.get("SecurityHeadersConfig", {})
        for header in config.get("CustomHeadersConfig", {}).get("Items", []):
            if header.get("Header", "").lower().startswith("content-security-policy"):
                problems.append(f"{name}: Content-Security-Policy set as a custom header; use SecurityHeadersConfig")
        csp_cfg = sec.get("ContentSecurityPolicy")
        if not csp_cfg or not csp_cfg.get("ContentSecurityPolicy"):
            problems.append(f"{name}: no Content-Security-Policy")
        else:
            if csp_cfg.get("Override") is not True:
                problems.append(f"{name}: Content-Security-Policy Override must be true")
            for branch, conditions in BRANCHES.items():
                text = resolve(csp_cfg["ContentSecurityPolicy"], conditions)
                if text is None or "${" in text or "{unresolved" in text:
                    problems.append(f"{name} ({branch}): CSP does not resolve to a string: {text!r}")
                    continue
                if len(text) > CLOUDFRONT_CSP_MAX_CHARS:
                    problems.append(f"{name} ({branch}): CSP is {len(text)} characters, CloudFront allows {CLOUDFRONT_CSP_MAX_CHARS}")
                csp, dups = parse_csp(text)
                problems += [f"{name} ({branch}): {p}" for p in csp_problems(csp, dups, api_origin(template, conditions))]
        hsts = sec.get("StrictTransportSecurity") or {}
        if hsts.get("Override") is not True or not isinstance(hsts.get("AccessControlMaxAgeSec"), int) or hsts["AccessControlMaxAgeSec"] < 31536000:
            problems.append(f"{name}: Strict-Transport-Security must be overridden with max-age >= 1 year, is {hsts}")
        if (sec.get("ContentTypeOptions") or {}).get("Override") is not True:
            problems.append(f"{name}: X-Content-Type-Options: nosniff missing")
        frame = sec.get("FrameOptions") or {}
        if frame.get("Override") is not True or frame.get("FrameOption") != "DENY":
            problems.append(f"{name}: X-Frame-Options must be DENY (as frame-ancestors 'none'), is {frame}")
        referrer = sec.get("ReferrerPolicy") or {}
        if referrer.get("Override") is not True or referrer.get("ReferrerPolicy") != "no-referrer":
            problems.append(f"{name}: Referrer-Policy must be no-referrer (as the self-hosted server), is {referrer}")
    return problems


# ------------------------------------------------------------------------------------------------
# The real template
# ------------------------------------------------------------------------------------------------


def test_the_distribution_sends_the_strict_csp_and_security_headers(parsed_template):
    assert header_problems(parsed_template) == []


def test_the_deployed_template_too(transformed_template):
    assert header_problems(transformed_template) == []


@pytest.mark.parametrize("branch", sorted(BRANCHES))
def test_connect_src_is_exactly_this_api_and_kvs_signaling(parsed_template, branch):
    (name,) = {b["ResponseHeadersPolicyId"]["Ref"] for _, b in behaviours(parsed_template)}
    cfg = parsed_template["Resources"][name]["Properties"]["ResponseHeadersPolicyConfig"]
    csp, _ = parse_csp(resolve(cfg["SecurityHeadersConfig"]["ContentSecurityPolicy"]["ContentSecurityPolicy"], BRANCHES[branch]))
    api_id = NEW_API_ID if branch == "new-api" else EXISTING_API_ID
    assert csp["connect-src"] == [
        "'self'",
        f"wss://{api_id}.execute-api.us-east-1.amazonaws.com",
        "wss://*.kinesisvideo.us-east-1.amazonaws.com",
        "https://*.kinesisvideo.us-east-1.amazonaws.com",
        "https://*.s3.us-east-1.amazonaws.com",
    ]
    assert csp["script-src"] == ["'self'"]


def test_the_self_hosted_policy_is_read():
    csp = self_hosted_csp()
    assert csp["script-src"] == ["'self'"]
    # Same origin only (the server adds a configured public WebSocket origin at run time):
    # no WebSocket to any host, which an injected script could use to send data away.
    assert csp["connect-src"] == ["'self'"]


# ------------------------------------------------------------------------------------------------
# The checker catches broken copies
# ------------------------------------------------------------------------------------------------


def _csp_cfg(t):
    return t["Resources"]["WebClientResponseHeadersPolicy"]["Properties"]["ResponseHeadersPolicyConfig"]["SecurityHeadersConfig"]


def _edit_csp(t, old, new):
    cfg = _csp_cfg(t)["ContentSecurityPolicy"]
    sub = cfg["ContentSecurityPolicy"]["Fn::Sub"]
    assert old in sub[0], (old, sub[0])
    sub[0] = sub[0].replace(old, new)


MANAGED_SECURITY_HEADERS = "67f7725c-6f97-4210-82d7-5512b31e9d03"


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda t: t["Resources"][DISTRIBUTION]["Properties"]["DistributionConfig"]["DefaultCacheBehavior"].__setitem__("ResponseHeadersPolicyId", MANAGED_SECURITY_HEADERS), "DefaultCacheBehavior: ResponseHeadersPolicyId must !Ref"),
        (lambda t: t["Resources"][DISTRIBUTION]["Properties"]["DistributionConfig"]["CacheBehaviors"][0].pop("ResponseHeadersPolicyId"), "CacheBehaviors[config.json]: ResponseHeadersPolicyId must !Ref"),
        (lambda t: _csp_cfg(t).pop("ContentSecurityPolicy"), "no Content-Security-Policy"),
        (lambda t: _csp_cfg(t)["ContentSecurityPolicy"].__setitem__("Override", False), "Override must be true"),
        (lambda t: _edit_csp(t, " wss://${ApiId}.execute-api.${AWS::Region}.${AWS::URLSuffix}", ""), "connect-src lacks wss://newapi0001.execute-api"),
        (lambda t: _edit_csp(t, "${ApiId}", "${ExistingWebSocketApiId}"), "(new-api): connect-src lacks wss://newapi0001.execute-api"),
        (lambda t: _edit_csp(t, " wss://*.kinesisvideo.${AWS::Region}.${AWS::URLSuffix}", ""), "connect-src lacks wss://*.kinesisvideo.us-east-1"),
        (lambda t: _edit_csp(t, "wss://*.kinesisvideo.${AWS::Region}.${AWS::URLSuffix}", "wss://*.amazonaws.com"), "connect-src allows wss://*.amazonaws.com"),
        (lambda t: _edit_csp(t, "connect-src 'self'", "connect-src 'self' wss:"), "connect-src allows wss: beyond"),
        (lambda t: _edit_csp(t, "script-src 'self'", "script-src 'self' 'unsafe-inline'"), "script-src allows 'unsafe-inline'"),
        (lambda t: _edit_csp(t, "script-src 'self'", "script-src 'self' 'unsafe-eval'"), "script-src allows 'unsafe-eval'"),
        (lambda t: _edit_csp(t, "script-src 'self'", "script-src 'self' https://cdn.example.com"), "script-src must be exactly 'self'"),
        (lambda t: _edit_csp(t, "script-src 'self';", ""), "CSP has no script-src"),
        (lambda t: _edit_csp(t, "form-action 'self'", "form-action 'self'; script-src *"), "script-src appears more than once"),
        (lambda t: _edit_csp(t, "style-src 'self'", "style-src 'self' 'unsafe-inline'"), "style-src must be exactly 'self'"),
        (lambda t: _edit_csp(t, "object-src 'none'", "object-src 'self'"), "object-src is"),
        (lambda t: _edit_csp(t, "frame-ancestors 'none';", ""), "frame-ancestors is None"),
        (lambda t: _edit_csp(t, "${ApiId}", "${NoSuchVariable}"), "does not resolve"),
        (lambda t: _csp_cfg(t).pop("StrictTransportSecurity"), "Strict-Transport-Security"),
        (lambda t: _csp_cfg(t)["StrictTransportSecurity"].__setitem__("AccessControlMaxAgeSec", 300), "Strict-Transport-Security"),
        (lambda t: _csp_cfg(t).pop("ContentTypeOptions"), "nosniff missing"),
        (lambda t: _csp_cfg(t)["FrameOptions"].__setitem__("FrameOption", "SAMEORIGIN"), "X-Frame-Options must be DENY"),
        (lambda t: _csp_cfg(t)["ReferrerPolicy"].__setitem__("ReferrerPolicy", "unsafe-url"), "Referrer-Policy must be no-referrer"),
    ],
    ids=[
        "managed-policy", "no-policy-on-config-json", "no-csp", "no-override", "no-api", "wrong-api", "no-kvs",
        "wide-kvs", "any-wss", "unsafe-inline", "unsafe-eval", "script-host", "no-script-src", "duplicate",
        "style-inline", "object-src", "no-frame-ancestors", "unresolved", "no-hsts", "short-hsts",
        "no-nosniff", "frame-sameorigin", "referrer",
    ],
)
def test_the_checker_catches_a_weakened_policy(template, mutate, expected):
    mutate(template)
    problems = header_problems(template)
    assert any(expected in p for p in problems), problems


# ------------------------------------------------------------------------------------------------
# What the policy assumes about the page and the vendored SDK
# ------------------------------------------------------------------------------------------------


def test_the_sdk_needs_nothing_the_policy_forbids():
    """connect-src has only WebSocket hosts for KVS and script-src no 'unsafe-eval' because the
    bundle opens nothing but the WebSocket it is given and compiles no code. A new SDK version that
    fetches over HTTPS or evaluates strings fails here: widen the policy deliberately, or not."""
    sdk = SDK_BUNDLE.read_text(encoding="utf-8")
    for needle in ("eval(", "new Function", "Function(", "fetch(", "XMLHttpRequest", "importScripts", "sendBeacon", "EventSource", "innerHTML", "cssText", "setAttribute(\"style\""):
        assert needle not in sdk, f"the vendored KVS SDK uses {needle}; review the CSP in deploy/aws/template.yaml"
    assert "new(WebSocket||" in sdk, "the SDK no longer opens its signaling WebSocket as the policy assumes"
    # Its only AWS hostnames are the STUN URLs it can generate (ICE, not connect-src).
    for m in re.finditer(r"amazonaws", sdk):
        assert "stun" in sdk[max(0, m.start() - 200) : m.start()], sdk[m.start() - 200 : m.end() + 50]


def test_the_page_has_no_inline_script_or_style_and_only_same_origin_assets():
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script(?![^>]*\bsrc=)", html), "inline <script> in index.html"
    assert "<style" not in html and not re.search(r"\sstyle=", html), "inline style in index.html"
    assert not re.search(r"\son[a-z]+=", html), "inline event handler in index.html"
    for src in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert not urlsplit(src).netloc and not urlsplit(src).scheme, f"index.html loads {src} from elsewhere"
    for js in sorted(STATIC.glob("*.js")):
        code = js.read_text(encoding="utf-8")
        for needle in ("eval(", "new Function", "innerHTML", "cssText", "setAttribute('style'"):
            assert needle not in code, f"{js.name} uses {needle}, which the CSP forbids"
    # The browser connects to the grant's wssEndpoint, and to its httpsEndpoint only for
    # GetIceServerConfig (fresh TURN credentials; connect-src allows https://*.kinesisvideo...).
    signaling = (STATIC / "signaling.js").read_text(encoding="utf-8")
    assert "wssEndpoint" in signaling and "/v1/get-ice-server-config" in signaling
