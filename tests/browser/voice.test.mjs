// The voice session (voice-server/static/voice.js) with fake peer connections and a fake
// transport: links are renegotiated in place, replaced ones closed and released, offers per
// peer limited, ICE restarts by the offering side and a rebuild when they do not help.
import { test, mock } from 'node:test';
import assert from 'node:assert/strict';
import { ANSWER_WAIT_MS, ICE_RESTART_WAIT_MS, OFFERS_PER_WINDOW, RENEGOTIATIONS_PER_WINDOW, offerId, sdpFingerprint, VoiceSession } from '../../voice-server/static/voice.js';

let fpSeq = 0;
class FakePC {
  static all = [];
  constructor(cfg) {
    this.cfg = cfg;
    this.fp = `AA:${++fpSeq}`;
    this.connectionState = 'new';
    this.signalingState = 'stable';
    this.remoteDescription = null;
    this.localDescription = null;
    this.listeners = {};
    this.restarts = 0;
    FakePC.all.push(this);
  }
  addTrack() {}
  addEventListener(k, f) {
    (this.listeners[k] ||= []).push(f);
  }
  setState(st) {
    this.connectionState = st;
    for (const f of this.listeners.connectionstatechange || []) f();
  }
  // An origin line as browsers write it: a session id per connection, a version per description.
  origin() {
    this.version = (this.version || 1) + 1;
    return `o=- S${this.fp} ${this.version} IN IP4 127.0.0.1`;
  }
  async createOffer(opts) {
    this.lastOfferOpts = opts;
    return { type: 'offer', sdp: `v=0\r\n${this.origin()}\r\na=fingerprint:sha-256 ${this.fp}\r\n` };
  }
  async createAnswer() {
    return { type: 'answer', sdp: `v=0\r\n${this.origin()}\r\na=fingerprint:sha-256 ${this.fp}\r\n` };
  }
  async setLocalDescription(d) {
    this.localDescription = d;
    this.signalingState = d.type === 'offer' ? 'have-local-offer' : 'stable';
  }
  async setRemoteDescription(d) {
    // As browsers: an answer only while our offer waits for one.
    if (d.type === 'answer' && this.signalingState !== 'have-local-offer') throw new Error(`InvalidStateError: answer in state ${this.signalingState}`);
    if (d.sdp.includes('x-unusable')) throw new Error('OperationError: unusable description');
    this.remoteDescription = d;
    this.remoteSet = (this.remoteSet || 0) + 1;
    this.signalingState = d.type === 'offer' ? 'have-remote-offer' : 'stable';
  }
  async addIceCandidate() {}
  restartIce() {
    this.restarts += 1;
  }
  setConfiguration(c) {
    // As Chromium: a bundle policy other than the constructor's (an absent one is 'balanced')
    // throws InvalidModificationError.
    if ((c.bundlePolicy || 'balanced') !== (this.cfg.bundlePolicy || 'balanced')) throw new Error('InvalidModificationError: bundlePolicy changed');
    this.cfg = c;
  }
  close() {
    this.connectionState = 'closed';
    this.signalingState = 'closed';
    this.closed = true;
  }
}

const grant = (peers) => ({
  voiceRoomId: 'v1',
  userId: 'me',
  self: { iceServers: [] },
  peers: peers.map((userId) => ({ userId, iceServers: [{ urls: ['stun:fresh'] }] })),
  credentials: { kind: 'token', token: 't' },
  expiresAt: Date.now() + 3600e3,
  issuedAt: Date.now(),
});

function setup(peers = [], extra = {}, deps = {}) {
  FakePC.all = [];
  const sent = [];
  const handlers = {};
  const transport = {
    onOffer: (f) => (handlers.offer = f),
    onAnswer: (f) => (handlers.answer = f),
    onCandidate: (f) => (handlers.candidate = f),
    onError: () => {},
    connect: async () => {},
    updateGrant: () => {},
    updateRoom: () => {},
    close: () => (transport.closed = true),
    sendOffer: async (to, d) => sent.push({ kind: 'offer', to, sdp: d.sdp }),
    sendAnswer: async (to, d) => sent.push({ kind: 'answer', to, sdp: d.sdp, offer: d.offer }),
    sendCandidate: async () => {},
    ...extra,
  };
  const stream = { getAudioTracks: () => [{}], getTracks: () => [{ stop() {} }] };
  const s = new VoiceSession(
    {
      app: () => ({ request: async () => grant(peers) }),
      createTransport: () => transport,
      refreshDelayMs: () => 3600e3,
      RTCPeerConnection: FakePC,
      MediaStream: class {},
      attachAudio: () => ({ play: async () => {} }),
      detachAudio: () => {},
      ...deps,
    },
    'c1',
    'v1',
    stream,
  );
  return { s, sent, handlers, transport };
}

