// The app connection (voice-server/static/connection.js): heartbeat and dead-server detection,
// request deadlines, backoff with jitter. A fake WebSocket and mocked timers, no network.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import {
  AppConnection,
  DEAD_AFTER_MS,
  HEARTBEAT_MS,
  REQUEST_ATTEMPTS,
  reconnectDelayMs,
  retryDelayMs,
} from '../../voice-server/static/connection.js';

class FakeSocket {
  static last = null;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.handlers = {};
    FakeSocket.last = this;
  }
  addEventListener(k, fn) {
    (this.handlers[k] ||= []).push(fn);
  }
  fire(k, e = {}) {
    for (const fn of this.handlers[k] || []) fn(e);
  }
  open() {
    this.readyState = 1;
    this.fire('open');
  }
  send(t) {
    this.sent.push(JSON.parse(t));
  }
  close() {
    this.readyState = 3;
    this.closedByClient = true;
  }
  reply(frame) {
    this.fire('message', { data: JSON.stringify(frame) });
  }
}

async function opened(clock, opts = {}) {
  const c = new AppConnection('ws://x/ws', { WebSocketImpl: FakeSocket, now: () => clock.now, ...opts });
  const p = c.open();
  FakeSocket.last.open();
  await p;
  return { c, ws: FakeSocket.last };
}

test('backoff: grows from ~0.5 s, 2 s cap for the first attempts, then 10 s; ±30 % jitter', () => {
  assert.equal(reconnectDelayMs(1, () => 0.5), 500);
  assert.equal(reconnectDelayMs(2, () => 0.5), 1000);
  assert.equal(reconnectDelayMs(4, () => 0.5), 2000);
  assert.equal(reconnectDelayMs(8, () => 0.5), 2000);
  assert.equal(reconnectDelayMs(9, () => 0.5), 10000);
  assert.equal(reconnectDelayMs(20, () => 0.5), 10000);
  assert.equal(reconnectDelayMs(1, () => 0), 350);
  assert.equal(reconnectDelayMs(20, () => 1), 13000);
});

test('heartbeat: a ping every 10 s; any frame (even UNKNOWN_ACTION) is life; 20 s of silence is death', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const clock = { now: 0 };
    const { c, ws } = await opened(clock);
    const tick = (ms) => {
      clock.now += ms;
      mock.timers.tick(ms);
    };
    let lost = null;
    c.onclose = (why) => (lost = why);
    tick(HEARTBEAT_MS);
    const ping = ws.sent.find((f) => f.action === 'ping');
    assert.ok(ping, 'a ping was sent');
    ws.reply({ type: 'reply', requestId: ping.requestId, action: 'ping', ok: false, error: { code: 'UNKNOWN_ACTION', message: 'no' } });
    tick(DEAD_AFTER_MS - 1000);
    assert.equal(lost, null, 'the refusal counted as a frame');
    ws.reply({ type: 'event', event: 'message', roomId: 'r' });
    tick(DEAD_AFTER_MS - 1000);
    assert.equal(lost, null);
    tick(3000);
    assert.match(lost, /no frame from the server/);
    assert.equal(ws.closedByClient, true, 'the dead socket is closed');
    assert.equal(c.isOpen(), false);
  } finally {
    mock.timers.reset();
  }
});

test('pending requests fail with DISCONNECTED on a loss, TIMEOUT past their deadline; none sent while closed', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const clock = { now: 0 };
    const { c, ws } = await opened(clock, { heartbeatMs: null });
    const slow = c.request('listRooms', {}, 1000);
    mock.timers.tick(1001);
    await assert.rejects(slow, (e) => e.code === 'TIMEOUT');
    const pending = c.request('listRooms');
    ws.readyState = 3;
    ws.fire('close', { code: 1006 });
    await assert.rejects(pending, (e) => e.code === 'DISCONNECTED');
    await assert.rejects(c.request('listRooms'), (e) => e.code === 'DISCONNECTED');
  } finally {
    mock.timers.reset();
  }
});

test('open gives up on a socket that never opens (a black hole)', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const c = new AppConnection('ws://x/ws', { WebSocketImpl: FakeSocket, openTimeoutMs: 5000 });
    const p = c.open();
    mock.timers.tick(5001);
    await assert.rejects(p, /no answer/);
  } finally {
    mock.timers.reset();
  }
});

