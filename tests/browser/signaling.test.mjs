// Unit tests of the web client's signaling module (no browser): transport selection, the relay
// transport's wire messages, its buffering of early signals through the app connection, its
// refusals, and the credential refresh schedule. The KVS transport: kvs.test.mjs.
// Run: `node --test tests/browser/` (or `npm test` in tests/browser).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  createTransport,
  KvsTransport,
  refreshDelayMs,
  MAX_PAYLOAD_BYTES,
  RelayTransport,
  SignalingError,
} from '../../voice-server/static/signaling.js';

/** The part of the app connection a relay transport uses, recording what is sent. */
function fakeApp({ refuse } = {}) {
  const subs = new Map();
  const early = [];
  return {
    sent: [],
    async request(action, fields) {
      this.sent.push({ action, ...fields });
      if (refuse) {
        const e = new Error(refuse.message);
        e.code = refuse.code;
        e.retryable = false;
        throw e;
      }
      return {};
    },
    onSignal(voiceRoomId, fn) {
      subs.set(voiceRoomId, fn);
      for (const m of early.splice(0)) if (m.voiceRoomId === voiceRoomId) fn(m);
      return () => subs.delete(voiceRoomId);
    },
    deliver(msg) {
      const fn = subs.get(msg.voiceRoomId);
      if (fn) fn(msg);
      else early.push(msg);
    },
    subscribed: (id) => subs.has(id),
  };
}

const grant = (token = 't1') => ({
  voiceRoomId: 'v1',
  userId: 'carol',
  credentials: { kind: 'token', token },
  self: { channelArn: 'c-carol', role: 'MASTER', iceServers: [] },
  peers: [{ userId: 'bob', channelArn: 'c-bob', role: 'VIEWER', iceServers: [] }],
  expiresAt: Date.now() + 3600e3,
});

test('the grant\'s credentials kind picks the transport: token → relay, aws → KVS, anything else → a typed error', () => {
  const app = fakeApp();
  const relay = createTransport(grant(), { app });
  assert.ok(relay instanceof RelayTransport);
  assert.equal(relay.kind, 'token');
  const kvs = createTransport({ ...grant(), credentials: { kind: 'aws', accessKeyId: 'a', secretAccessKey: 's', sessionToken: 't', region: 'us-east-1' } }, { app });
  assert.ok(kvs instanceof KvsTransport);
  assert.equal(kvs.kind, 'aws');
  for (const bad of [{ kind: 'carrier pigeon' }, {}, null, undefined]) {
    assert.throws(
      () => createTransport({ ...grant(), credentials: bad }, { app }),
      (e) => e instanceof SignalingError && e.code === 'UNSUPPORTED_TRANSPORT' && /unknown credentials kind/.test(e.message),
      JSON.stringify(bad),
    );
  }
  assert.throws(() => createTransport(null, { app }), (e) => e instanceof SignalingError && e.code === 'UNSUPPORTED_TRANSPORT');
});

test('sends offer, answer and candidate as signal requests with the grant token', async () => {
  const app = fakeApp();
  const t = createTransport(grant('tok-A'), { app });
  await t.connect();
  await t.sendOffer('bob', { type: 'offer', sdp: 'v=0 offer' });
  await t.sendAnswer('alice', { type: 'answer', sdp: 'v=0 answer' });
  await t.sendCandidate('bob', { candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 });
  assert.deepEqual(app.sent, [
    { action: 'signal', voiceRoomId: 'v1', token: 'tok-A', to: 'bob', kind: 'offer', payload: { type: 'offer', sdp: 'v=0 offer' } },
    { action: 'signal', voiceRoomId: 'v1', token: 'tok-A', to: 'alice', kind: 'answer', payload: { type: 'answer', sdp: 'v=0 answer' } },
    {
      action: 'signal',
      voiceRoomId: 'v1',
      token: 'tok-A',
      to: 'bob',
      kind: 'candidate',
      payload: { candidate: 'candidate:1 1 udp 1 127.0.0.1 5000 typ host', sdpMid: '0', sdpMLineIndex: 0 },
    },
  ]);
});