const offerFrom = (fp) => ({ type: 'offer', sdp: `v=0\r\na=fingerprint:sha-256 ${fp}\r\n` });
const flush = () => new Promise((r) => setImmediate(r));

test('a credential refresh says refresh: true, none is sent once the user leaves, and an overtaken one calls nobody', async () => {
  const asked = [];
  let epoch = 0;
  let peers = [];
  const app = { request: async (action, fields) => (asked.push({ action, ...fields }), grant(peers)) };
  const { s } = setup([], {}, { app: () => app, viewEpoch: () => epoch });
  await s.join();
  assert.deepEqual(asked, [{ action: 'getVoiceCredentials', voiceRoomId: 'v1' }], 'joining is a plain getVoiceCredentials');
  // A refresh whose reply an event overtook (Alice left meanwhile): her channel is not called.
  peers = ['alice'];
  app.request = async (action, fields) => {
    asked.push({ action, ...fields });
    epoch += 1;
    return grant(peers);
  };
  await s.refresh(Date.now() + 3600e3);
  assert.deepEqual(asked[1], { action: 'getVoiceCredentials', voiceRoomId: 'v1', refresh: true });
  assert.equal(s.peers.has('alice'), false, 'no call from an overtaken grant');
  // Not overtaken: the grant's new peer is called.
  app.request = async (action, fields) => (asked.push({ action, ...fields }), grant(peers));
  await s.refresh(Date.now() + 3600e3);
  assert.equal(s.peers.has('alice'), true);
  // Leaving: no refresh goes out any more.
  s.stopRefreshing();
  await s.refresh(Date.now() + 3600e3);
  assert.equal(asked.length, 3);
  s.teardown('test');
});

test('sdpFingerprint reads the DTLS fingerprint line', () => {
  assert.equal(sdpFingerprint('v=0\r\na=fingerprint:sha-256 AB:CD\r\n'), 'sha-256 AB:CD');
  assert.equal(sdpFingerprint('v=0'), null);
});

test('an offer from the same remote connection renegotiates the existing link; a new one replaces and closes it', async () => {
  const { s, sent } = setup();
  await s.join();
  await s.onOffer('peer', offerFrom('X1'));
  assert.equal(FakePC.all.length, 1);
  const first = s.peers.get('peer').pc;
  await s.onOffer('peer', offerFrom('X1'));
  assert.equal(FakePC.all.length, 1, 'no new RTCPeerConnection for a renegotiation');
  assert.equal(s.peers.get('peer').pc, first);
  await s.onOffer('peer', offerFrom('X2'));
  assert.equal(FakePC.all.length, 2);
  assert.equal(first.closed, true, 'the replaced connection is closed');
  assert.equal(s.peers.size, 1, 'and released');
  assert.equal(sent.filter((x) => x.kind === 'answer').length, 3);
  s.teardown('test');
  assert.ok(FakePC.all.every((p) => p.closed));
});

test('offers per peer are limited: a flood makes at most OFFERS_PER_WINDOW connections', async () => {
  const { s, sent } = setup();
  await s.join();
  for (let i = 0; i < 50; i++) await s.onOffer('flooder', offerFrom(`F${i}`));
  assert.equal(FakePC.all.length, OFFERS_PER_WINDOW);
  assert.equal(FakePC.all.filter((p) => !p.closed).length, 1, 'only the latest is open');
  assert.equal(sent.filter((x) => x.kind === 'answer').length, OFFERS_PER_WINDOW);
  // Another peer is not affected by the flooder.
  await s.onOffer('other', offerFrom('O1'));
  assert.equal(s.peers.size, 2);
  s.teardown('test');
});

