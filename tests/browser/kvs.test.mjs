// Unit tests of the Kinesis Video Streams transport (voice-server/static/signaling.js) against a
// fake SDK SignalingClient (./kvs-fakes.mjs) and a manual clock: which clients it opens for a
// grant (the mesh plan), where offers, answers and candidates go, how signals from client ids are
// mapped to users, refreshed grants and room changes, reconnects with backoff, and its refusals.
// The real KVS service is not involved: that path is verified only on a real AWS account
// (docs/web-client.md). Run: `node --test tests/browser/`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTransport, fetchIceServers, ICE_CACHE_MS, ICE_RETRY_DELAYS_MS, iceCacheMs, isValidKvsClientId, limitTurn, TURN_URIS_PER_PEER_CONNECTION, KVS_ICE_PER_SECOND, KVS_MAX_MESSAGE_PAYLOAD, KVS_SDP_PER_SECOND, KvsTransport, loadKvsSdk, MAX_PAYLOAD_BYTES, SignalingError } from '../../voice-server/static/signaling.js';
import { arnOf, awsGrant, base64Length, clientIdOf, fakeClock, fakeKvs, flush, KVS_LIMITS, roomView, wssOf } from './kvs-fakes.mjs';

/** A transport for `grant` over a fresh fake SDK and clock, recording what it delivers. */
function setup({ grant = awsGrant(), ...opts } = {}) {
  const clock = fakeClock();
  const kvs = fakeKvs({ now: clock.now });
  const errors = [];
  const got = [];
  const logs = [];
  const t = createTransport(grant, {
    SignalingClient: kvs.SignalingClient,
    schedule: clock.schedule,
    cancel: clock.cancel,
    now: clock.now,
    log: (m) => logs.push(m),
    ...opts,
  });
  t.onError((e) => errors.push(e));
  t.onOffer((from, d) => got.push(['offer', from, d.sdp]));
  t.onAnswer((from, d) => got.push(['answer', from, d.sdp]));
  t.onCandidate((from, c) => got.push(['candidate', from, c.candidate]));
  return { t, kvs, clock, errors, got, logs };
}

/** connect() with every client accepting at once. */
async function connected(opts) {
  const s = setup(opts);
  const p = s.t.connect();
  for (const c of s.kvs.clients) c.accept();
  await p;
  return s;
}

const offer = (sdp) => ({ type: 'offer', sdp });
const answer = (sdp) => ({ type: 'answer', sdp });
const cand = (c) => ({ candidate: c, sdpMid: '0', sdpMLineIndex: 0 });

// ---------------------------------------------------------------------------------------------
// Selection and the plan

test('an aws grant gives the KVS transport', () => {
  const t = createTransport(awsGrant(), { SignalingClient: fakeKvs().SignalingClient });
  assert.ok(t instanceof KvsTransport);
  assert.equal(t.kind, 'aws');
});

test('connect opens a MASTER client on our own channel and a VIEWER client on each earlier participant\'s', async () => {
  const s = setup();
  const p = s.t.connect();
  const configs = s.kvs.clients.map((c) => c.config);
  const creds = { accessKeyId: 'ASIA-1', secretAccessKey: 'secret-ASIA-1', sessionToken: 'token-ASIA-1' };
  assert.deepEqual(configs, [
    { channelARN: arnOf('carol'), channelEndpoint: wssOf('carol'), role: 'MASTER', region: 'eu-west-1', credentials: creds, systemClockOffset: 0 },
    { channelARN: arnOf('alice'), channelEndpoint: wssOf('alice'), role: 'VIEWER', region: 'eu-west-1', credentials: creds, systemClockOffset: 0, clientId: clientIdOf('carol') },
    { channelARN: arnOf('bob'), channelEndpoint: wssOf('bob'), role: 'VIEWER', region: 'eu-west-1', credentials: creds, systemClockOffset: 0, clientId: clientIdOf('carol') },
  ]);
  for (const c of configs.filter((x) => x.role === 'VIEWER')) assert.ok(isValidKvsClientId(c.clientId), c.clientId);
  assert.ok(s.kvs.clients.every((c) => c.readyState === 'CONNECTING'), 'every client was opened');
  // connect() resolves once every channel has had its first answer.
  let done = false;
  p.then(() => (done = true));
  s.kvs.latest('carol').accept();
  s.kvs.latest('alice').accept();
  await flush();
  assert.equal(done, false);
  s.kvs.latest('bob').accept();
  await p;
  assert.ok(s.logs.includes('Signaling client connected (KVS MASTER on voice-carol)'));
  assert.ok(s.logs.includes('Signaling client connected (KVS VIEWER on voice-alice)'));
  assert.deepEqual(s.errors, []);
});

test('the first participant (no earlier ones) opens only its own channel, as MASTER', async () => {
  const s = await connected({ grant: awsGrant({ user: 'alice', earlier: [], later: [] }) });
  assert.deepEqual(
    s.kvs.clients.map((c) => [c.config.role, c.config.channelARN]),
    [['MASTER', arnOf('alice')]],
  );
});

test('the region comes from the credentials, else from the option (config.json); with neither, BAD_GRANT', async () => {
  const g = awsGrant();
  delete g.credentials.region;
  const s = await connected({ grant: g, region: 'us-east-1' });
  assert.ok(s.kvs.clients.every((c) => c.config.region === 'us-east-1'));

  const g2 = awsGrant();
  delete g2.credentials.region;
  const s2 = setup({ grant: g2 });
  await assert.rejects(s2.t.connect(), (e) => e instanceof SignalingError && e.code === 'BAD_GRANT' && /region/.test(e.message));
  assert.equal(s2.kvs.clients.length, 0);
});

test('a grant whose client id KVS would refuse is refused before any connection', async () => {
  for (const bad of ['', 'has=equals', 'AWS_reserved', 'x'.repeat(257), undefined]) {
    const g = awsGrant();
    g.clientId = bad;
    const s = setup({ grant: g });
    await assert.rejects(s.t.connect(), (e) => e.code === 'BAD_GRANT' && /client id/.test(e.message), String(bad));
    assert.equal(s.kvs.clients.length, 0);
  }
  assert.ok(isValidKvsClientId(clientIdOf('carol')));
  assert.ok(isValidKvsClientId('a.b-c_D9'));
  assert.ok(isValidKvsClientId('x'.repeat(256)));
});

