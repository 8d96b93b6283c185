// Signaling transports for the voice mesh.
//
// The web client never talks to a signaling service directly: it asks createTransport() for an
// object with one small interface, so that the self-hosted relay (signal messages over the app's
// own WebSocket, authorised by the grant's HMAC token) and Kinesis Video Streams (one
// SignalingClient per channel: MASTER on our own channel, VIEWER on each earlier participant's
// channel) are interchangeable. The grant's `credentials.kind` picks the implementation.
//
// Interface (every implementation):
//   kind                          "token" | "aws"
//   connect(): Promise<void>      ready to send and receive; logs "Signaling client connected"
//   updateGrant(grant)            new credentials / peers after a refresh (reconnects if needed)
//   sendOffer(toUserId, desc)     desc = {type:"offer", sdp}; we are VIEWER on toUserId's channel
//   sendAnswer(toUserId, desc)    desc = {type:"answer", sdp}; we are MASTER, toUserId is a viewer
//   sendCandidate(toUserId, cand) cand = RTCIceCandidateInit (candidate.toJSON())
//   onOffer(fn(fromUserId, desc)), onAnswer(fn(fromUserId, desc)),
//   onCandidate(fn(fromUserId, cand)), onError(fn(Error))   register handlers (one each)
//   close()                       stop receiving; idempotent
// Peers are always named by userId; mapping to KVS client ids is the transport's business.

// What a Kinesis Video Streams implementation needs (a later task): the grant already carries
// `self` (own channel: ARN, WSS/HTTPS endpoints, ICE servers, role MASTER), `peers` (earlier
// participants' channels, role VIEWER, with userId), `clientId` and AWS `credentials` (+ region).
// KVS messages name the sender only by its client id, so the master side needs the viewers'
// client ids mapped to user ids (e.g. a `clientId` on each participant of the room view).
// KVS signaling connections also close after 1 h / 10 min idle: updateGrant() must reconnect.

/** Largest serialized signal payload the relay accepts (TEAM protocol: 10 KB). */
export const MAX_PAYLOAD_BYTES = 10 * 1024;

/** An error the transport raises; `code` is the wire code when the server refused. */
export class SignalingError extends Error {
  constructor(message, code = 'SIGNALING', retryable = false) {
    super(message);
    this.name = 'SignalingError';
    this.code = code;
    this.retryable = retryable;
  }
}

/**
 * Picks the transport for a grant.
 * @param {object} grant  the getVoiceCredentials reply data (VoiceGrantView)
 * @param {object} opts   { app: AppConnection (request/onSignal), log: fn(msg) }
 */
export function createTransport(grant, opts) {
  const kind = grant && grant.credentials && grant.credentials.kind;
  switch (kind) {
    case 'token':
      return new RelayTransport(grant, opts);
    case 'aws':
      throw new SignalingError(
        'This server uses Amazon Kinesis Video Streams signaling, which this build of the web ' +
          'client does not include yet.',
        'UNSUPPORTED_TRANSPORT',
      );
    default:
      throw new SignalingError(`unknown credentials kind ${JSON.stringify(kind)}`, 'UNSUPPORTED_TRANSPORT');
  }
}

/** Handler slots shared by every implementation. */
class BaseTransport {
  constructor() {
    this.handlers = {
      offer: () => {},
      answer: () => {},
      candidate: () => {},
      error: () => {},
    };
  }
  onOffer(fn) { this.handlers.offer = fn; }
  onAnswer(fn) { this.handlers.answer = fn; }
  onCandidate(fn) { this.handlers.candidate = fn; }
  onError(fn) { this.handlers.error = fn; }

  /** Routes one received signal to its handler; a throwing handler must not kill the transport. */
  dispatch(from, kind, payload) {
    const fn = this.handlers[kind];
    if (!fn) {
      this.handlers.error(new SignalingError(`unknown signal kind ${kind} from ${from}`));
      return;
    }
    try {
      const r = fn(from, payload);
      if (r && typeof r.catch === 'function') r.catch((e) => this.handlers.error(e));
    } catch (e) {
      this.handlers.error(e);
    }
  }
}

/**
 * The self-hosted relay: `signal` requests over the app WebSocket, `signal` events back. The
 * server checks the token against the mesh plan, so this class only carries messages.
 */
export class RelayTransport extends BaseTransport {
  constructor(grant, { app, log }) {
    super();
    this.kind = 'token';
    this.app = app;
    this.log = log || (() => {});
    this.voiceRoomId = grant.voiceRoomId;
    this.token = grant.credentials.token;
    this.unsubscribe = null;
    this.closed = false;
  }

  async connect() {
    if (this.closed) throw new SignalingError('transport closed');
    if (this.unsubscribe) return;
    // Subscribing also delivers signals that arrived before we were ready (buffered by the app).
    this.unsubscribe = this.app.onSignal(this.voiceRoomId, (ev) => this.dispatch(ev.from, ev.kind, ev.payload));
    this.log('Signaling client connected (self-hosted relay)');
  }

  updateGrant(grant) {
    if (grant.voiceRoomId !== this.voiceRoomId) return;
    this.token = grant.credentials.token;
  }

  sendOffer(to, desc) { return this.send(to, 'offer', { type: desc.type, sdp: desc.sdp }); }
  sendAnswer(to, desc) { return this.send(to, 'answer', { type: desc.type, sdp: desc.sdp }); }
  sendCandidate(to, cand) { return this.send(to, 'candidate', cand); }

  async send(to, kind, payload) {
    if (this.closed) throw new SignalingError('transport closed');
    const size = new TextEncoder().encode(JSON.stringify(payload)).length;
    if (size > MAX_PAYLOAD_BYTES) {
      throw new SignalingError(`${kind} payload is ${size} bytes, over the ${MAX_PAYLOAD_BYTES}-byte limit`, 'TOO_LARGE');
    }
    try {
      await this.app.request('signal', { voiceRoomId: this.voiceRoomId, token: this.token, to, kind, payload });
    } catch (e) {
      throw new SignalingError(`${kind} to ${to} refused: ${e.message}`, e.code || 'SIGNALING', !!e.retryable);
    }
  }

  close() {
    this.closed = true;
    if (this.unsubscribe) this.unsubscribe();
    this.unsubscribe = null;
  }
}

/** Above this remaining lifetime, refresh a fixed margin before expiry; below, at a fraction. */
const LONG_LIFETIME_MS = 10 * 60 * 1000;
const REFRESH_MARGIN_MS = 5 * 60 * 1000;
const SHORT_LIFETIME_FRACTION = 0.8;
const MAX_LIFETIME_MS = 60 * 60 * 1000;

/**
 * How long to wait before asking for fresh voice credentials: 5 minutes before `expiresAt`, or at
 * 80 % of the remaining lifetime when that is 10 minutes or less. A lifetime that is not positive
 * (a clock skewed against the server's) is taken as the 1 h maximum rather than refreshing in a
 * tight loop.
 * @param {number} expiresAt  ms since epoch, from the grant
 * @param {number} now        ms since epoch
 */
export function refreshDelayMs(expiresAt, now) {
  let lifetime = expiresAt - now;
  if (!(lifetime > 0) || lifetime > MAX_LIFETIME_MS + REFRESH_MARGIN_MS) lifetime = MAX_LIFETIME_MS;
  const delay = lifetime > LONG_LIFETIME_MS ? lifetime - REFRESH_MARGIN_MS : lifetime * SHORT_LIFETIME_FRACTION;
  return Math.max(500, Math.round(delay));
}