test('a failed link: ICE restart on the same connection with fresh ICE servers, then a rebuild if that does not help', async () => {
  mock.timers.enable({ apis: ['setTimeout'] });
  try {
    const { s, sent } = setup(['early']);
    await s.join();
    await flush();
    assert.equal(FakePC.all.length, 1);
    const pc = FakePC.all[0];
    assert.equal(sent.filter((x) => x.kind === 'offer').length, 1);
    pc.setState('failed');
    await flush();
    assert.equal(pc.restarts, 1);
    assert.deepEqual(pc.lastOfferOpts, { iceRestart: true });
    assert.deepEqual(pc.cfg.iceServers, [{ urls: ['stun:fresh'] }]);
    assert.equal(sent.filter((x) => x.kind === 'offer').length, 2, 'the restart offer went out');
    assert.equal(FakePC.all.length, 1, 'same connection');
    mock.timers.tick(ICE_RESTART_WAIT_MS + 1);
    mock.timers.tick(1000);
    await flush();
    assert.equal(FakePC.all.length, 2, 'rebuilt after the restart did not help');
    assert.equal(pc.closed, true);
    assert.equal(s.peers.get('early').pc, FakePC.all[1]);
    s.teardown('test');
  } finally {
    mock.timers.reset();
  }
});

test('resume after a reconnect: old links closed, earlier participants called again on the new transport', async () => {
  const { s, sent } = setup(['a', 'b']);
  await s.join();
  await flush();
  const old = [...FakePC.all];
  await s.resume();
  await flush();
  assert.ok(old.every((p) => p.closed));
  assert.equal(s.peers.size, 2);
  assert.equal(sent.filter((x) => x.kind === 'offer').length, 4);
  assert.equal(s.grantCount, 2);
  s.teardown('test');
});

test('resume with KVS signaling (AWS: API Gateway cut the app connection, not signaling or media): same transport and links, the new grant applied, offers that came meanwhile kept', async () => {
  const updates = [];
  const { s, sent, handlers, transport } = setup([], { kind: 'aws', updateGrant: (g) => updates.push(g) });
  const aws = (peers, extra = {}) => ({ ...grant(peers), self: { channelArn: 'arn:me', iceServers: [] }, credentials: { kind: 'aws' }, newlyJoined: false, ...extra });
  s.d.app = () => ({ request: async () => aws(['a'], { clientId: 'old-client' }) });
  await s.join();
  await flush();
  const toA = s.peers.get('a');
  toA.pc.setState('connected');
  await handlers.offer('z', offerFrom('ZZ:1'));
  const toZ = s.peers.get('z');
  // The grant takes a while; meanwhile z, a later joiner told of our resume, offers again.
  let give;
  s.d.app = () => ({ request: () => new Promise((r) => (give = r)) });
  const resuming = s.resume();
  await flush();
  await handlers.offer('z', offerFrom('ZZ:2'));
  const toZ2 = s.peers.get('z');
  assert.ok(toZ.pc.closed && toZ2 !== toZ, 'the offer from z\'s new connection replaced the old link');
  give(aws(['a'], { clientId: 'new-client' }));
  await resuming;
  await flush();
  assert.notEqual(transport.closed, true, 'the KVS transport is kept');
  assert.deepEqual(updates.map((g) => g.clientId), ['new-client'], 'its sockets get the new credentials and client id');
  assert.equal(s.peers.get('a'), toA, 'the connected link to a is kept');
  assert.equal(s.peers.get('z'), toZ2, 'the link z made during the resume is kept');
  assert.ok(!toA.pc.closed && !toZ2.pc.closed);
  assert.equal(sent.filter((x) => x.kind === 'offer').length, 1, 'no new offer to a: the link never broke');
  assert.equal(s.grantCount, 2);
  // A resume that turned out to be a fresh join (other channel) rebuilds everything.
  assert.equal(s.keepsTransport(aws(['a'], { newlyJoined: true })), false);
  assert.equal(s.keepsTransport(aws(['a'], { self: { channelArn: 'arn:other', iceServers: [] } })), false);
  assert.equal(s.keepsTransport({ ...grant(['a']) }), false, 'relay credentials: a new transport on the new connection');
  s.teardown('test');
});