test('the SDK is loaded on first connect when no SignalingClient is injected', async () => {
  const kvs = fakeKvs();
  let loads = 0;
  const logs = [];
  const t = createTransport(awsGrant(), {
    loadSdk: async () => {
      loads += 1;
      return { SignalingClient: kvs.SignalingClient, VERSION: '2.9.0' };
    },
    log: (m) => logs.push(m),
  });
  const p = t.connect();
  await flush();
  for (const c of kvs.clients) c.accept();
  await p;
  assert.equal(loads, 1);
  assert.equal(kvs.clients.length, 3);
  assert.ok(logs.includes('Kinesis Video Streams SDK 2.9.0 loaded'));
  t.close();
});

test('loadKvsSdk outside a page fails clearly; in a page it adds one <script src> and resolves with window.KVSWebRTC', async () => {
  await assert.rejects(loadKvsSdk({ doc: null, win: null }), (e) => e.code === 'SDK_UNAVAILABLE');
  const appended = [];
  const win = {};
  const doc = {
    createElement: (tag) => {
      const el = { tag, listeners: {}, addEventListener: (ev, fn) => (el.listeners[ev] = fn), remove: () => {} };
      return el;
    },
    head: { append: (el) => appended.push(el) },
  };
  const p = loadKvsSdk({ doc, win, src: '/vendor/kvs-webrtc.min.js', timeoutMs: 1000 });
  assert.equal(appended.length, 1);
  assert.equal(appended[0].tag, 'script');
  assert.equal(appended[0].src, '/vendor/kvs-webrtc.min.js');
  win.KVSWebRTC = { SignalingClient: class {}, VERSION: 'x' };
  appended[0].listeners.load();
  assert.equal(await p, win.KVSWebRTC);
});

// ---------------------------------------------------------------------------------------------
// Sending

test('an offer goes to the viewer client on that peer\'s channel, without a recipient', async () => {
  const s = await connected();
  await s.t.sendOffer('alice', { type: 'offer', sdp: 'o-alice', extra: 'dropped' });
  assert.deepEqual(s.kvs.latest('alice').sent, [{ kind: 'offer', payload: offer('o-alice'), recipientClientId: undefined }]);
  assert.deepEqual(s.kvs.latest('bob').sent, []);
  assert.deepEqual(s.kvs.latest('carol').sent, []);
  // Offers go only to earlier participants.
  await assert.rejects(s.t.sendOffer('dave', offer('x')), (e) => e.code === 'NOT_PEER');
});

test('an answer goes from our MASTER client to the client id the offer came from; candidates follow the link', async () => {
  const s = await connected({ grant: awsGrant({ later: ['dave'] }) });
  const master = s.kvs.latest('carol');
  master.receive('offer', offer('o-dave'), clientIdOf('dave'));
  assert.deepEqual(s.got, [['offer', 'dave', 'o-dave']]);
  await s.t.sendAnswer('dave', answer('a-dave'));
  await s.t.sendCandidate('dave', cand('c-to-dave'));
  await s.t.sendCandidate('alice', cand('c-to-alice'));
  assert.deepEqual(master.sent, [
    { kind: 'answer', payload: answer('a-dave'), recipientClientId: clientIdOf('dave') },
    { kind: 'candidate', payload: cand('c-to-dave'), recipientClientId: clientIdOf('dave') },
  ]);
  assert.deepEqual(s.kvs.latest('alice').sent, [{ kind: 'candidate', payload: cand('c-to-alice'), recipientClientId: undefined }]);
  // No viewer of that name on our channel: refused, nothing sent.
  await assert.rejects(s.t.sendAnswer('mallory', answer('x')), (e) => e.code === 'NOT_PEER');
  await assert.rejects(s.t.sendCandidate('mallory', cand('x')), (e) => e.code === 'NOT_PEER');
  assert.equal(master.sent.length, 2);
});

test('sends wait for the channel to open, and give up after openTimeoutMs', async () => {
  const s = setup({ openTimeoutMs: 5000 });
  const p = s.t.connect();
  s.kvs.latest('carol').accept();
  s.kvs.latest('bob').accept();
  // alice's channel is still connecting: the offer waits for it.
  const sent = s.t.sendOffer('alice', offer('early'));
  await flush();
  assert.deepEqual(s.kvs.latest('alice').sent, []);
  s.kvs.latest('alice').accept();
  await sent;
  await p;
  assert.equal(s.kvs.latest('alice').sent[0].payload.sdp, 'early');

  // A channel that does not come back within the timeout: NOT_CONNECTED, retryable.
  await s.clock.advance(60_000);
  s.kvs.latest('bob').drop();
  await s.clock.advance(0); // reconnects at once ...
  assert.equal(s.kvs.on('bob').length, 2);
  const late = s.t.sendOffer('bob', offer('late'));
  const rejected = assert.rejects(late, (e) => e.code === 'NOT_CONNECTED' && e.retryable === true);
  await s.clock.advance(5000); // ... but the new client never opens
  await rejected;
});

test('a payload over 10 KB is refused before it is sent', async () => {
  const s = await connected();
  await assert.rejects(s.t.sendOffer('alice', offer('a'.repeat(MAX_PAYLOAD_BYTES))), (e) => e.code === 'TOO_LARGE');
  assert.deepEqual(s.kvs.latest('alice').sent, []);
});

// Failed before the fix: the transport checked the JSON (8 KB here, under 10 KB) and handed the
// offer to the SDK, whose base64 messagePayload (~10.7 KB) KVS refuses; the page waited for an
// answer that could never come.
test('KVS counts the base64 messagePayload: an offer whose JSON fits but whose base64 does not is refused, typed, before it is sent', async () => {
  const s = await connected();
  const sdp = 'a'.repeat(8000);
  const json = JSON.stringify(offer(sdp)).length;
  assert.ok(json < MAX_PAYLOAD_BYTES && base64Length(json) > KVS_LIMITS.payloadBytes && KVS_MAX_MESSAGE_PAYLOAD <= KVS_LIMITS.payloadBytes);
  await assert.rejects(s.t.sendOffer('alice', offer(sdp)), (e) => e instanceof SignalingError && e.code === 'TOO_LARGE' && /base64/.test(e.message) && e.retryable === false);
  assert.deepEqual(s.kvs.latest('alice').sent, []);
  assert.deepEqual(s.kvs.latest('alice').dropped, [], 'not handed to the SDK to be dropped by KVS');
  // The largest JSON whose base64 still fits goes out.
  const fits = 'a'.repeat(Math.floor(KVS_MAX_MESSAGE_PAYLOAD / 4) * 3 - JSON.stringify(offer('')).length);
  assert.equal(base64Length(JSON.stringify(offer(fits)).length), KVS_MAX_MESSAGE_PAYLOAD);
  await s.t.sendOffer('alice', offer(fits));
  assert.equal(s.kvs.latest('alice').sent.length, 1);
});

