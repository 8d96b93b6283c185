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

/**
 * KVS signaling limits the fake enforces, from "Amazon Kinesis Video Streams with WebRTC service
 * quotas" (https://docs.aws.amazon.com/kinesisvideostreams-webrtc-dg/latest/devguide/kvswebrtc-limits.html),
 * "Signaling API service quotas": SendSDPOffer / SendSDPAnswer 5 TPS and SendICECandidate 20 TPS
 * per WebSocket connection [h], message payload 10k [h]; ConnectAsMaster 3 TPS per channel, 1
 * concurrent master [h] (a new master connection replaces the old one); ConnectAsViewer 3 TPS per
 * channel, 10 concurrent viewers [s]; connection duration 1 hour [h]; idle timeout 10 minutes [h].
 */
/** Length of the base64 text of `n` bytes (padded, as btoa gives it). */
export const base64Length = (n) => 4 * Math.ceil(n / 3);

export const KVS_LIMITS = {
  sdpPerSecond: 5,
  icePerSecond: 20,
  payloadBytes: 10 * 1024,
  connectPerSecond: 3,
  viewersPerChannel: 10,
  maxConnectionMs: 60 * 60 * 1000,
  idleMs: 10 * 60 * 1000,
};

/**
 * A fresh fake SDK: `SignalingClient` to inject, `clients` created so far (in order). `now` is the
 * clock the service's limits are measured with (a fakeClock's `now` in tests).
 */
export function fakeKvs({ now = () => Date.now() } = {}) {
  const clients = [];
  const connects = new Map(); // channel ARN -> accept times (ConnectAs* rate)
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
      this.dropped = []; // messages the service refused (over a rate or size limit)
      this.sentAt = { sdp: [], ice: [] };
      this.sentTimes = []; // {kind, at} of every delivered message, for rate checks over any window
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
      const msg = { kind, payload: JSON.parse(JSON.stringify(payload)), recipientClientId };
      // The service's per-connection limits (KVS_LIMITS): over them the message is not delivered
      // and a status response names the error.
      const t = now();
      this.lastActivity = t;
      const times = this.sentAt[kind === 'candidate' ? 'ice' : 'sdp'];
      while (times.length && t - times[0] >= 1000) times.shift();
      const limit = kind === 'candidate' ? KVS_LIMITS.icePerSecond : KVS_LIMITS.sdpPerSecond;
      // The limit is on messagePayload, the base64 text the SDK sends (SendSdpOffer reference:
      // "Maximum length of 10K"), not on the JSON it encodes.
      const size = base64Length(new TextEncoder().encode(JSON.stringify(payload)).length);
      if (times.length >= limit || size > KVS_LIMITS.payloadBytes) {
        this.dropped.push(msg);
        const errorType = size > KVS_LIMITS.payloadBytes ? 'InvalidArgumentException' : 'ClientLimitExceededException';
        queueMicrotask(() => this.emit('statusResponse', { statusCode: '400', errorType, description: `${kind} refused` }));
        return;
      }
      times.push(t);
      this.sent.push(msg);
      this.sentTimes.push({ kind, at: t });
    }

    // --- what the service does (test drivers) -------------------------------------------------

    /**
     * The service answers the connection attempt: refused over the ConnectAs* rate (3/s per
     * channel) or the 11th viewer; a new master replaces the open one (which is closed).
     */
    accept() {
      const t = now();
      const arn = this.config.channelARN;
      const times = (connects.get(arn) || []).filter((x) => t - x < 1000);
      connects.set(arn, times);
      const open = clients.filter((c) => c !== this && c.config.channelARN === arn && c.readyState === 'OPEN');
      if (times.length >= KVS_LIMITS.connectPerSecond) {
        this.refuse('ClientLimitExceededException: ConnectAs rate exceeded');
        return;
      }
      if (this.config.role === 'VIEWER' && open.filter((c) => c.config.role === 'VIEWER').length >= KVS_LIMITS.viewersPerChannel) {
        this.refuse('too many viewers on this channel');
        return;
      }
      times.push(t);
      if (this.config.role === 'MASTER') for (const old of open.filter((c) => c.config.role === 'MASTER')) old.drop();
      this.readyState = 'OPEN';
      this.opened = true;
      this.openedAt = t;
      this.lastActivity = t;
      this.emit('open');
    }

    /** The service's timers: closes a connection open for 1 h, or idle for 10 min. */
    expireIfDue() {
      const t = now();
      if (this.readyState === 'OPEN' && (t - this.openedAt >= KVS_LIMITS.maxConnectionMs || t - this.lastActivity >= KVS_LIMITS.idleMs)) this.drop();
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
      this.lastActivity = now();
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
