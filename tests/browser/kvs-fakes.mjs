// Test doubles for the Kinesis Video Streams transport: a fake of the SDK's SignalingClient that
// checks its configuration the way amazon-kinesis-video-streams-webrtc 2.9.0 does and records what
// is sent, a manual clock for schedule/cancel/now, and grants shaped like the Lambda's
// getVoiceCredentials reply (docs/protocol.md, VoiceGrantView with `credentials.kind: "aws"`).

/** Channel ARNs in the shape KVS gives them (channel/<name>/<creation ms>). */
export const arnOf = (user) => `arn:aws:kinesisvideo:eu-west-1:123456789012:channel/voice-${user}/1700000000001`;
export const wssOf = (user) => `wss://v-${user}.kinesisvideo.eu-west-1.amazonaws.com`;
/** Client ids as voice-domain encodes API Gateway connection ids (`=` is not allowed by KVS). */
export const clientIdOf = (user) => `${user}-L0SM9cOFvHcCIhw_`;

/**
 * A grant for `user`, who joined after `earlier` (viewer on their channels) and before `later`
 * (they view `user`'s channel), in join order earlier, user, later.
 */
export function awsGrant({ user = 'carol', earlier = ['alice', 'bob'], later = [], keyId = 'ASIA-1', region = 'eu-west-1', expiresAt = 1_700_003_600_000, voiceRoomId = 'v1' } = {}) {
  const access = (u, role) => ({
    channelArn: arnOf(u),
    channelName: `voice-${u}`,
    role,
    wssEndpoint: wssOf(u),
    httpsEndpoint: `https://r-${u}.kinesisvideo.eu-west-1.amazonaws.com`,
    iceServers: [{ urls: ['stun:stun.kinesisvideo.eu-west-1.amazonaws.com:443'] }],
  });
  const everyone = [...earlier, user, ...later];
  return {
    voiceRoomId,
    chatRoomId: 'room-1',
    userId: user,
    clientId: clientIdOf(user),
    signalingChannelARN: arnOf(user),
    role: 'MASTER',
    self: access(user, 'MASTER'),
    peers: earlier.map((u) => ({ userId: u, ...access(u, 'VIEWER') })),
    credentials: { kind: 'aws', accessKeyId: keyId, secretAccessKey: `secret-${keyId}`, sessionToken: `token-${keyId}`, region },
    expiresAt,
    newlyJoined: true,
    room: roomView(everyone, voiceRoomId),
  };
}

/** A VoiceRoomView with these participants, in join order. */
export function roomView(users, voiceRoomId = 'v1') {
  return {
    voiceRoomId,
    chatRoomId: 'room-1',
    status: 'active',
    masterUserId: users[0],
    participants: users.map((u, i) => ({ userId: u, muted: false, joinedAt: 1_700_000_000_000 + i, channelArn: arnOf(u), clientId: clientIdOf(u) })),
    capacity: 10,
  };
}

/** The SDK's validateValueNonNil / validateValueNil. */
function nonNil(v, name) {
  if (v === null) throw new Error(`${name} cannot be null`);
  if (v === undefined) throw new Error(`${name} cannot be undefined`);
  if (v === '') throw new Error(`${name} cannot be empty`);
}
function nil(v, name) {
  if (v !== null && v !== undefined && v !== '') throw new Error(`${name} should be null`);
}