// ---------------------------------------------------------------------------------------------
// Receiving

test('on a peer\'s channel its master\'s answers and candidates arrive as from that peer; an offer there is refused', async () => {
  const s = await connected();
  const alice = s.kvs.latest('alice');
  alice.receive('answer', answer('a-from-alice'));
  alice.receive('candidate', cand('c-from-alice'));
  alice.receive('offer', offer('not-allowed'));
  s.kvs.latest('bob').receive('candidate', cand('c-from-bob'));
  assert.deepEqual(s.got, [
    ['answer', 'alice', 'a-from-alice'],
    ['candidate', 'alice', 'c-from-alice'],
    ['candidate', 'bob', 'c-from-bob'],
  ]);
  assert.equal(s.errors.length, 1);
  assert.equal(s.errors[0].code, 'NOT_PEER');
  assert.match(s.errors[0].message, /offer on voice-alice/);
});

test('on our own channel: an answer, or a message without a sender client id, is refused', async () => {
  const s = await connected({ grant: awsGrant({ later: ['dave'] }) });
  const master = s.kvs.latest('carol');
  master.receive('answer', answer('x'), clientIdOf('dave'));
  master.receive('candidate', cand('x'), undefined);
  assert.deepEqual(s.got, []);
  assert.deepEqual(s.errors.map((e) => e.code), ['NOT_PEER', 'NOT_PEER']);
});

test('signals from an unknown client id wait for one room lookup, then arrive in order as that user', async () => {
  let lookups = 0;
  const s = await connected({
    fetchRoom: async () => {
      lookups += 1;
      return roomView(['alice', 'bob', 'carol', 'erin']);
    },
  });
  const master = s.kvs.latest('carol');
  master.receive('offer', offer('o-erin'), clientIdOf('erin'));
  master.receive('candidate', cand('c1-erin'), clientIdOf('erin'));
  assert.deepEqual(s.got, []);
  await flush();
  assert.equal(lookups, 1);
  assert.deepEqual(s.got, [
    ['offer', 'erin', 'o-erin'],
    ['candidate', 'erin', 'c1-erin'],
  ]);
  // Now known: no more lookups, and the answer finds erin's client id.
  master.receive('candidate', cand('c2-erin'), clientIdOf('erin'));
  await s.t.sendAnswer('erin', answer('a-erin'));
  assert.equal(lookups, 1);
  assert.deepEqual(master.sent.at(-1), { kind: 'answer', payload: answer('a-erin'), recipientClientId: clientIdOf('erin') });
  assert.deepEqual(s.errors, []);
});

test('a client id told by participantJoined (learnClientId) needs no room lookup', async () => {
  let lookups = 0;
  const s = await connected({ fetchRoom: async () => ((lookups += 1), roomView(['alice', 'bob', 'carol', 'erin'])) });
  s.t.learnClientId('erin', clientIdOf('erin'));
  const master = s.kvs.latest('carol');
  master.receive('offer', offer('o-erin'), clientIdOf('erin'));
  await flush();
  assert.equal(lookups, 0);
  assert.deepEqual(s.got, [['offer', 'erin', 'o-erin']]);
  assert.deepEqual(s.errors, []);
});

test('signals from a client id that is no participant are dropped with an error, also without fetchRoom or when it fails', async () => {
  for (const fetchRoom of [async () => roomView(['alice', 'bob', 'carol']), undefined, async () => Promise.reject(new Error('socket closed'))]) {
    const s = await connected({ fetchRoom });
    const master = s.kvs.latest('carol');
    master.receive('offer', offer('o'), 'stranger-1');
    master.receive('candidate', cand('c'), 'stranger-1');
    await flush();
    assert.deepEqual(s.got, []);
    const dropped = s.errors.find((e) => /dropped 2 signaling message\(s\) from client id stranger-1/.test(e.message));
    assert.ok(dropped, s.errors.map((e) => e.message).join('; '));
    assert.equal(dropped.code, 'NOT_PEER');
    if (fetchRoom && fetchRoom.toString().includes('reject')) assert.ok(s.errors.some((e) => /could not look up/.test(e.message)));
  }
});

test('a handler that throws is reported and the transport keeps delivering', async () => {
  const s = await connected();
  s.t.onAnswer(() => {
    throw new Error('boom');
  });
  s.kvs.latest('alice').receive('answer', answer('x'));
  s.kvs.latest('alice').receive('candidate', cand('still'));
  assert.deepEqual(s.errors.map((e) => e.message), ['boom']);
  assert.deepEqual(s.got, [['candidate', 'alice', 'still']]);
});

// ---------------------------------------------------------------------------------------------
// Room and grant changes

test('updateRoom: a newly joined peer is known by its client id; a peer who left loses its channel for good', async () => {
  let lookups = 0;
  const s = await connected({ fetchRoom: async () => ((lookups += 1), null) });
  const bobClient = s.kvs.latest('bob');
  s.t.updateRoom(roomView(['alice', 'carol', 'dave'])); // bob left, dave joined after us
  await flush();
  // dave: delivered by name without a lookup.
  s.kvs.latest('carol').receive('offer', offer('o-dave'), clientIdOf('dave'));
  assert.deepEqual(s.got, [['offer', 'dave', 'o-dave']]);
  assert.equal(lookups, 0);
  // bob: his client is closed by us, not reconnected, and nothing goes to him any more.
  assert.equal(bobClient.closedByClient, true);
  await s.clock.advance(60_000);
  assert.equal(s.kvs.on('bob').length, 1);
  await assert.rejects(s.t.sendOffer('bob', offer('x')), (e) => e.code === 'NOT_PEER');
  await assert.rejects(s.t.sendCandidate('bob', cand('x')), (e) => e.code === 'NOT_PEER');
  // alice is untouched.
  assert.equal(s.kvs.on('alice').length, 1);
  assert.equal(s.kvs.latest('alice').closedByClient, false);
  // A view of another voice room changes nothing.
  s.t.updateRoom(roomView(['carol'], 'v2'));
  assert.equal(s.kvs.latest('alice').closedByClient, false);
});