test('replies match their requests; a signal waits for its voice room subscriber', async () => {
  const clock = { now: 0 };
  const { c, ws } = await opened(clock, { heartbeatMs: null });
  const r = c.request('listRooms');
  const sent = ws.sent.at(-1);
  ws.reply({ type: 'reply', requestId: 'other', action: 'x', ok: true, data: {} });
  ws.reply({ type: 'reply', requestId: sent.requestId, action: 'listRooms', ok: true, data: { rooms: [1] } });
  assert.deepEqual(await r, { rooms: [1] });
  ws.reply({ type: 'event', event: 'signal', voiceRoomId: 'v1', from: 'a', kind: 'offer', payload: {} });
  const got = [];
  c.onSignal('v1', (m) => got.push(m.from));
  assert.deepEqual(got, ['a']);
  c.close();
});

// Retries after a retryable refusal (issue: a KVS throttle reached the user as UNAVAILABLE).
// The fake socket answers each request as the test says; sleeps are recorded, not waited.
function retrying(clock, answer) {
  const slept = [];
  return {
    slept,
    opts: {
      sleep: async (ms) => {
        slept.push(ms);
        clock.now += ms;
      },
      rand: () => 0.5,
    },
    serve(ws) {
      ws.send = (t) => {
        const req = JSON.parse(t);
        ws.sent.push(req);
        queueMicrotask(() => ws.reply({ type: 'reply', requestId: req.requestId, action: req.action, ...answer(req, ws.sent.length) }));
      };
    },
  };
}
const refused = (code, retryable = true) => ({ ok: false, error: { code, message: code, retryable } });

test('retry: a throttled getVoiceCredentials is sent again after jittered waits and succeeds', async () => {
  const clock = { now: 0 };
  const r = retrying(clock, (_req, n) => (n < 3 ? refused('UNAVAILABLE') : { ok: true, data: { granted: n } }));
  const { c, ws } = await opened(clock, { heartbeatMs: null, ...r.opts });
  r.serve(ws);
  const data = await c.request('getVoiceCredentials', { voiceRoomId: 'v1' });
  assert.deepEqual(data, { granted: 3 });
  assert.equal(ws.sent.length, 3);
  assert.deepEqual(r.slept, [retryDelayMs(1, () => 0.5), retryDelayMs(2, () => 0.5)]);
  assert.ok(ws.sent.every((q) => q.voiceRoomId === 'v1' && q.action === 'getVoiceCredentials'));
  assert.notEqual(ws.sent[0].requestId, ws.sent[1].requestId, 'each attempt is its own request');
  c.close();
});

test('retry: gives up after REQUEST_ATTEMPTS with the last refusal', async () => {
  const clock = { now: 0 };
  const r = retrying(clock, () => refused('RATE_LIMITED'));
  const { c, ws } = await opened(clock, { heartbeatMs: null, ...r.opts });
  r.serve(ws);
  await assert.rejects(c.request('setMute', { voiceRoomId: 'v1', muted: true }), (e) => e.code === 'RATE_LIMITED');
  assert.equal(ws.sent.length, REQUEST_ATTEMPTS);
  c.close();
});

test('retry: never for sendMessage, a non-retryable refusal, or past the deadline', async () => {
  const clock = { now: 0 };
  const r = retrying(clock, (req) => (req.action === 'getVoiceRoom' ? refused('NOT_MEMBER', false) : refused('UNAVAILABLE')));
  const { c, ws } = await opened(clock, { heartbeatMs: null, ...r.opts });
  r.serve(ws);
  await assert.rejects(c.request('sendMessage', { roomId: 'r', text: 'hi' }), (e) => e.code === 'UNAVAILABLE');
  assert.equal(ws.sent.length, 1, 'a message may have been stored: not sent twice');
  await assert.rejects(c.request('getVoiceRoom', { roomId: 'r' }), (e) => e.code === 'NOT_MEMBER');
  assert.equal(ws.sent.length, 2);
  // A deadline shorter than the first wait: no retry.
  await assert.rejects(c.request('listRooms', {}, 50), (e) => e.code === 'UNAVAILABLE');
  assert.equal(ws.sent.length, 3);
  assert.deepEqual(r.slept, []);
  c.close();
});

test('retry delays: full jitter under a doubling cap of 2 s', () => {
  assert.equal(retryDelayMs(1, () => 1), 250);
  assert.equal(retryDelayMs(2, () => 1), 500);
  assert.equal(retryDelayMs(4, () => 1), 2000);
  assert.equal(retryDelayMs(9, () => 1), 2000);
  assert.equal(retryDelayMs(3, () => 0), 0);
});