/** A fresh fake SDK: `SignalingClient` to inject, `clients` created so far (in order). */
export function fakeKvs() {
  const clients = [];
  class SignalingClient {
    constructor(config) {
      // As the SDK's constructor checks them.
      nonNil(config, 'SignalingClientConfig');
      nonNil(config.role, 'role');
      if (config.role === 'VIEWER') nonNil(config.clientId, 'clientId');
      else nil(config.clientId, 'clientId');
      nonNil(config.channelARN, 'channelARN');
      nonNil(config.region, 'region');
      nonNil(config.channelEndpoint, 'channelEndpoint');
      nonNil(config.credentials, 'credentials');
      this.config = { ...config };
      this.readyState = 'CLOSED';
      this.opened = false;
      this.closedByClient = false;
      this.handlers = new Map();
      this.sent = [];
      clients.push(this);
    }

    on(event, fn) {
      if (!this.handlers.has(event)) this.handlers.set(event, []);
      this.handlers.get(event).push(fn);
    }

    emit(event, ...args) {
      for (const fn of this.handlers.get(event) || []) fn(...args);
    }

    open() {
      if (this.readyState !== 'CLOSED') throw new Error('Client is already open, opening, or closing');
      this.readyState = 'CONNECTING';
    }

    close() {
      if (this.readyState === 'CLOSED') return;
      this.closedByClient = true;
      this.readyState = 'CLOSING';
      // The SDK closes its WebSocket; the browser reports the close later.
      queueMicrotask(() => {
        this.readyState = 'CLOSED';
        this.emit('close');
      });
    }

    sendSdpOffer(desc, recipientClientId) {
      this.send('offer', desc, recipientClientId);
    }

    sendSdpAnswer(desc, recipientClientId) {
      this.send('answer', desc, recipientClientId);
    }

    sendIceCandidate(cand, recipientClientId) {
      this.send('candidate', cand, recipientClientId);
    }

    send(kind, payload, recipientClientId) {
      if (this.readyState !== 'OPEN') throw new Error('Could not send message because the connection to the signaling service is not open.');
      if (this.config.role === 'VIEWER' && recipientClientId) {
        throw new Error('Unexpected recipient client id. As the VIEWER, messages must not be sent with a recipient client id.');
      }
      // The SDK serialises the payload (base64 of its JSON).
      this.sent.push({ kind, payload: JSON.parse(JSON.stringify(payload)), recipientClientId });
    }

    // --- what the service does (test drivers) -------------------------------------------------

    /** The WebSocket opened. */
    accept() {
      this.readyState = 'OPEN';
      this.opened = true;
      this.emit('open');
    }

    /** The connection failed: error, then close (as a browser WebSocket reports it). */
    refuse(message = 'WebSocket connection failed') {
      this.emit('error', new Error(message));
      this.readyState = 'CLOSED';
      this.emit('close');
    }

    /** The service closed an open connection (idle, 1 h cap, replaced). */
    drop() {
      this.readyState = 'CLOSED';
      this.emit('close');
    }

    /** A message arrived; `from` is the sender's client id (viewers' messages to a master). */
    receive(kind, payload, from) {
      const event = { offer: 'sdpOffer', answer: 'sdpAnswer', candidate: 'iceCandidate' }[kind];
      this.emit(event, payload, from);
    }
  }

  return {
    SignalingClient,
    clients,
    /** Every client made for a channel (by user whose channel it is), oldest first. */
    on: (user) => clients.filter((c) => c.config.channelARN === arnOf(user)),
    /** The newest client for that channel. */
    latest: (user) => clients.filter((c) => c.config.channelARN === arnOf(user)).at(-1),
    live: () => clients.filter((c) => c.readyState !== 'CLOSED' && !c.closedByClient),
  };
}

/** A manual clock: timers run only in advance(), in due order. */
export function fakeClock(start = 1_700_000_000_000) {
  let now = start;
  let seq = 0;
  const timers = new Map();
  const clock = {
    now: () => now,
    schedule: (fn, ms) => {
      seq += 1;
      timers.set(seq, { fn, at: now + ms, ms });
      return seq;
    },
    cancel: (id) => {
      timers.delete(id);
    },
    /** Delays (from now) of the timers still pending, ascending. */
    pending: () => [...timers.values()].map((t) => t.at - now).sort((a, b) => a - b),
    /** The delays requested, in order, for timers created since the last call. */
    async advance(ms) {
      const end = now + ms;
      for (;;) {
        let next = null;
        for (const [id, t] of timers) {
          if (t.at <= end && (!next || t.at < next.t.at || (t.at === next.t.at && id < next.id))) next = { id, t };
        }
        if (!next) break;
        timers.delete(next.id);
        now = next.t.at;
        next.t.fn();
        await flush();
      }
      now = end;
      await flush();
    },
  };
  return clock;
}

/** Lets pending promise callbacks and microtasks run. */
export const flush = () => new Promise((r) => setImmediate(r));