test('updateRoom: a peer who left and joined again (new channel) is no longer viewed on the old one', async () => {
  const s = await connected();
  const view = roomView(['alice', 'bob', 'carol']);
  view.participants[1].channelArn = arnOf('bob-again');
  s.t.updateRoom(view);
  assert.equal(s.kvs.latest('bob').closedByClient, true);
  assert.equal(s.kvs.latest('alice').closedByClient, false);
});

test('updateGrant: new credentials reconnect every channel make-before-break; a peer no longer in the grant is dropped', async () => {
  const s = await connected({ grant: awsGrant({ later: ['dave'] }) });
  const [oldCarol, oldAlice, oldBob] = ['carol', 'alice', 'bob'].map((u) => s.kvs.latest(u));
  s.kvs.latest('carol').receive('offer', offer('o-dave'), clientIdOf('dave'));

  const refreshed = awsGrant({ earlier: ['alice'], later: ['dave'], keyId: 'ASIA-2' });
  refreshed.room = roomView(['alice', 'carol', 'dave']);
  s.t.updateGrant(refreshed);

  // bob's channel is gone at once.
  assert.equal(oldBob.closedByClient, true);
  assert.equal(s.kvs.on('bob').length, 1);
  // carol and alice: a new client with the new credentials each, the old ones still open.
  const [newCarol, newAlice] = ['carol', 'alice'].map((u) => s.kvs.latest(u));
  assert.notEqual(newCarol, oldCarol);
  assert.notEqual(newAlice, oldAlice);
  assert.equal(newCarol.config.credentials.accessKeyId, 'ASIA-2');
  assert.equal(newAlice.config.credentials.sessionToken, 'token-ASIA-2');
  assert.equal(newAlice.config.clientId, clientIdOf('carol'));
  assert.equal(oldCarol.closedByClient, false);
  assert.equal(oldAlice.closedByClient, false);
  // Until the new one opens, sends use the old one.
  await s.t.sendCandidate('alice', cand('via-old'));
  assert.equal(oldAlice.sent.at(-1).payload.candidate, 'via-old');
  newAlice.accept();
  newCarol.accept();
  await flush();
  assert.equal(oldAlice.closedByClient, true);
  // KVS closes the old master connection itself when the new one connects (one master per channel).
  assert.equal(oldCarol.readyState, 'CLOSED');
  await s.t.sendCandidate('alice', cand('via-new'));
  await s.t.sendAnswer('dave', answer('a-dave'));
  assert.equal(newAlice.sent.at(-1).payload.candidate, 'via-new');
  assert.deepEqual(newCarol.sent.at(-1), { kind: 'answer', payload: answer('a-dave'), recipientClientId: clientIdOf('dave') });
  // The old clients' closes do not trigger reconnects.
  await s.clock.advance(60_000);
  assert.equal(s.kvs.clients.length, 5);
  // Messages still arriving on a retired client are ignored.
  oldAlice.receive('answer', answer('stale'));
  assert.ok(!s.got.some((g) => g[2] === 'stale'));
  // A grant for another voice room is ignored.
  s.t.updateGrant(awsGrant({ voiceRoomId: 'v2', keyId: 'ASIA-3' }));
  assert.equal(s.kvs.clients.length, 5);
});

test('updateGrant while a channel is still connecting starts that channel over with the new credentials', async () => {
  const s = setup();
  const p = s.t.connect();
  s.kvs.latest('carol').accept();
  s.kvs.latest('bob').accept();
  const stuck = s.kvs.latest('alice');
  s.t.updateGrant(awsGrant({ keyId: 'ASIA-2' }));
  assert.equal(stuck.closedByClient, true);
  const fresh = s.kvs.latest('alice');
  assert.equal(fresh.config.credentials.accessKeyId, 'ASIA-2');
  fresh.accept();
  for (const u of ['carol', 'bob']) s.kvs.latest(u).accept();
  await p;
});

// ---------------------------------------------------------------------------------------------
// Reconnects

test('a connection the service closes after a while is reconnected at once; failures back off 1 s, 2 s, 4 s ... 30 s', async () => {
  const s = await connected({ grant: awsGrant({ earlier: [] }) });
  await s.clock.advance(20 * 60_000); // open for 20 minutes, then KVS closes it (1 h cap, idle)
  s.kvs.latest('carol').drop();
  await s.clock.advance(0);
  assert.equal(s.kvs.on('carol').length, 2, 'reconnected at once');

  const delays = [];
  for (let i = 0; i < 7; i += 1) {
    const before = s.kvs.clients.length;
    s.kvs.latest('carol').refuse('AccessDeniedException');
    delays.push(s.clock.pending()[0]);
    await s.clock.advance(delays.at(-1));
    assert.equal(s.kvs.clients.length, before + 1);
  }
  assert.deepEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  assert.ok(s.errors.every((e) => e.code === 'SIGNALING_UNAVAILABLE' && e.retryable));
  assert.ok(s.errors[0].message.includes('AccessDeniedException'));

  // Open again: the next close is a fresh start.
  s.kvs.latest('carol').accept();
  await s.clock.advance(60_000);
  s.kvs.latest('carol').drop();
  assert.deepEqual(s.clock.pending(), [0]);
});

test('a first connection attempt that fails is retried after 1 s, not at once', async () => {
  const s = setup({ grant: awsGrant({ earlier: ['alice'] }) });
  const p = s.t.connect();
  s.kvs.latest('carol').accept();
  s.kvs.latest('alice').refuse();
  await p; // our own channel is up: connect() succeeds, alice's channel keeps retrying
  assert.deepEqual(s.clock.pending(), [1000]);
  await s.clock.advance(999);
  assert.equal(s.kvs.on('alice').length, 1);
  await s.clock.advance(1);
  assert.equal(s.kvs.on('alice').length, 2);
});