test('AWS keepalive: a ping every 5 min while open (API Gateway closes a socket idle for 10 min), none after close; unanswered = dead', async () => {
  const { keepaliveRequest, modeFeatures, parseClientConfig } = await import('../../voice-server/static/config.js');
  const cfg = (chat) => parseClientConfig(JSON.stringify({ mode: 'aws', webSocketUrl: 'wss://a.execute-api.us-east-1.amazonaws.com/p', region: 'us-east-1', chat }));
  const IDLE_CLOSE_MS = 10 * 60e3;
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const builtin = modeFeatures(cfg('builtin'));
    const clock = { now: 0 };
    // As app.js builds the AWS connection: no 10 s heartbeat, the keepalive instead.
    const { c, ws } = await opened(clock, { heartbeatMs: builtin.heartbeat ? undefined : null, requestTimeoutMs: builtin.requestTimeoutMs });
    c.startKeepalive(builtin.keepaliveMs, () => {
      const req = keepaliveRequest(builtin, null);
      return req && c.request(req.action, req.fields);
    });
    let lost = null;
    c.onclose = (why) => (lost = why);
    const tick = (ms) => {
      clock.now += ms;
      mock.timers.tick(ms);
    };
    // Answer every frame at once; record when the client sent something.
    const sentAt = [];
    const answer = () => {
      while (ws.sent.length) {
        const f = ws.sent.shift();
        sentAt.push({ at: clock.now, action: f.action });
        ws.reply({ type: 'reply', requestId: f.requestId, action: f.action, ok: true, data: {} });
      }
    };
    for (let t = 0; t < 3 * IDLE_CLOSE_MS; t += 10e3) {
      tick(10e3);
      answer();
    }
    await new Promise((r) => setImmediate(r));
    assert.ok(sentAt.length >= 5, `keepalives sent: ${JSON.stringify(sentAt)}`);
    assert.ok(sentAt.every((s) => s.action === 'ping'), 'builtin: ping, the cheapest frame the Lambda answers');
    const gaps = sentAt.map((s, i) => s.at - (i ? sentAt[i - 1].at : 0));
    assert.ok(Math.max(...gaps) < IDLE_CLOSE_MS, `never 10 min without a frame: gaps ${gaps}`);
    assert.ok(Math.min(...gaps) >= 60e3, `not a heartbeat: gaps ${gaps}`);
    assert.equal(lost, null);

    // A keepalive nobody answers: the connection is declared dead when its request times out.
    tick(builtin.keepaliveMs);
    assert.equal(ws.sent.filter((f) => f.action === 'ping').length, 1);
    tick(builtin.requestTimeoutMs);
    await new Promise((r) => setImmediate(r));
    assert.equal(lost, 'keepalive unanswered');
    ws.sent.length = 0;
    tick(3 * builtin.keepaliveMs);
    assert.deepEqual(ws.sent, [], 'nothing sent after the connection is over');
  } finally {
    mock.timers.reset();
  }
});

test('AWS keepalive beside an existing chat app: getVoiceRoom for the open room (a voice route), nothing without one', async () => {
  const { keepaliveRequest, modeFeatures, parseClientConfig, SELF_HOSTED } = await import('../../voice-server/static/config.js');
  const existing = modeFeatures(parseClientConfig('{"mode":"aws","webSocketUrl":"wss://a.execute-api.us-east-1.amazonaws.com/p","region":"us-east-1"}'));
  assert.deepEqual(keepaliveRequest(existing, 'room-1'), { action: 'getVoiceRoom', fields: { roomId: 'room-1' } });
  assert.equal(keepaliveRequest(existing, null), null);
  assert.equal(keepaliveRequest(modeFeatures(SELF_HOSTED), 'room-1'), null, 'self-hosted has its 10 s heartbeat instead');
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    const clock = { now: 0 };
    const { c, ws } = await opened(clock, { heartbeatMs: null });
    let room = null;
    c.startKeepalive(existing.keepaliveMs, () => {
      const req = keepaliveRequest(existing, room);
      return req && c.request(req.action, req.fields);
    });
    mock.timers.tick(existing.keepaliveMs);
    assert.deepEqual(ws.sent, []);
    room = 'room-1';
    mock.timers.tick(existing.keepaliveMs);
    assert.deepEqual(ws.sent.map((f) => [f.action, f.roomId]), [['getVoiceRoom', 'room-1']]);
    // A refusal is not death (the chat app may not know us yet): only a timeout is.
    let lost = null;
    c.onclose = (why) => (lost = why);
    ws.reply({ type: 'reply', requestId: ws.sent[0].requestId, action: 'getVoiceRoom', ok: false, error: { code: 'NOT_IDENTIFIED', message: 'x' } });
    await new Promise((r) => setImmediate(r));
    assert.equal(lost, null);
    c.close();
  } finally {
    mock.timers.reset();
  }
});