test('a transport that fetches current ICE servers: every new link and ICE restart uses them', async () => {
  let n = 0;
  const { s } = setup(['early'], { iceServersFor: async (userId) => [{ urls: [`turn:fresh-${userId}-${++n}`], username: 'u', credential: 'c' }] });
  await s.join();
  await flush();
  const pc = FakePC.all[0];
  assert.deepEqual(pc.cfg.iceServers, [{ urls: ['turn:fresh-early-1'], username: 'u', credential: 'c' }]);
  // max-bundle (candidates listed once per offer, docs/web-client.md "Offer sizes"), kept by
  // the ICE restart's setConfiguration, which would otherwise throw.
  assert.equal(pc.cfg.bundlePolicy, 'max-bundle');
  await s.restartIce('early');
  assert.deepEqual(pc.cfg.iceServers[0].urls, ['turn:fresh-early-2']);
  assert.equal(pc.cfg.bundlePolicy, 'max-bundle');
  await s.onOffer('later', offerFrom('L1'));
  assert.deepEqual(s.peers.get('later').pc.cfg.iceServers[0].urls, ['turn:fresh-later-3']);
  s.teardown('test');
});

// --- video on the existing links (docs/web-client.md, "Video and screen sharing") -------------

class FakeTransceiver {
  constructor(kind, direction = 'recvonly', track = null) {
    this.receiver = { track: { kind } };
    this.direction = direction;
    this.currentDirection = null;
    this.sender = {
      track,
      params: { encodings: [{}] },
      replaceTrack: async (t) => (this.sender.track = t),
      getParameters: () => structuredClone(this.sender.params),
      setParameters: async (p) => (this.sender.params = p),
    };
  }
}

class VideoPC extends FakePC {
  constructor(cfg) {
    super(cfg);
    this.transceivers = [new FakeTransceiver('audio', 'sendrecv')];
    this.channels = [];
  }
  addTransceiver(trackOrKind, init) {
    const track = typeof trackOrKind === 'string' ? null : trackOrKind;
    const t = new FakeTransceiver('video', init.direction, track);
    this.transceivers.push(t);
    return t;
  }
  getTransceivers() {
    return this.transceivers;
  }
  createDataChannel(label, init) {
    const ch = { label, init, readyState: 'open', sent: [], listeners: {}, send: (m) => ch.sent.push(m), addEventListener: (k, f) => ((ch.listeners[k] ||= []).push(f)) };
    this.channels.push(ch);
    return ch;
  }
  async setRemoteDescription(d) {
    await super.setRemoteDescription(d);
    // An offer creates the two video transceivers on the answering side.
    if (d.type === 'offer' && this.transceivers.length === 1) this.transceivers.push(new FakeTransceiver('video'), new FakeTransceiver('video'));
    // The far side sends video on slots listed in the description (test convention).
    const sends = (d.sdp.match(/^x-sends:(.*)$/m) || [, ''])[1].split(',');
    if (d.type === 'answer') this.settle(sends);
    this.remoteSends = sends;
  }
  async setLocalDescription(d) {
    await super.setLocalDescription(d);
    if (d.type === 'answer') this.settle(this.remoteSends || []);
  }
  settle(remoteSends) {
    this.transceivers.slice(1).forEach((t, i) => {
      const them = remoteSends.includes(['camera', 'screen'][i]);
      const us = t.direction === 'sendrecv';
      t.currentDirection = us && them ? 'sendrecv' : us ? 'sendonly' : them ? 'recvonly' : 'inactive';
    });
  }
}

function setupVideo(peers) {
  const ctx = setup(peers);
  ctx.s.d.RTCPeerConnection = VideoPC;
  ctx.s.d.RTCRtpReceiver = { getCapabilities: () => ({ codecs: [{ mimeType: 'video/VP8' }, { mimeType: 'video/H264' }] }) };
  return ctx;
}

const fakeTrack = () => {
  const t = { kind: 'video', stopped: false, listeners: {}, stop: () => (t.stopped = true), addEventListener: (k, f) => ((t.listeners[k] ||= []).push(f)) };
  return t;
};