test('a connection that keeps closing right after it opens backs off instead of looping', async () => {
  // E.g. another tab of the same user masters the same channel, and each replaces the other.
  const s = await connected({ grant: awsGrant({ earlier: [] }) });
  await s.clock.advance(60_000);
  s.kvs.latest('carol').drop(); // a long-lived connection closed: reconnect at once
  const delays = [s.clock.pending()[0]];
  for (let i = 0; i < 5; i += 1) {
    await s.clock.advance(delays.at(-1));
    const c = s.kvs.latest('carol');
    c.accept();
    await s.clock.advance(200);
    c.drop(); // replaced 200 ms after opening
    delays.push(s.clock.pending()[0]);
  }
  assert.deepEqual(delays, [0, 1000, 2000, 4000, 8000, 16000]);
});

test('a client that never opens is given up after openTimeoutMs and retried', async () => {
  const s = setup({ grant: awsGrant({ earlier: ['alice'] }), openTimeoutMs: 5000 });
  const p = s.t.connect();
  s.kvs.latest('carol').accept();
  await s.clock.advance(5000);
  await p;
  const first = s.kvs.on('alice')[0];
  assert.equal(first.closedByClient, true);
  assert.ok(s.errors.some((e) => /not connected after 5 s/.test(e.message)));
  await s.clock.advance(1000);
  assert.equal(s.kvs.on('alice').length, 2);
});

test('our own channel failing at connect fails connect() and closes everything', async () => {
  const s = setup();
  const p = s.t.connect();
  s.kvs.latest('carol').refuse('AccessDeniedException');
  s.kvs.latest('alice').accept();
  s.kvs.latest('bob').accept();
  await assert.rejects(p, (e) => e.code === 'SIGNALING_UNAVAILABLE' && /own signaling channel voice-carol/.test(e.message) && /AccessDenied/.test(e.message));
  assert.ok(s.kvs.clients.every((c) => c.closedByClient || c.readyState === 'CLOSED'));
  await s.clock.advance(120_000);
  assert.equal(s.kvs.clients.length, 3, 'nothing reconnects after the failed connect');
  await assert.rejects(s.t.sendOffer('alice', offer('x')), SignalingError);
});

test('a client the SDK refuses to construct is retried with backoff, not thrown at the caller', async () => {
  const g = awsGrant({ earlier: ['alice'] });
  g.peers[0].wssEndpoint = ''; // the SDK: "channelEndpoint cannot be empty"
  const s = setup({ grant: g });
  const p = s.t.connect();
  s.kvs.latest('carol').accept();
  await p;
  assert.ok(s.errors.some((e) => /channelEndpoint cannot be empty/.test(e.message)));
  assert.deepEqual(s.clock.pending(), [1000]);
});

test('close() closes every client, cancels retries and refuses later use', async () => {
  const s = await connected();
  s.kvs.latest('alice').drop(); // right after opening: retried after 1 s
  assert.deepEqual(s.clock.pending(), [1000]);
  s.t.close();
  s.t.close();
  assert.deepEqual(s.clock.pending(), []);
  await s.clock.advance(60_000);
  assert.equal(s.kvs.clients.length, 3);
  assert.ok(s.kvs.clients.every((c) => c.closedByClient || c.readyState === 'CLOSED'));
  s.kvs.latest('carol').receive('offer', offer('late'), clientIdOf('alice'));
  assert.deepEqual(s.got, []);
  await assert.rejects(s.t.sendCandidate('alice', cand('x')), SignalingError);
  await assert.rejects(s.t.connect(), SignalingError);
});

// ---------------------------------------------------------------------------------------------
// KVS's per-connection limits (kvs-fakes.mjs KVS_LIMITS, from the KVS quotas page)

test('the fake service enforces KVS limits: message rates, a second master replaces the first, 10 viewers, 1 h and idle close', async () => {
  const clock = fakeClock();
  const kvs = fakeKvs({ now: clock.now });
  const master = new kvs.SignalingClient({ role: 'MASTER', channelARN: arnOf('a'), region: 'eu-west-1', channelEndpoint: wssOf('a'), credentials: {} });
  master.open();
  master.accept();
  for (let i = 0; i < 6; i += 1) master.sendSdpAnswer({ type: 'answer', sdp: `a${i}` }, 'v');
  assert.equal(master.sent.length, KVS_LIMITS.sdpPerSecond);
  assert.equal(master.dropped.length, 1);
  await clock.advance(1000);
  master.sendSdpAnswer({ type: 'answer', sdp: 'later' }, 'v');
  assert.equal(master.sent.length, 6);
  const second = new kvs.SignalingClient({ role: 'MASTER', channelARN: arnOf('a'), region: 'eu-west-1', channelEndpoint: wssOf('a'), credentials: {} });
  second.open();
  second.accept();
  assert.equal(master.readyState, 'CLOSED', 'replaced');
  await clock.advance(1000);
  const viewers = [];
  for (let i = 0; i < 11; i += 1) {
    if (i % 3 === 0) await clock.advance(1000); // ConnectAsViewer: 3 per second per channel
    const v = new kvs.SignalingClient({ role: 'VIEWER', clientId: `v${i}`, channelARN: arnOf('a'), region: 'eu-west-1', channelEndpoint: wssOf('a'), credentials: {} });
    v.open();
    v.accept();
    viewers.push(v);
  }
  assert.equal(viewers.filter((v) => v.readyState === 'OPEN').length, 10, 'the 11th viewer is refused');
  await clock.advance(KVS_LIMITS.idleMs);
  for (const c of kvs.clients) c.expireIfDue();
  assert.equal(kvs.live().length, 0, 'idle connections closed');
});

/** The most messages of `kind` ('sdp' | 'ice') a client sent within any `windowMs` (sliding). */
function peakIn(client, kind, windowMs = 1000) {
  const at = client.sentTimes.filter((m) => (m.kind === 'candidate' ? 'ice' : 'sdp') === kind).map((m) => m.at);
  let peak = 0;
  for (let i = 0, j = 0; i < at.length; i += 1) {
    while (at[i] - at[j] >= windowMs) j += 1;
    peak = Math.max(peak, i - j + 1);
  }
  return peak;
}