test('a refreshed grant replaces the token used for later signals', async () => {
  const app = fakeApp();
  const t = createTransport(grant('old'), { app });
  await t.connect();
  t.updateGrant(grant('new'));
  t.updateGrant({ ...grant('other-room'), voiceRoomId: 'v2' });
  await t.sendOffer('bob', { type: 'offer', sdp: 'x' });
  assert.equal(app.sent[0].token, 'new');
});

test('signals that arrived before connect() are delivered to the handlers, in order', async () => {
  const app = fakeApp();
  app.deliver({ voiceRoomId: 'v1', from: 'dave', kind: 'offer', payload: { type: 'offer', sdp: 'o' } });
  app.deliver({ voiceRoomId: 'v1', from: 'dave', kind: 'candidate', payload: { candidate: 'c1' } });
  app.deliver({ voiceRoomId: 'v9', from: 'eve', kind: 'offer', payload: { type: 'offer', sdp: 'other room' } });
  const t = createTransport(grant(), { app });
  const got = [];
  t.onOffer((from, d) => got.push(['offer', from, d.sdp]));
  t.onAnswer((from, d) => got.push(['answer', from, d.sdp]));
  t.onCandidate((from, c) => got.push(['candidate', from, c.candidate]));
  await t.connect();
  app.deliver({ voiceRoomId: 'v1', from: 'bob', kind: 'answer', payload: { type: 'answer', sdp: 'a' } });
  assert.deepEqual(got, [
    ['offer', 'dave', 'o'],
    ['candidate', 'dave', 'c1'],
    ['answer', 'bob', 'a'],
  ]);
});

test('a throwing or rejecting handler is reported, and later signals still arrive', async () => {
  const app = fakeApp();
  const t = createTransport(grant(), { app });
  const errors = [];
  const got = [];
  t.onError((e) => errors.push(e.message));
  t.onOffer(() => {
    throw new Error('boom');
  });
  t.onAnswer(async () => {
    throw new Error('async boom');
  });
  t.onCandidate((from) => got.push(from));
  await t.connect();
  app.deliver({ voiceRoomId: 'v1', from: 'x', kind: 'offer', payload: {} });
  app.deliver({ voiceRoomId: 'v1', from: 'x', kind: 'answer', payload: {} });
  app.deliver({ voiceRoomId: 'v1', from: 'x', kind: 'bogus', payload: {} });
  app.deliver({ voiceRoomId: 'v1', from: 'y', kind: 'candidate', payload: {} });
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(got, ['y']);
  assert.equal(errors.length, 3);
  assert.ok(errors.includes('boom') && errors.includes('async boom') && errors.some((m) => /bogus/.test(m)));
});

test('a server refusal becomes a SignalingError with the wire code', async () => {
  const app = fakeApp({ refuse: { code: 'NOT_PEER', message: 'not linked in the mesh' } });
  const t = createTransport(grant(), { app });
  await t.connect();
  await assert.rejects(t.sendOffer('mallory', { type: 'offer', sdp: 'x' }), (e) => e instanceof SignalingError && e.code === 'NOT_PEER' && /mallory/.test(e.message));
});

test('a payload over 10 KB is refused before it is sent', async () => {
  const app = fakeApp();
  const t = createTransport(grant(), { app });
  await t.connect();
  const sdp = 'a'.repeat(MAX_PAYLOAD_BYTES);
  await assert.rejects(t.sendOffer('bob', { type: 'offer', sdp }), (e) => e.code === 'TOO_LARGE');
  assert.equal(app.sent.length, 0);
});

test('after close() nothing is received or sent', async () => {
  const app = fakeApp();
  const t = createTransport(grant(), { app });
  await t.connect();
  assert.ok(app.subscribed('v1'));
  t.close();
  t.close();
  assert.ok(!app.subscribed('v1'));
  await assert.rejects(t.sendCandidate('bob', {}), SignalingError);
  await assert.rejects(t.connect(), SignalingError);
});

