// Unit tests of the web client's deployment config (voice-server/static/config.js): parsing
// config.json, what a missing or unreadable one means, the app WebSocket URL of each mode, what
// each mode offers the UI, and the AWS-mode hints. Run: `node --test tests/browser/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  apiGatewayErrorText,
  appSocketUrl,
  awsRefusalHint,
  ConfigError,
  keepaliveRequest,
  loadClientConfig,
  modeFeatures,
  parseClientConfig,
  roomFromHash,
  SELF_HOSTED,
} from '../../voice-server/static/config.js';

/** Exactly the stack output WebClientConfig (deploy/aws/template.yaml, tests/iam), ChatMode=builtin. */
const STACK_OUTPUT = '{"mode":"aws","webSocketUrl":"wss://abc123defg.execute-api.us-east-1.amazonaws.com/production","region":"us-east-1","chat":"builtin"}';
/** The same with ChatMode=existing. */
const STACK_OUTPUT_EXISTING = STACK_OUTPUT.replace('"builtin"', '"existing"');
/** What stacks wrote before the "chat" field: the page did voice only then. */
const OLD_STACK_OUTPUT = '{"mode":"aws","webSocketUrl":"wss://abc123defg.execute-api.us-east-1.amazonaws.com/production","region":"us-east-1"}';

/** A fetch that answers one status and body, recording what was asked. */
function fakeFetch(status, body = '', { fail } = {}) {
  const calls = [];
  const fn = async (url, init) => {
    calls.push({ url, init });
    if (fail) throw new TypeError(fail);
    return { status, ok: status >= 200 && status < 300, text: async () => body };
  };
  fn.calls = calls;
  return fn;
}

const rejectsConfig = (p, re) => assert.rejects(p, (e) => e instanceof ConfigError && e.code === 'BAD_CONFIG' && re.test(e.message));

test('the stack output WebClientConfig parses into the AWS mode', () => {
  assert.deepEqual(parseClientConfig(STACK_OUTPUT), {
    mode: 'aws',
    webSocketUrl: 'wss://abc123defg.execute-api.us-east-1.amazonaws.com/production',
    region: 'us-east-1',
    chat: 'builtin',
  });
  assert.equal(parseClientConfig(STACK_OUTPUT_EXISTING).chat, 'existing');
  // Extra fields are ignored; other regions and a loopback ws:// (a local stand-in) are fine.
  const c = parseClientConfig('{"mode":"aws","webSocketUrl":"ws://127.0.0.1:9001/dev","region":"us-gov-west-1","note":"x","chat":"existing"}');
  assert.deepEqual(c, { mode: 'aws', webSocketUrl: 'ws://127.0.0.1:9001/dev', region: 'us-gov-west-1', chat: 'existing' });
  assert.equal(parseClientConfig('{"mode":"self-hosted"}'), SELF_HOSTED);
});

test('"chat": missing is "existing" (a config.json from before the field); anything but builtin/existing is refused in plain words', () => {
  assert.equal(parseClientConfig(OLD_STACK_OUTPUT).chat, 'existing');
  assert.deepEqual(modeFeatures(parseClientConfig(OLD_STACK_OUTPUT)), modeFeatures(parseClientConfig(STACK_OUTPUT_EXISTING)));
  for (const bad of ['"Builtin"', '"self-hosted"', '""', 'true', 'null', '1', '["builtin"]']) {
    const text = OLD_STACK_OUTPUT.replace(/}$/, `,"chat":${bad}}`);
    assert.throws(
      () => parseClientConfig(text),
      (e) => e instanceof ConfigError && e.message.includes(`"chat" is ${JSON.stringify(JSON.parse(bad))}`) && /"builtin".*ChatMode=builtin.*"existing"/.test(e.message) && /WebClientConfig/.test(e.message),
      text,
    );
  }
});

