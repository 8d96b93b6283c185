// The app connection (voice-server/static/connection.js): heartbeat and dead-server detection,
// request deadlines, backoff with jitter. A fake WebSocket and mocked timers, no network.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { AppConnection, DEAD_AFTER_MS, HEARTBEAT_MS, reconnectDelayMs } from '../../voice-server/static/connection.js';

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