test('camera on as the offering side: same RTCPeerConnection, a new offer, capped by peer count; off again', async () => {
  const { s, sent, handlers } = setupVideo(['a', 'b']);
  await s.join();
  await flush();
  assert.equal(FakePC.all.length, 2);
  for (const to of ['a', 'b']) await handlers.answer(to, { type: 'answer', sdp: `v=0\r\na=fingerprint:sha-256 R-${to}\r\n` });
  const pcs = [...FakePC.all];
  assert.ok(pcs.every((pc) => pc.getTransceivers().length === 3), 'audio + camera + screen on every link');
  assert.ok(pcs.every((pc) => pc.channels.length === 1 && pc.channels[0].init.negotiated), 'one negotiated control channel');
  const cam = fakeTrack();
  await s.setVideo('camera', cam);
  assert.equal(FakePC.all.length, 2, 'no new RTCPeerConnection');
  assert.equal(sent.filter((x) => x.kind === 'offer').length, 4, 'one renegotiation offer per link');
  for (const pc of pcs) {
    const [, camT, scrT] = pc.getTransceivers();
    assert.equal(camT.sender.track, cam);
    assert.equal(camT.direction, 'sendrecv');
    assert.equal(scrT.direction, 'recvonly');
  }
  for (const to of ['a', 'b']) await handlers.answer(to, { type: 'answer', sdp: `v=0\r\na=fingerprint:sha-256 R-${to}\r\n` });
  for (const pc of pcs) assert.deepEqual(pc.getTransceivers()[1].sender.params.encodings[0], { maxBitrate: 800_000, scaleResolutionDownBy: 1, maxFramerate: 30 }, 'two peers: the two-peer row');
  await s.setVideo('camera', null);
  assert.equal(cam.stopped, true, 'the camera is released');
  assert.ok(pcs.every((pc) => pc.getTransceivers()[1].direction === 'recvonly' && pc.getTransceivers()[1].sender.track === null));
  assert.equal(sent.filter((x) => x.kind === 'offer').length, 6);
  s.teardown('test');
});

test('as the answering side we never offer: we ask the viewer over the control channel, and answer its offer with our video', async () => {
  const { s, sent } = setupVideo([]);
  await s.join();
  await s.onOffer('v', offerFrom('V1'));
  const pc = FakePC.all[0];
  const cam = fakeTrack();
  await s.setVideo('camera', cam);
  assert.equal(sent.filter((x) => x.kind === 'offer').length, 0, 'no offer from the master');
  assert.deepEqual(pc.channels[0].sent, ['renegotiate']);
  await s.onOffer('v', offerFrom('V1'));
  assert.equal(FakePC.all.length, 1, 'answered on the same RTCPeerConnection');
  assert.equal(pc.getTransceivers()[1].sender.track, cam);
  assert.equal(pc.getTransceivers()[1].currentDirection, 'sendonly');
  s.teardown('test');
  assert.equal(cam.stopped, true, 'teardown stops the camera');
});

test('a viewer asked to renegotiate offers; remote video is tracked per slot from the negotiated directions', async () => {
  const { s, sent, handlers } = setupVideo(['m']);
  await s.join();
  await flush();
  const pc = FakePC.all[0];
  await handlers.answer('m', { type: 'answer', sdp: 'v=0\r\na=fingerprint:sha-256 M\r\n' });
  for (const f of pc.channels[0].listeners.message) f({ data: 'renegotiate' });
  await flush();
  assert.equal(sent.filter((x) => x.kind === 'offer').length, 2);
  await handlers.answer('m', { type: 'answer', sdp: 'v=0\r\na=fingerprint:sha-256 M\r\nx-sends:screen\r\n' });
  assert.deepEqual(s.remoteVideos().map((r) => [r.userId, r.slot]), [['m', 'screen']]);
  for (const f of pc.channels[0].listeners.message) f({ data: 'renegotiate' });
  await flush();
  await handlers.answer('m', { type: 'answer', sdp: 'v=0\r\na=fingerprint:sha-256 M\r\n' });
  assert.deepEqual(s.remoteVideos(), [], 'the share stopped');
  s.teardown('test');
});

test('a screen share the browser ends ("Stop sharing") is taken off every link', async () => {
  const { s, handlers } = setupVideo(['a']);
  await s.join();
  await flush();
  await handlers.answer('a', { type: 'answer', sdp: 'v=0\r\na=fingerprint:sha-256 A\r\n' });
  const scr = fakeTrack();
  await s.setVideo('screen', scr);
  const pc = FakePC.all[0];
  assert.equal(pc.getTransceivers()[2].sender.track, scr);
  for (const f of scr.listeners.ended) f();
  await flush();
  assert.equal(s.video.screen, null);
  assert.equal(pc.getTransceivers()[2].direction, 'recvonly');
  assert.equal(FakePC.all.length, 1);
  s.teardown('test');
});