// Failed before the fix: sendOn sent at once, so a master answering 8 joiners at the same moment
// had 3 answers and 20 candidates dropped by KVS (5 SDP/s, 20 ICE/s per connection). Then, paced
// at exactly 20 ICE / 5 SDP per 1.1 s, KVS (measuring on arrival, after network jitter) still saw
// 21-30 candidates in a second: the pace now keeps a margin, 15 ICE and 4 SDP per second.
test('sends are paced per connection with margin: at most 15 candidates and 4 SDP in any second, in order, nothing dropped', async () => {
  const later = ['d1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7', 'd8'];
  const s = await connected({ grant: awsGrant({ later }) });
  const master = s.kvs.latest('carol');
  for (const u of later) master.receive('offer', offer(`o-${u}`), clientIdOf(u));
  const sends = [];
  for (const u of later) {
    sends.push(s.t.sendAnswer(u, answer(`a-${u}`)));
    for (let i = 0; i < 5; i += 1) sends.push(s.t.sendCandidate(u, cand(`c-${u}-${i}`)));
  }
  let settled = false;
  const all = Promise.all(sends).then(() => {
    settled = true;
  });
  for (let i = 0; i < 20 && !settled; i += 1) await s.clock.advance(250);
  await all;
  assert.deepEqual(master.dropped, []);
  assert.equal(master.sent.length, 48);
  assert.equal(KVS_ICE_PER_SECOND, 15);
  assert.equal(KVS_SDP_PER_SECOND, 4);
  assert.ok(peakIn(master, 'ice') <= 15, `${peakIn(master, 'ice')} candidates within one second`);
  assert.ok(peakIn(master, 'sdp') <= 4, `${peakIn(master, 'sdp')} SDP within one second`);
  // Evenly spaced, not in bursts: sends bunched by up to 400 ms of arrival jitter (any 1.4 s as
  // sent) still stay within KVS's 20 ICE / 5 SDP per second.
  assert.ok(peakIn(master, 'ice', 1400) <= KVS_LIMITS.icePerSecond, `${peakIn(master, 'ice', 1400)} candidates within 1.4 s`);
  assert.ok(peakIn(master, 'sdp', 1400) <= KVS_LIMITS.sdpPerSecond, `${peakIn(master, 'sdp', 1400)} SDP within 1.4 s`);
  // ...and the pace is not needlessly slow: 48 messages in under 4 s.
  assert.ok(master.sentTimes.at(-1).at - master.sentTimes[0].at < 4000);
  // In order per peer: the answer before its candidates.
  for (const u of later) {
    const mine = master.sent.filter((m) => m.recipientClientId === clientIdOf(u)).map((m) => m.kind);
    assert.deepEqual(mine, ['answer', 'candidate', 'candidate', 'candidate', 'candidate', 'candidate']);
  }
  assert.deepEqual(s.errors.filter((e) => e.code === 'KVS_STATUS'), []);
});

test('the pacing queue is bounded: beyond it a send fails at once as SIGNALING_BUSY (retryable), the queued ones still go out', async () => {
  const s = await connected();
  const alice = s.kvs.latest('alice');
  const results = [];
  for (let i = 0; i < 260; i += 1) results.push(s.t.sendCandidate('alice', cand(`c${i}`)).then(() => 'sent', (e) => e.code));
  let settled = false;
  const all = Promise.all(results).then((r) => {
    settled = true;
    return r;
  });
  for (let i = 0; i < 200 && !settled; i += 1) await s.clock.advance(500);
  const r = await all;
  const busy = r.filter((x) => x === 'SIGNALING_BUSY').length;
  assert.ok(busy > 0 && busy < 260, `${busy} refused`);
  assert.equal(alice.sent.length, 260 - busy);
  assert.deepEqual(alice.dropped, []);
  assert.deepEqual(alice.sent.map((m) => m.payload.candidate), r.map((x, i) => (x === 'sent' ? `c${i}` : null)).filter(Boolean), 'in order');
});

test('a message still queued when a rotation (new credentials) replaces its connection goes out on the replacement', async () => {
  const later = ['d1', 'd2', 'd3'];
  const s = await connected({ grant: awsGrant({ later }) });
  const master = s.kvs.latest('carol');
  for (const u of later) master.receive('offer', offer(`o-${u}`), clientIdOf(u));
  const sends = later.map((u) => s.t.sendAnswer(u, answer(`a-${u}`)).then(() => 'sent', (e) => e));
  await flush();
  s.t.updateGrant(awsGrant({ later, keyId: 'ASIA-2' }));
  const next = s.kvs.latest('carol');
  assert.notEqual(next, master);
  next.accept();
  await s.clock.advance(2000);
  assert.deepEqual(await Promise.all(sends), ['sent', 'sent', 'sent']);
  assert.deepEqual(master.sent.map((m) => m.payload.sdp), ['a-d1'], 'the first went out before the rotation');
  assert.deepEqual(next.sent.map((m) => [m.payload.sdp, m.recipientClientId]), [['a-d2', clientIdOf('d2')], ['a-d3', clientIdOf('d3')]], 'the rest on the new connection, in order');
});

test('a message still queued when its connection is replaced fails as retryable', async () => {
  const later = ['d1', 'd2', 'd3', 'd4', 'd5', 'd6'];
  const s = await connected({ grant: awsGrant({ later }) });
  const master = s.kvs.latest('carol');
  for (const u of later) master.receive('offer', offer(`o-${u}`), clientIdOf(u));
  const sends = later.map((u) => s.t.sendAnswer(u, answer(`a-${u}`)).then(() => 'sent', (e) => e));
  await flush();
  master.drop();
  await s.clock.advance(2000);
  const results = await Promise.all(sends);
  // Evenly paced, the first answer went out at once and the other five were still queued.
  assert.equal(results.filter((r) => r === 'sent').length, 1);
  for (const failed of results.slice(1)) {
    assert.equal(failed.code, 'NOT_CONNECTED');
    assert.equal(failed.retryable, true);
  }
});

// ---------------------------------------------------------------------------------------------
// Fresh ICE servers (KVS TURN credentials live 300 s)