test('a malformed config.json is a clear error, never a silent fallback', () => {
  const cases = [
    ['', /not valid JSON/],
    ['{"mode":"aws",', /not valid JSON/],
    ['<!doctype html><html>…</html>', /looks like an HTML page/],
    ['[]', /must be a JSON object/],
    ['null', /must be a JSON object/],
    ['"aws"', /must be a JSON object/],
    ['{}', /mode undefined/],
    ['{"mode":"AWS","webSocketUrl":"wss://x/p","region":"us-east-1"}', /mode "AWS"/],
    ['{"mode":"aws","region":"us-east-1"}', /needs "webSocketUrl"/],
    ['{"mode":"aws","webSocketUrl":"abc123/production","region":"us-east-1"}', /not a URL/],
    ['{"mode":"aws","webSocketUrl":"https://abc.execute-api.us-east-1.amazonaws.com/production","region":"us-east-1"}', /must start with wss:\/\//],
    ['{"mode":"aws","webSocketUrl":"ws://abc.execute-api.us-east-1.amazonaws.com/production","region":"us-east-1"}', /must start with wss:\/\//],
    ['{"mode":"aws","webSocketUrl":"wss://abc.example/production#x","region":"us-east-1"}', /#fragment/],
    ['{"mode":"aws","webSocketUrl":"wss://abc.example/production"}', /needs "region"/],
    ['{"mode":"aws","webSocketUrl":"wss://abc.example/production","region":"US East"}', /needs "region".*"US East"/],
    ['{"mode":"aws","webSocketUrl":"wss://abc.example/production","region":"${AWS::Region}"}', /needs "region"/],
  ];
  for (const [text, re] of cases) {
    assert.throws(
      () => parseClientConfig(text),
      (e) => e instanceof ConfigError && re.test(e.message) && /WebClientConfig/.test(e.message),
      text,
    );
  }
});

test('no config.json (404) means the self-hosted server; it is fetched next to the page, uncached', async () => {
  const fetchFn = fakeFetch(404, '{"code":"NOT_FOUND","message":"no such path"}');
  assert.equal(await loadClientConfig({ fetchFn, base: 'http://127.0.0.1:8080/' }), SELF_HOSTED);
  assert.equal(fetchFn.calls[0].url, 'http://127.0.0.1:8080/config.json');
  assert.equal(fetchFn.calls[0].init.cache, 'no-store');
  // Next to index.html, also when the client lives under a path.
  const f2 = fakeFetch(200, STACK_OUTPUT);
  assert.equal((await loadClientConfig({ fetchFn: f2, base: 'https://d111.cloudfront.net/voice/index.html' })).mode, 'aws');
  assert.equal(f2.calls[0].url, 'https://d111.cloudfront.net/voice/config.json');
});

test('an unreadable config.json is an error: 403 (CloudFront/S3 for a file never uploaded), 5xx, network, malformed', async () => {
  const base = 'https://d111.cloudfront.net/';
  await rejectsConfig(loadClientConfig({ fetchFn: fakeFetch(403, '<Error><Code>AccessDenied</Code></Error>'), base }), /HTTP 403.*never uploaded/);
  await rejectsConfig(loadClientConfig({ fetchFn: fakeFetch(503), base }), /HTTP 503/);
  await rejectsConfig(loadClientConfig({ fetchFn: fakeFetch(0, '', { fail: 'Failed to fetch' }), base }), /could not fetch .*config\.json: Failed to fetch/);
  await rejectsConfig(loadClientConfig({ fetchFn: fakeFetch(200, '{"mode":"aws"'), base }), /not valid JSON/);
});

test('the app WebSocket: self-hosted /ws of the page\'s host; AWS the configured URL with the page\'s query', () => {
  assert.equal(appSocketUrl(SELF_HOSTED, { protocol: 'http:', host: '127.0.0.1:8080', search: '?x=1' }), 'ws://127.0.0.1:8080/ws');
  assert.equal(appSocketUrl(SELF_HOSTED, { protocol: 'https:', host: 'voice.example.com' }), 'wss://voice.example.com/ws');
  const aws = parseClientConfig(STACK_OUTPUT);
  assert.equal(appSocketUrl(aws, { protocol: 'https:', host: 'd111.cloudfront.net', search: '' }), 'wss://abc123defg.execute-api.us-east-1.amazonaws.com/production');
  assert.equal(
    appSocketUrl(aws, { protocol: 'https:', host: 'd111.cloudfront.net', search: '?token=a%2Bb&userId=alice' }),
    'wss://abc123defg.execute-api.us-east-1.amazonaws.com/production?token=a%2Bb&userId=alice',
  );
});

test('what each mode offers the UI', () => {
  const self = modeFeatures(SELF_HOSTED);
  assert.equal(self.hello, true);
  assert.equal(self.chat, true);
  assert.equal(self.knowsAdmins, true);
  assert.equal(self.keepaliveMs, null);
  assert.equal(self.heartbeat, true);
  const aws = modeFeatures(parseClientConfig(STACK_OUTPUT_EXISTING));
  assert.equal(aws.mode, 'aws');
  assert.equal(aws.hello, false, 'no hello on AWS with an existing chat app: it identifies the connection');
  assert.equal(aws.chat, false, 'the Lambda serves no chat actions in existing mode (docs/lambda.md)');
  assert.equal(aws.knowsAdmins, false);
  // API Gateway: 29 s integration timeout, 10 min idle timeout; no 10 s ping (a Lambda invocation each).
  assert.ok(aws.requestTimeoutMs > 29000);
  assert.ok(aws.keepaliveMs > 0 && aws.keepaliveMs < 10 * 60e3);
  assert.equal(aws.heartbeat, false);
  // Built-in chat: the self-hosted page's chat UI (hello, rooms, admins), AWS's timeouts.
  const builtin = modeFeatures(parseClientConfig(STACK_OUTPUT));
  assert.equal(builtin.mode, 'aws');
  assert.equal(builtin.hello, true, 'the Lambda serves hello with resume tokens');
  assert.equal(builtin.chat, true, 'and the chat actions');
  assert.equal(builtin.knowsAdmins, true, 'listRooms names the admin');
  assert.equal(builtin.heartbeat, false);
  assert.ok(builtin.requestTimeoutMs > 29000);
  assert.ok(builtin.keepaliveMs > 0 && builtin.keepaliveMs < 10 * 60e3);
  assert.ok(builtin.pollMs >= 60000, 'room list polls are Lambda invocations: not every 15 s');
  assert.equal(modeFeatures(undefined).mode, 'self-hosted');
});

test('a #room=<id> fragment names the chat room to open', () => {
  assert.equal(roomFromHash('#room=room-1'), 'room-1');
  assert.equal(roomFromHash('#room=a%2Fb%20c'), 'a/b c');
  assert.equal(roomFromHash('room=x&other=1'), 'x');
  assert.equal(roomFromHash(''), null);
  assert.equal(roomFromHash('#room='), null);
  assert.equal(roomFromHash('#other=1'), null);
  assert.equal(roomFromHash(undefined), null);
});

test('AWS refusals that the chat app must fix get a hint; others rely on the Lambda\'s message', () => {
  assert.match(awsRefusalHint('NOT_IDENTIFIED'), /chat app does not know this connection/);
  assert.match(awsRefusalHint('NOT_MEMBER'), /Ask to join/);
  assert.match(awsRefusalHint('NOT_APPROVED'), /waiting/);
  assert.match(awsRefusalHint('CHAT_ROOM_NOT_FOUND'), /no chat room/);
  assert.match(awsRefusalHint('UNKNOWN_ACTION'), /redeployed/);
  assert.equal(awsRefusalHint('ROOM_FULL'), null);
  assert.equal(awsRefusalHint(undefined), null);
});

test('API Gateway\'s own error frames are recognised; frames of our protocol are not', () => {
  assert.match(apiGatewayErrorText({ message: 'Internal server error', connectionId: 'L0SM9cOFvHcCIhw=', requestId: 'abc' }), /"Internal server error": the voice function failed/);
  assert.match(apiGatewayErrorText({ message: 'Forbidden', connectionId: 'x', requestId: 'y' }), /no route/);
  assert.match(apiGatewayErrorText({ message: 'Endpoint request timed out' }), /29 s/);
  assert.match(apiGatewayErrorText({ message: 'Limit Exceeded' }), /throttled/);
  assert.match(apiGatewayErrorText({ message: 'Something else' }), /log/);
  assert.equal(apiGatewayErrorText({ type: 'reply', requestId: 'r1', ok: false, error: { code: 'X', message: 'm' } }), null);
  assert.equal(apiGatewayErrorText({ type: 'event', event: 'voiceEnded', message: 'x' }), null);
  assert.equal(apiGatewayErrorText(null), null);
  assert.equal(apiGatewayErrorText('text'), null);
});