test('renegotiation requests over the control channel are bounded like offers', async () => {
  const { s, sent, handlers } = setupVideo(['m']);
  await s.join();
  await flush();
  const pc = FakePC.all[0];
  for (let i = 0; i < OFFERS_PER_WINDOW + 4; i++) {
    await handlers.answer('m', { type: 'answer', sdp: 'v=0\r\na=fingerprint:sha-256 M\r\n' });
    for (const f of pc.channels[0].listeners.message) f({ data: 'renegotiate' });
    await flush();
  }
  assert.equal(sent.filter((x) => x.kind === 'offer').length, 1 + RENEGOTIATIONS_PER_WINDOW, 'the first offer, then at most our own pace (below the peer\'s limit)');
  s.teardown('test');
});

test('a quick series of video changes is paced below the peer\'s offer limit, and the held change still goes out', async () => {
  const { s, sent, handlers } = setupVideo(['m']);
  let now = 1_000_000;
  const timers = [];
  s.d.now = () => now;
  s.d.setTimeout = (f, ms) => {
    const t = { f, at: now + ms, done: false };
    timers.push(t);
    return t;
  };
  s.d.clearTimeout = (t) => {
    if (t) t.done = true;
  };
  await s.join();
  await flush();
  const offers = () => sent.filter((x) => x.kind === 'offer').length;
  const answer = () => handlers.answer('m', { type: 'answer', sdp: 'v=0\r\na=fingerprint:sha-256 M\r\n' });
  await answer();
  const before = timers.length;
  // Seven toggles in quick succession, each answered: a peer accepts OFFERS_PER_WINDOW offers
  // per window including the link's first, so at most RENEGOTIATIONS_PER_WINDOW go out now.
  for (let i = 0; i < 7; i++) {
    now += 100;
    await s.setVideo('camera', i % 2 ? null : fakeTrack());
    await flush();
    await answer();
  }
  assert.equal(offers(), 1 + RENEGOTIATIONS_PER_WINDOW, 'the first offer and the paced renegotiations');
  assert.ok(1 + RENEGOTIATIONS_PER_WINDOW <= OFFERS_PER_WINDOW, 'never over what the peer admits');
  const held = timers.slice(before).filter((t) => !t.done);
  assert.equal(held.length, 1, 'one held renegotiation, not one per change');
  // When the window has passed, the held change goes out (it carries the latest state: camera on).
  now = held[0].at;
  held[0].done = true;
  held[0].f();
  await flush();
  assert.equal(offers(), 2 + RENEGOTIATIONS_PER_WINDOW, 'the held change is sent, once');
  assert.equal(FakePC.all[0].getTransceivers()[1].direction, 'sendrecv', 'with the latest camera state');
  s.teardown('test');
});

// --- the answer deadline (ANSWER_WAIT_MS): an offer whose answer never arrives -----------------

/** A clock and timers the test drives; pending() is every timer not yet fired or cleared. */
function fakeClock(s) {
  let now = 1_000_000;
  const timers = [];
  s.d.now = () => now;
  s.d.setTimeout = (f, ms) => {
    const t = { f, at: now + ms, done: false };
    timers.push(t);
    return t;
  };
  s.d.clearTimeout = (t) => {
    if (t) t.done = true;
  };
  const pending = () => timers.filter((t) => !t.done);
  /** Moves the clock `ms` on, firing every timer that comes due, in order. */
  const advance = async (ms) => {
    const end = now + ms;
    for (;;) {
      const due = pending().filter((t) => t.at <= end).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      now = due.at;
      due.done = true;
      due.f();
      await flush();
    }
    now = end;
    await flush();
  };
  return { pending, advance };
}

/** An answer from the peer's connection `fp` to the offer `offerSdp` (named as a master names it). */
const answerTo = (offerSdp, fp = 'M1') => ({ type: 'answer', sdp: `v=0\r\no=- S${fp} 2 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 ${fp}\r\n`, offer: offerId(offerSdp) });