/** A GetIceServerConfig stand-in: checks the SigV4 shape and hands out numbered credentials. */
function iceEndpoint({ ttl = 300 } = {}) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init, body: JSON.parse(init.body) });
    const auth = init.headers.authorization;
    assert.match(auth, /^AWS4-HMAC-SHA256 Credential=ASIA-1\/\d{8}\/eu-west-1\/kinesisvideo\/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token, Signature=[0-9a-f]{64}$/);
    assert.equal(init.headers['x-amz-security-token'], 'token-ASIA-1');
    const n = calls.length;
    return {
      ok: true,
      status: 200,
      text: async () => JSON.stringify({ IceServerList: [{ Uris: ['turn:t.example:443?transport=udp'], Username: `u${n}`, Password: `p${n}`, Ttl: ttl }] }),
    };
  };
  return { fetch, calls };
}

test('iceServersFor asks KVS for fresh TURN credentials on OUR OWN channel for every link, cached < 300 s', async () => {
  const ice = iceEndpoint();
  const s = await connected({ grant: awsGrant({ later: ['dave'] }), fetch: ice.fetch });
  // A link where we view an earlier participant's channel: still our own channel's TURN, as its
  // master (no client id), so that channel's 50 TURN allocations carry only our links.
  const alice1 = await s.t.iceServersFor('alice');
  assert.deepEqual(alice1.at(-1), { urls: ['turn:t.example:443?transport=udp'], username: 'u1', credential: 'p1' });
  assert.equal(alice1[0].urls[0], 'stun:stun.kinesisvideo.eu-west-1.amazonaws.com:443');
  assert.equal(ice.calls[0].url, 'https://r-carol.kinesisvideo.eu-west-1.amazonaws.com/v1/get-ice-server-config');
  assert.deepEqual(ice.calls[0].body, { ChannelARN: arnOf('carol'), Service: 'TURN' });
  // A later joiner (viewing our channel) and another earlier one: the same cached answer.
  assert.equal((await s.t.iceServersFor('dave')).at(-1).username, 'u1');
  assert.equal((await s.t.iceServersFor('bob')).at(-1).username, 'u1');
  assert.equal(ice.calls.length, 1);
  // ...but never past ICE_CACHE_MS (credentials live 300 s).
  assert.ok(ICE_CACHE_MS < 300_000);
  await s.clock.advance(ICE_CACHE_MS);
  assert.equal((await s.t.iceServersFor('alice')).at(-1).username, 'u2');
  assert.deepEqual(ice.calls[1].body, { ChannelARN: arnOf('carol'), Service: 'TURN' });
});

test('iceServersFor asks again before a short TURN Ttl runs out (80 % of it), not only after ICE_CACHE_MS', async () => {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push(JSON.parse(init.body));
    return { ok: true, status: 200, text: async () => JSON.stringify({ IceServerList: [{ Uris: ['turn:t.example:443?transport=udp'], Username: `u${calls.length}`, Password: 'p', Ttl: 10 }] }) };
  };
  const s = await connected({ fetch });
  assert.equal((await s.t.iceServersFor('alice')).at(-1).username, 'u1');
  await s.clock.advance(7900);
  assert.equal((await s.t.iceServersFor('alice')).at(-1).username, 'u1', 'still within 80 % of 10 s');
  await s.clock.advance(200);
  assert.equal((await s.t.iceServersFor('alice')).at(-1).username, 'u2', 'asked again at 8 s, before the 10 s expiry');
});

test('TURN credentials that live less than 300 s are reused for at most 80 % of their Ttl, never past it', async () => {
  const ice = iceEndpoint({ ttl: 5 });
  const s = await connected({ grant: awsGrant(), fetch: ice.fetch });
  assert.equal((await s.t.iceServersFor('alice')).at(-1).username, 'u1');
  await s.clock.advance(3000);
  assert.equal((await s.t.iceServersFor('alice')).at(-1).username, 'u1', 'reused within 80 % of 5 s');
  await s.clock.advance(1000);
  assert.equal((await s.t.iceServersFor('alice')).at(-1).username, 'u2', 'fetched again before the 5 s are over');
  assert.equal(iceCacheMs(5), 4000);
  assert.equal(iceCacheMs(300), ICE_CACHE_MS);
  assert.equal(iceCacheMs(3600), ICE_CACHE_MS);
  assert.equal(iceCacheMs(null), ICE_CACHE_MS, 'no Ttl in the answer: the 300 s rule');
});

test('iceServersFor falls back to the grant\'s list at once, with an error, when KVS refuses for good', async () => {
  let calls = 0;
  const fetch = async () => {
    calls += 1;
    return { ok: false, status: 403, text: async () => JSON.stringify({ __type: 'AccessDeniedException' }) };
  };
  const s = await connected({ fetch });
  const servers = await s.t.iceServersFor('alice');
  assert.deepEqual(servers, awsGrant().self.iceServers);
  assert.equal(calls, 1, 'not asked again');
  assert.match(s.errors.at(-1).message, /AccessDeniedException/);
  assert.equal(s.errors.at(-1).retryable, false);
});

/** Lets the page's promises (SigV4 signing: WebCrypto) run until `fn()` holds. */
async function settled(fn, what) {
  for (let i = 0; i < 1000; i += 1) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 2)); // WebCrypto answers from a thread, not a microtask
  }
  assert.fail(`never: ${what}`);
}

/** GetIceServerConfig refusing the first `throttled` calls with KVS's throttle (or forever: Infinity), then answering. */
function throttledIce(throttled) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push(JSON.parse(init.body));
    if (calls.length <= throttled) return { ok: false, status: 400, text: async () => JSON.stringify({ __type: 'ClientLimitExceededException', message: 'throttled' }) };
    return { ok: true, status: 200, text: async () => JSON.stringify({ IceServerList: [{ Uris: ['turn:t.example:443?transport=udp'], Username: `u${calls.length}`, Password: 'p', Ttl: 300 }] }) };
  };
  return { fetch, calls };
}

