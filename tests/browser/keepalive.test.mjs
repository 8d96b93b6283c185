// The AWS keepalive's period in and out of voice (voice-server/static/config.js keepaliveEveryMs,
// keepaliveRequest; connection.js startKeepalive with a changing period), wired as app.js wires
// it. API Gateway does not ping clients, so while in voice the page sends getVoiceRoom every 5 s
// (the Lambda records it as the participant's liveness and treats one silent for 10 s as
// disconnected); outside voice every 5 min (API Gateway's 10-minute idle close). A fake WebSocket
// and mocked timers, no network.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { AppConnection, KEEPALIVE_TICK_MS } from '../../voice-server/static/connection.js';
import { keepaliveEveryMs, keepaliveRequest, modeFeatures, parseClientConfig, SELF_HOSTED, VOICE_KEEPALIVE_MS } from '../../voice-server/static/config.js';

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
  }
  reply(frame) {
    this.fire('message', { data: JSON.stringify(frame) });
  }
}

const cfg = (chat) => parseClientConfig(JSON.stringify({ mode: 'aws', webSocketUrl: 'wss://a.execute-api.us-east-1.amazonaws.com/p', region: 'us-east-1', chat }));
/** The Lambda's default VOICE_LIVENESS_TIMEOUT_SECS (voice-domain DEFAULT_LIVENESS_TIMEOUT). */
const LIVENESS_TIMEOUT_MS = 10e3;
const IDLE_CLOSE_MS = 10 * 60e3;

/** Opens a connection with the keepalive app.js starts; `page` says where the user is. Returns the frames sent, with when. */
async function keepaliveOf(features, page, clockStepMs = 1e3) {
  const clock = { now: 0 };
  const c = new AppConnection('ws://x/ws', { WebSocketImpl: FakeSocket, now: () => clock.now, heartbeatMs: null, requestTimeoutMs: features.requestTimeoutMs });
  const opening = c.open();
  FakeSocket.last.open();
  await opening;
  const ws = FakeSocket.last;
  c.startKeepalive(
    () => keepaliveEveryMs(features, !!page.voiceChat),
    () => {
      const req = keepaliveRequest(features, page.voiceChat || page.currentRoom, page.voiceChat);
      return req && c.request(req.action, req.fields);
    },
  );
  const sent = [];
  const run = async (ms) => {
    for (let t = 0; t < ms; t += 1e3) {
      clock.now += clockStepMs;
      mock.timers.tick(1e3);
      while (ws.sent.length) {
        const f = ws.sent.shift();
        sent.push({ at: clock.now, action: f.action, roomId: f.roomId, inVoice: !!page.voiceChat });
        ws.reply({ type: 'reply', requestId: f.requestId, action: f.action, ok: true, data: { voiceRoom: null } });
      }
    }
    await new Promise((r) => setImmediate(r));
  };
  return { c, sent, run };
}

const gaps = (xs) => xs.slice(1).map((s, i) => s.at - xs[i].at);

for (const chat of ['builtin', 'existing']) {
  test(`AWS (${chat} chat): every 5 s in voice, getVoiceRoom for the voice's chat room; every 5 min outside`, async () => {
    mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
    try {
      const features = modeFeatures(cfg(chat));
      const page = { currentRoom: 'room-1', voiceChat: null };
      const { c, sent, run } = await keepaliveOf(features, page);
      await run(IDLE_CLOSE_MS + 60e3);
      const before = sent.slice();
      assert.ok(before.length >= 2, JSON.stringify(before));
      assert.ok(gaps(before).every((g) => g >= 60e3 && g < IDLE_CLOSE_MS), `outside voice, not a heartbeat: ${gaps(before)}`);
      assert.ok(before.every((s) => s.action === (chat === 'builtin' ? 'ping' : 'getVoiceRoom')), JSON.stringify(before));

      // Join voice in room-2 (another room on screen does not matter): keepalives every 5 s,
      // each a getVoiceRoom for room-2, so no gap ever reaches the Lambda's liveness timeout.
      page.voiceChat = 'room-2';
      const joinedAt = sent.length;
      await run(5 * 60e3);
      const inVoice = sent.slice(joinedAt);
      assert.ok(inVoice.length >= 59, `in voice: ${inVoice.length} keepalives in 5 min`);
      assert.ok(inVoice.every((s) => s.action === 'getVoiceRoom' && s.roomId === 'room-2'), JSON.stringify(inVoice));
      assert.ok(gaps(inVoice).every((g) => g === VOICE_KEEPALIVE_MS), `in voice: ${gaps(inVoice)}`);
      assert.ok(VOICE_KEEPALIVE_MS * 2 <= LIVENESS_TIMEOUT_MS, 'one late keepalive is no false alarm');
      // The first one soon after the join (the join itself counts as alive for the Lambda).
      assert.ok(inVoice[0].at - before.at(-1).at <= IDLE_CLOSE_MS);

      // Leave voice: back to the 5-minute keepalive.
      page.voiceChat = null;
      const leftAt = sent.length;
      await run(16 * 60e3);
      const after = sent.slice(leftAt);
      assert.ok(after.length >= 2 && after.length <= 4, JSON.stringify(after));
      assert.ok(gaps(after).every((g) => g >= 60e3), `after voice: ${gaps(after)}`);
      c.lost('test over');
    } finally {
      mock.timers.reset();
    }
  });
}

test('AWS: a tick firing a little early does not push the in-voice keepalive to the next tick', async () => {
  mock.timers.enable({ apis: ['setTimeout', 'setInterval'] });
  try {
    // Each 1 s tick finds only 990 ms passed (timer jitter): a keepalive must still go out about
    // every 5 s, not every 6 s, or the Lambda's 10 s timeout would be as good as 12 s of slack.
    const page = { currentRoom: 'room-1', voiceChat: 'room-1' };
    const { c, sent, run } = await keepaliveOf(modeFeatures(cfg('builtin')), page, 990);
    await run(60e3);
    assert.ok(sent.length >= 11, `${sent.length} keepalives in a minute`);
    assert.ok(gaps(sent).every((g) => g <= VOICE_KEEPALIVE_MS + KEEPALIVE_TICK_MS / 2), `gaps: ${gaps(sent)}`);
    c.lost('test over');
  } finally {
    mock.timers.reset();
  }
});

test('self-hosted: no keepalive (the server pings every WebSocket, the page its 10 s heartbeat)', () => {
  const self = modeFeatures(SELF_HOSTED);
  assert.equal(keepaliveEveryMs(self, true), null);
  assert.equal(keepaliveEveryMs(self, false), null);
  assert.equal(keepaliveRequest(self, 'room-1', 'room-1'), null);
});