test('an answer lost once: after ANSWER_WAIT_MS the same offer goes out again on the same link, and its answer connects it', async () => {
  const { s, sent, handlers } = setup(['m']);
  const clock = fakeClock(s);
  await s.join();
  await flush();
  const offers = () => sent.filter((x) => x.kind === 'offer');
  const pc = FakePC.all[0];
  assert.equal(offers().length, 1);
  // As in a browser, the local description gains the candidates gathered meanwhile.
  pc.localDescription = { ...pc.localDescription, sdp: `${pc.localDescription.sdp}a=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n` };
  await clock.advance(ANSWER_WAIT_MS - 1);
  assert.equal(offers().length, 1, 'nothing before the deadline');
  await clock.advance(1);
  assert.equal(offers().length, 2, 'the offer went out again');
  assert.equal(offerId(offers()[1].sdp), offerId(offers()[0].sdp), 'the same offer: an answer to either copy fits');
  assert.equal(FakePC.all.length, 1, 'on the same RTCPeerConnection');
  await handlers.answer('m', answerTo(offers()[1].sdp));
  assert.equal(pc.signalingState, 'stable');
  assert.equal(pc.remoteSet, 1);
  pc.setState('connected');
  await clock.advance(3 * ANSWER_WAIT_MS);
  assert.equal(offers().length, 2, 'answered: no more offers');
  assert.equal(FakePC.all.length, 1, 'and no rebuild');
  assert.equal(s.peers.get('m').pc, pc);
  s.teardown('test');
});

test('an answer lost twice: the link is closed and rebuilt, and an answer from the old connection is ignored', async () => {
  const { s, sent, handlers } = setup(['m']);
  const clock = fakeClock(s);
  await s.join();
  await flush();
  const offers = () => sent.filter((x) => x.kind === 'offer');
  const old = FakePC.all[0];
  await clock.advance(ANSWER_WAIT_MS);
  assert.equal(offers().length, 2);
  await clock.advance(ANSWER_WAIT_MS);
  assert.equal(old.closed, true, 'the link whose offer went unanswered twice is closed');
  await clock.advance(1000);
  assert.equal(FakePC.all.length, 2, 'a new RTCPeerConnection');
  const pc = FakePC.all[1];
  assert.equal(s.peers.get('m').pc, pc);
  assert.equal(offers().length, 3, 'a fresh offer from it');
  assert.notEqual(sdpFingerprint(offers()[2].sdp), sdpFingerprint(offers()[0].sdp));
  // The peer was only slow: its answer to the old connection's offer arrives now. Applying it to
  // the new connection would pair it with a connection the peer has replaced.
  await handlers.answer('m', answerTo(offers()[0].sdp, 'M-old'));
  assert.equal(pc.signalingState, 'have-local-offer', 'ignored');
  assert.equal(pc.remoteSet, undefined);
  await handlers.answer('m', answerTo(offers()[2].sdp, 'M-new'));
  assert.equal(pc.signalingState, 'stable');
  assert.equal(sdpFingerprint(pc.remoteDescription.sdp), 'sha-256 M-new');
  s.teardown('test');
  assert.deepEqual(clock.pending(), [], 'no timer left behind');
});

test('a late answer to the first copy of a re-sent offer is ignored without an error', async () => {
  const warnings = [];
  const { s, sent, handlers } = setup(['m'], {}, { warn: (m) => warnings.push(m) });
  const clock = fakeClock(s);
  await s.join();
  await flush();
  const offers = () => sent.filter((x) => x.kind === 'offer');
  await clock.advance(ANSWER_WAIT_MS);
  assert.equal(offers().length, 2);
  const pc = FakePC.all[0];
  await handlers.answer('m', answerTo(offers()[1].sdp));
  // The first copy's answer, late: the link is stable now, so it is not applied.
  await assert.doesNotReject(handlers.answer('m', answerTo(offers()[0].sdp)));
  assert.equal(pc.remoteSet, 1, 'setRemoteDescription ran once');
  assert.ok(warnings.some((w) => /ignored an unexpected answer/.test(w)));
  // A renegotiation's late answer names an older offer of the same connection: ignored too.
  await s.renegotiate(s.peers.get('m'));
  await handlers.answer('m', answerTo(offers()[0].sdp));
  assert.equal(pc.signalingState, 'have-local-offer', 'an answer to an earlier offer is not applied');
  await handlers.answer('m', answerTo(offers()[2].sdp));
  assert.equal(pc.signalingState, 'stable');
  s.teardown('test');
});

test('an offer the transport could not send is sent again at the deadline', async () => {
  let refuse = true;
  const { s, sent, handlers } = setup(['m'], {
    sendOffer: async (to, d) => {
      if (refuse) throw new Error('not connected');
      sent.push({ kind: 'offer', to, sdp: d.sdp });
    },
  });
  const clock = fakeClock(s);
  await s.join();
  await flush();
  assert.equal(sent.length, 0);
  refuse = false;
  await clock.advance(ANSWER_WAIT_MS);
  assert.equal(sent.filter((x) => x.kind === 'offer').length, 1, 'sent at the deadline');
  await handlers.answer('m', answerTo(sent[0].sdp));
  assert.equal(FakePC.all[0].signalingState, 'stable');
  assert.equal(FakePC.all.length, 1);
  s.teardown('test');
  assert.deepEqual(clock.pending(), []);
});