test('a throttled GetIceServerConfig (ClientLimitExceededException) is asked again after a wait; links asking meanwhile share the call', async () => {
  const ice = throttledIce(2);
  const s = await connected({ grant: awsGrant({ later: ['dave'] }), fetch: ice.fetch, rand: () => 1 });
  let first = null;
  let second = null;
  s.t.iceServersFor('alice').then((v) => (first = v));
  s.t.iceServersFor('dave').then((v) => (second = v));
  await settled(() => s.clock.pending().length && ice.calls.length === 1, 'the first refusal and its wait');
  assert.equal(ice.calls.length, 1, 'one call for both links');
  assert.equal(first, null, 'not the grant\'s list at the first refusal');
  await s.clock.advance(ICE_RETRY_DELAYS_MS[0]);
  await settled(() => ice.calls.length === 2 && s.clock.pending().includes(ICE_RETRY_DELAYS_MS[1]), 'the second call and its wait');
  await s.clock.advance(ICE_RETRY_DELAYS_MS[1]);
  await settled(() => first, 'the answer');
  assert.equal(ice.calls.length, 3);
  assert.equal(first.at(-1).username, 'u3', 'fresh credentials once KVS answers');
  assert.deepEqual(second, first);
  assert.deepEqual(s.errors, [], 'nothing reported: the retry worked');
  assert.equal((await s.t.iceServersFor('alice')).at(-1).username, 'u3', 'and cached');
  assert.equal(ice.calls.length, 3);
});

test('GetIceServerConfig throttled through every retry falls back to the grant\'s list, with a retryable error', async () => {
  const ice = throttledIce(Infinity);
  const s = await connected({ fetch: ice.fetch, rand: () => 1 });
  let servers = null;
  s.t.iceServersFor('alice').then((v) => (servers = v));
  for (const [i, d] of ICE_RETRY_DELAYS_MS.entries()) {
    await settled(() => ice.calls.length === i + 1 && s.clock.pending().includes(d), `call ${i + 1} refused and a wait of ${d} ms`);
    assert.equal(servers, null);
    await s.clock.advance(d);
  }
  await settled(() => servers, 'the fallback');
  assert.deepEqual(servers, awsGrant().self.iceServers);
  assert.equal(ice.calls.length, ICE_RETRY_DELAYS_MS.length + 1);
  assert.match(s.errors.at(-1).message, /ClientLimitExceededException/);
  assert.equal(s.errors.at(-1).retryable, true);
  // The waits are jittered between half and all of ICE_RETRY_DELAYS_MS, a few seconds in all.
  const total = ICE_RETRY_DELAYS_MS.reduce((a, b) => a + b, 0);
  assert.ok(total >= 5000 && total <= 10000, `${total} ms`);
});

/** What KVS's GetIceServerConfig answers: 2 TURN servers × 3 URIs each. */
function kvsShapedIce(n) {
  return ['1-2-3-4', '5-6-7-8'].map((ip) => ({
    Uris: [`turn:${ip}.t.example:443?transport=udp`, `turns:${ip}.t.example:443?transport=udp`, `turns:${ip}.t.example:443?transport=tcp`],
    Username: `u${n}-${ip}`,
    Password: `p${n}`,
    Ttl: 300,
  }));
}

test('limitTurn keeps STUN and one TURN server with at most one UDP and one TCP URI', () => {
  const stun = { urls: ['stun:stun.kinesisvideo.eu-west-1.amazonaws.com:443'] };
  const kvs = kvsShapedIce(1).map((s) => ({ urls: s.Uris, username: s.Username, credential: s.Password }));
  const out = limitTurn([stun, ...kvs]);
  assert.deepEqual(out, [stun, { urls: ['turn:1-2-3-4.t.example:443?transport=udp', 'turns:1-2-3-4.t.example:443?transport=tcp'], username: 'u1-1-2-3-4', credential: 'p1' }]);
  // A single string URL, a TCP-only server, nothing at all.
  assert.deepEqual(limitTurn([{ urls: 'turn:x:3478?transport=tcp', username: 'u', credential: 'c' }]), [{ urls: ['turn:x:3478?transport=tcp'], username: 'u', credential: 'c' }]);
  assert.deepEqual(limitTurn([]), []);
  assert.deepEqual(limitTurn(undefined), []);
});

test('a full room stays within KVS\'s 50 TURN allocations per channel', async () => {
  // Carol is in a full room of 10: 9 links, each asking iceServersFor its peer. Every answer
  // comes from carol's own channel and carries at most TURN_URIS_PER_PEER_CONNECTION TURN URIs.
  const earlier = ['p1', 'p2', 'p3', 'p4'];
  const later = ['p5', 'p6', 'p7', 'p8', 'p9'];
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, body: JSON.parse(init.body) });
    return { ok: true, status: 200, text: async () => JSON.stringify({ IceServerList: kvsShapedIce(calls.length) }) };
  };
  const s = await connected({ grant: awsGrant({ earlier, later }), fetch });
  const perChannel = new Map();
  for (const peer of [...earlier, ...later]) {
    const servers = await s.t.iceServersFor(peer);
    const turn = servers.flatMap((x) => x.urls).filter((u) => /^turns?:/.test(u));
    assert.ok(turn.length <= TURN_URIS_PER_PEER_CONNECTION, `${peer}: ${turn}`);
    const channel = calls.at(-1).body.ChannelARN;
    perChannel.set(channel, (perChannel.get(channel) || 0) + turn.length);
  }
  assert.deepEqual([...perChannel.keys()], [arnOf('carol')], 'every link uses carol\'s own channel');
  const allocations = perChannel.get(arnOf('carol'));
  assert.equal(allocations, 9 * TURN_URIS_PER_PEER_CONNECTION);
  // Even with every link restarted at once (old and new allocations overlapping): within 50.
  assert.ok(2 * allocations <= 50, `${2 * allocations} allocations`);
});

test('fetchIceServers signs as SigV4 does (AWS test vector shape: date, scope, hex signature)', async () => {
  const ice = iceEndpoint();
  await fetchIceServers({ fetch: ice.fetch, endpoint: 'https://r.example', channelArn: 'arn:x', clientId: null, region: 'eu-west-1', credentials: { accessKeyId: 'ASIA-1', secretAccessKey: 's', sessionToken: 'token-ASIA-1' }, now: Date.UTC(2026, 0, 2, 3, 4, 5), subtle: globalThis.crypto.subtle });
  assert.equal(ice.calls[0].init.headers['x-amz-date'], '20260102T030405Z');
});