test('credentials refresh 5 min before a long expiry, at 80 % of a short one', () => {
  const now = 1_700_000_000_000;
  assert.equal(refreshDelayMs(now + 3600e3, now), 3300e3);
  assert.equal(refreshDelayMs(now + 15 * 60e3, now), 10 * 60e3);
  assert.equal(refreshDelayMs(now + 10 * 60e3, now), 8 * 60e3);
  assert.equal(refreshDelayMs(now + 8000, now), 6400);
  // Never a tight loop: an expiry already passed (skewed clock) counts as the 1 h maximum, and
  // nothing is scheduled sooner than half a second.
  assert.equal(refreshDelayMs(now - 5000, now), 3300e3);
  assert.equal(refreshDelayMs(now + 100, now), 500);
  assert.equal(refreshDelayMs(now + 5 * 3600e3, now), 3300e3);
});

test('with the server\'s issuedAt the browser clock does not matter', () => {
  const server = 1_700_000_000_000;
  for (const skew of [0, 2 * 3600e3, -2 * 3600e3, 90e3]) {
    const browserNow = server + skew;
    assert.equal(refreshDelayMs(server + 3600e3, browserNow, server), 55 * 60e3, `skew ${skew}`);
    assert.equal(refreshDelayMs(server + 15 * 60e3, browserNow, server), 10 * 60e3, `skew ${skew}`);
    assert.equal(refreshDelayMs(server + 8000, browserNow, server), 6400, `skew ${skew}`);
  }
  // Without issuedAt (an older server), the browser clock is all there is.
  assert.equal(refreshDelayMs(server + 15 * 60e3, server + 5 * 60e3), 8 * 60e3);
  // A missing or nonsensical issuedAt falls back to the browser clock.
  assert.equal(refreshDelayMs(server + 15 * 60e3, server, undefined), 10 * 60e3);
  assert.equal(refreshDelayMs(server + 15 * 60e3, server, 0), 10 * 60e3);
  assert.equal(refreshDelayMs(server + 15 * 60e3, server, NaN), 10 * 60e3);
});

test('refresh timing at the 1 h cap: always before expiry, never after the lifetime', () => {
  const now = 1_700_000_000_000;
  // The Lambda's role-chained STS credentials: exactly 1 h, or a little less after the round trip.
  assert.equal(refreshDelayMs(now + 3600e3, now), 55 * 60e3);
  assert.equal(refreshDelayMs(now + 3599e3, now), 3299e3);
  // Up to 5 min of our clock running behind the server's is still read as given ...
  assert.equal(refreshDelayMs(now + 65 * 60e3, now), 60 * 60e3);
  // ... beyond that the lifetime is taken as the 1 h cap, not trusted.
  assert.equal(refreshDelayMs(now + 65 * 60e3 + 1, now), 55 * 60e3);
  // Every lifetime from 1 s to 65 min: the refresh comes before the credentials expire, and
  // at least 2 minutes before when the lifetime allows (10 min or more).
  for (let lifetime = 1000; lifetime <= 65 * 60e3; lifetime += 7919) {
    const d = refreshDelayMs(now + lifetime, now);
    assert.ok(d < lifetime, `lifetime ${lifetime}: refresh after ${d}`);
    if (lifetime >= 10 * 60e3) assert.ok(lifetime - d >= 2 * 60e3, `lifetime ${lifetime}: refresh only ${lifetime - d} ms before`);
  }
});

test('refresh timing for short and already expired lifetimes', () => {
  const now = 1_700_000_000_000;
  // Short lifetimes (the self-hosted --credential-ttl-secs, the browser checklist's 8 s): 80 %.
  assert.equal(refreshDelayMs(now + 60e3, now), 48e3);
  assert.equal(refreshDelayMs(now + 10 * 60e3 + 1, now), 5 * 60e3 + 1);
  // Already expired, or expiring now: a skewed clock, read as the 1 h cap, not a tight loop.
  assert.equal(refreshDelayMs(now, now), 55 * 60e3);
  assert.equal(refreshDelayMs(now - 3600e3, now), 55 * 60e3);
  assert.equal(refreshDelayMs(NaN, now), 55 * 60e3);
  // Nothing sooner than half a second.
  assert.equal(refreshDelayMs(now + 1, now), 500);
});