test('an answer that cannot be applied leaves the deadline running: the offer goes out again', async () => {
  const { s, sent, handlers } = setup(['m']);
  const clock = fakeClock(s);
  await s.join();
  await flush();
  const offers = () => sent.filter((x) => x.kind === 'offer');
  await clock.advance(ANSWER_WAIT_MS - 100);
  const bad = answerTo(offers()[0].sdp);
  await assert.doesNotReject(handlers.answer('m', { ...bad, sdp: `${bad.sdp}x-unusable\r\n` }));
  assert.equal(FakePC.all[0].signalingState, 'have-local-offer');
  await clock.advance(ANSWER_WAIT_MS);
  assert.equal(offers().length, 2, 'sent again');
  await handlers.answer('m', answerTo(offers()[1].sdp));
  assert.equal(FakePC.all[0].signalingState, 'stable');
  s.teardown('test');
  assert.deepEqual(clock.pending(), []);
});

test('as master, an answer names the offer it answers', async () => {
  const { s, sent } = setup();
  await s.join();
  const offer = { type: 'offer', sdp: 'v=0\r\no=- 4611 7 IN IP4 127.0.0.1\r\na=fingerprint:sha-256 V\r\n' };
  await s.onOffer('v', offer);
  assert.equal(sent.find((x) => x.kind === 'answer').offer, '4611 7');
  s.teardown('test');
});

test('the answer deadline stops with the link and the session: no timer left behind', async () => {
  const { s, sent } = setup(['m', 'n']);
  const clock = fakeClock(s);
  await s.join();
  await flush();
  assert.equal(clock.pending().length, 3, 'the refresh and one answer deadline per offer');
  s.dropPeer('n');
  assert.equal(clock.pending().length, 2, 'a peer that left: its deadline cleared');
  await clock.advance(2 * ANSWER_WAIT_MS);
  assert.equal(sent.filter((x) => x.kind === 'offer' && x.to === 'n').length, 1, 'nothing more to a peer that left');
  assert.equal(s.peers.has('m'), false, 'the link to m, unanswered twice, is closed');
  assert.equal(clock.pending().length, 2, 'the refresh and the rebuild for m wait');
  s.teardown('test');
  assert.deepEqual(clock.pending(), [], 'teardown cleared every timer, a pending rebuild too');
  const before = sent.length;
  await clock.advance(10 * ANSWER_WAIT_MS);
  assert.equal(sent.length, before, 'and nothing is sent after it');
});

test('the answer deadline keeps within the peer\'s offer limit: a re-send waits until the window allows it', async () => {
  const { s, sent, handlers } = setupVideo(['m']);
  const clock = fakeClock(s);
  await s.join();
  await flush();
  const offers = () => sent.filter((x) => x.kind === 'offer');
  await handlers.answer('m', answerTo(offers()[0].sdp));
  // RENEGOTIATIONS_PER_WINDOW camera toggles: the last one's answer is lost.
  for (let i = 0; i < RENEGOTIATIONS_PER_WINDOW; i++) {
    await s.setVideo('camera', i % 2 ? null : fakeTrack());
    await flush();
    if (i < RENEGOTIATIONS_PER_WINDOW - 1) await handlers.answer('m', answerTo(offers().at(-1).sdp));
  }
  assert.equal(offers().length, OFFERS_PER_WINDOW, 'the peer\'s whole window used');
  await clock.advance(ANSWER_WAIT_MS);
  assert.equal(offers().length, OFFERS_PER_WINDOW, 'the deadline passed, but another offer now would be dropped by the peer');
  await clock.advance(10_000 - ANSWER_WAIT_MS + 50);
  assert.equal(offers().length, OFFERS_PER_WINDOW + 1, 'sent again once the oldest left the window');
  await handlers.answer('m', answerTo(offers().at(-1).sdp));
  assert.equal(FakePC.all[0].signalingState, 'stable');
  s.teardown('test');
  assert.deepEqual(clock.pending(), []);
});
