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
//   updateRoom(voiceRoomView)     the room changed (who is in it, their client ids)
//   learnClientId(userId, clientId)  from a participantJoined/participantResumed event: who
//                                 will send from that KVS client id (no room lookup needed)
//   sendOffer(toUserId, desc)     desc = {type:"offer", sdp}; we are VIEWER on toUserId's channel
//   sendAnswer(toUserId, desc)    desc = {type:"answer", sdp, offer?}; we are MASTER, toUserId is a
//                                 viewer; `offer` (voice.js offerId) names the offer it answers and
//                                 reaches the viewer's onAnswer with the description
//   sendCandidate(toUserId, cand) cand = RTCIceCandidateInit (candidate.toJSON())
//   onOffer(fn(fromUserId, desc)), onAnswer(fn(fromUserId, desc)),
//   onCandidate(fn(fromUserId, cand)), onError(fn(Error))   register handlers (one each)
//   close()                       stop receiving; idempotent
//   iceServersFor(userId): Promise<iceServers[]>
//                                 FRESH ICE servers (STUN + TURN with current credentials) for a
//                                 new RTCPeerConnection or an ICE restart with that peer. Call it
//                                 every time, never reuse a grant's list: KVS TURN credentials
//                                 live 300 s. KVS: GetIceServerConfig on OUR OWN channel for
//                                 every link (as its master), signed with the grant's
//                                 credentials, cached for 240 s (at most 80 % of
//                                 the answer's Ttl), one TURN entry with at most 2
//                                 URIs (limitTurn), so a full room stays far below KVS's 5 TPS
//                                 and 50 TURN allocations per channel; a throttled call is
//                                 asked again (ICE_RETRY_DELAYS_MS), then, or on another
//                                 failure, the grant's list. Relay: the grant's.
// Peers are always named by userId; mapping to KVS client ids is the transport's business.
// KVS sends are paced per WebSocket (FIFO, in order, evenly spaced): 4 SDP offers/answers and 15
// ICE candidates per 1.1 s, with margin below KVS's hard per-connection limits (5 and 20 per
// second, counted on arrival); beyond them KVS drops messages. An offer/answer whose base64
// messagePayload would exceed KVS's 10K is refused here (TOO_LARGE) instead of being dropped there.
//
// Docs: docs/web-client.md (modes, this interface, what is tested how).

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
 * Picks the transport for a grant: `token` credentials → the self-hosted relay, `aws`
 * credentials → Kinesis Video Streams.
 * @param {object} grant  the getVoiceCredentials reply data (VoiceGrantView)
 * @param {object} opts   { app: AppConnection (request/onSignal), log: fn(msg) } for both, and for
 *   KVS also (all optional): region (fallback when the credentials carry none), fetchRoom
 *   (async () => VoiceRoomView|null, asked when an offer comes from an unknown client id),
 *   SignalingClient (a class with the SDK's interface; tests inject a fake, else the vendored SDK
 *   is loaded on first connect()), loadSdk, schedule/cancel (timers), now (clock), openTimeoutMs,
 *   stableOpenMs, backoffMs ([base, max]).
 */
/** An answer as sent: type and SDP, and which offer it answers when the page said so. */
function answerPayload(desc) {
  const out = { type: desc.type, sdp: desc.sdp };
  if (desc.offer) out.offer = String(desc.offer);
  return out;
}

export function createTransport(grant, opts = {}) {
  const kind = grant && grant.credentials && grant.credentials.kind;
  switch (kind) {
    case 'token':
      return new RelayTransport(grant, opts);
    case 'aws':
      return new KvsTransport(grant, opts);
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
  /** Room changes matter only where peers are named by something else than the user id. */
  updateRoom() {}

  learnClientId() {}

  /** The grant's ICE servers for the link with `userId` (theirs if we view their channel). */
  grantIceServers(userId) {
    const g = this.grant || {};
    const peer = (g.peers || []).find((p) => p.userId === userId);
    return ((peer || g.self || {}).iceServers) || [];
  }

  /** Fresh ICE servers for a new peer connection / ICE restart with `userId` (see the header). */
  async iceServersFor(userId) {
    return this.grantIceServers(userId);
  }

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
    this.grant = grant;
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
    this.grant = grant;
  }

  sendOffer(to, desc) { return this.send(to, 'offer', { type: desc.type, sdp: desc.sdp }); }
  sendAnswer(to, desc) { return this.send(to, 'answer', answerPayload(desc)); }
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

// ---------------------------------------------------------------------------------------------
// Kinesis Video Streams

/** Where the vendored SDK bundle lives, next to this module (scripts/vendor-kvs puts it there). */
export const KVS_SDK_URL = new URL('./vendor/kvs-webrtc.min.js', import.meta.url).href;

let sdkLoading = null;

/**
 * Loads the vendored KVS WebRTC SDK once, by adding a `<script src>` to the page: the bundle is a
 * classic script that defines `window.KVSWebRTC`, and the server's CSP (`script-src 'self'`)
 * allows same-origin script files but nothing inline. Only the KVS transport calls this, so a
 * self-hosted page never downloads it.
 * @returns {Promise<object>} the SDK namespace (`SignalingClient`, `Role`, `VERSION`, ...)
 */
export function loadKvsSdk({ doc = globalThis.document, win = globalThis.window, src = KVS_SDK_URL, timeoutMs = 20000 } = {}) {
  if (win && win.KVSWebRTC && win.KVSWebRTC.SignalingClient) return Promise.resolve(win.KVSWebRTC);
  if (sdkLoading) return sdkLoading;
  const loading = new Promise((resolve, reject) => {
    if (!doc || !win) {
      reject(new SignalingError('the Kinesis Video Streams SDK can only be loaded in a browser page', 'SDK_UNAVAILABLE'));
      return;
    }
    const el = doc.createElement('script');
    let timer = null;
    const fail = (why) => {
      clearTimeout(timer);
      if (el.remove) el.remove();
      reject(new SignalingError(`could not load the Kinesis Video Streams SDK from ${src}: ${why}`, 'SDK_UNAVAILABLE', true));
    };
    timer = setTimeout(() => fail(`no answer within ${timeoutMs / 1000} s`), timeoutMs);
    el.addEventListener('load', () => {
      clearTimeout(timer);
      if (win.KVSWebRTC && win.KVSWebRTC.SignalingClient) resolve(win.KVSWebRTC);
      else fail('the script did not define window.KVSWebRTC');
    });
    el.addEventListener('error', () => fail('the request failed'));
    el.src = src;
    el.async = true;
    doc.head.append(el);
  });
  sdkLoading = loading;
  // A failed load is not cached: the next connect() tries again.
  loading.catch(() => {
    if (sdkLoading === loading) sdkLoading = null;
  });
  return loading;
}

/**
 * The channels a grant says to connect to, following the mesh rule: our own channel (`self`) as
 * MASTER, each earlier participant's channel (`peers`) as VIEWER.
 * @returns {{key, userId, role, channelArn, channelName, endpoint}[]}
 */
export function channelPlan(grant) {
  const plan = [
    {
      key: 'self',
      userId: grant.userId,
      role: 'MASTER',
      channelArn: grant.self.channelArn,
      channelName: grant.self.channelName || grant.self.channelArn,
      endpoint: grant.self.wssEndpoint,
    },
  ];
  for (const p of grant.peers || []) {
    plan.push({
      key: `peer:${p.userId}`,
      userId: p.userId,
      role: 'VIEWER',
      channelArn: p.channelArn,
      channelName: p.channelName || p.channelArn,
      endpoint: p.wssEndpoint,
    });
  }
  return plan;
}

const KVS_OPEN_TIMEOUT_MS = 15000;
/** Reconnect delays: at once after an open connection closed, then 1 s, 2 s, 4 s ... up to 30 s. */
const KVS_BACKOFF_MS = [1000, 30000];
/**
 * A connection that closes sooner than this after opening counts as a failed attempt, so that a
 * channel whose connection is replaced again and again (two tabs mastering one channel, a
 * connection refused right after the upgrade) backs off instead of reconnecting in a tight loop.
 */
const KVS_STABLE_OPEN_MS = 10000;
const UNKNOWN_CLIENT_QUEUE_MAX = 100;
/**
 * KVS quotas page: SendSDPOffer / SendSDPAnswer 5 TPS, SendICECandidate 20 TPS per WebSocket
 * connection [h], counted by the service on arrival. We send below them, 4 SDP and 15 ICE per
 * PACING_WINDOW_MS (a second plus a margin), and evenly spaced (one every PACING_WINDOW_MS /
 * rate, 275 ms and 73 ms) rather than in bursts: pacing bursts at exactly 20 per 1.1 s was seen
 * to arrive as 21-30 in one second (network and event-loop jitter bunch a burst with the next
 * one). Evenly spaced, any second holds at most 14 candidates as sent, and arrival jitter of up
 * to ~450 ms still keeps a second under 20.
 */
export const KVS_SDP_PER_SECOND = 4;
export const KVS_ICE_PER_SECOND = 15;
export const PACING_WINDOW_MS = 1100;
/**
 * KVS's limit on messagePayload, the base64 text of the JSON the SDK sends
 * (`btoa(JSON.stringify(desc))`): SendSdpOffer / SendSdpAnswer "Maximum length of 10K". Read
 * as 10,000 characters (the stricter reading of "10K"), so JSON of at most 7,500 bytes.
 */
export const KVS_MAX_MESSAGE_PAYLOAD = 10_000;

/** Length of the base64 text of `bytes` bytes (padded, as btoa gives it). */
export function base64Length(bytes) {
  return 4 * Math.ceil(bytes / 3);
}
const PACING_QUEUE_MAX = 200;
/** KVS TURN credentials live 300 s; reuse a GetIceServerConfig answer for at most 240 s. */
export const ICE_CACHE_MS = 240 * 1000;
/**
 * ...and for at most this fraction of the lifetime the answer itself gives (its shortest `Ttl`),
 * so that credentials that live less than KVS's usual 300 s are never handed to a new peer
 * connection after they expired (0.8 × 300 s = ICE_CACHE_MS).
 */
export const ICE_CACHE_TTL_FRACTION = 0.8;

/**
 * Waits before asking GetIceServerConfig again after a refusal worth retrying (KVS's throttle,
 * ClientLimitExceededException, or a 5xx): each a random 50-100 % of these, about 3.5-6.8 s in
 * all, then the grant's list. KVS throttles per second (5 TPS per channel for
 * GetIceServerConfig) and in bursts; the grant's list may hold TURN credentials that have
 * expired (they live 300 s), so falling back at the first refusal would give a new peer
 * connection expired TURN credentials.
 */
export const ICE_RETRY_DELAYS_MS = [250, 500, 1000, 2000, 3000];

/** How long a GetIceServerConfig answer whose shortest Ttl is `ttlSeconds` may be reused. */
export function iceCacheMs(ttlSeconds) {
  if (!(Number.isFinite(ttlSeconds) && ttlSeconds > 0)) return ICE_CACHE_MS;
  return Math.min(ICE_CACHE_MS, Math.floor(ttlSeconds * 1000 * ICE_CACHE_TTL_FRACTION));
}

/**
 * TURN URIs one RTCPeerConnection may use. KVS allows 50 TURN allocations per signaling channel
 * (quotas page), and a browser makes one allocation per TURN URI per peer connection (per local
 * network it gathers on). Every link of ours uses OUR OWN channel's TURN servers, so our channel
 * carries our links only: 9 in a full room of 10, × 2 URIs = 18 allocations, 36 if every link
 * is restarted or rebuilt at once (old and new allocations overlapping), within 50. KVS answers
 * with 2 servers × 3 URIs: all six on every link would be 54 for 9 links; with links on the
 * peers' channels (as before), the first joiner's channel carried 18 links: 108.
 * docs/deploy-aws.md, "TURN allocations", has the arithmetic.
 */
export const TURN_URIS_PER_PEER_CONNECTION = 2;

/**
 * The ICE servers one peer connection uses: every STUN entry (free, no allocation) and ONE TURN
 * entry with at most TURN_URIS_PER_PEER_CONNECTION URIs: its first UDP one (`turn:` before
 * `turns:`), and its first TCP one (TLS on 443 passes most firewalls). See
 * TURN_URIS_PER_PEER_CONNECTION for why.
 * @param {{urls: string|string[], username?: string, credential?: string}[]} list
 */
export function limitTurn(list) {
  const urlsOf = (s) => [].concat((s && s.urls) || []).map(String);
  const isTurn = (u) => /^turns?:/i.test(u);
  const out = [];
  let turnTaken = false;
  for (const s of list || []) {
    const urls = urlsOf(s);
    const stun = urls.filter((u) => !isTurn(u));
    const turn = urls.filter(isTurn);
    if (stun.length) out.push({ ...s, urls: stun });
    if (!turn.length || turnTaken) continue;
    turnTaken = true;
    const transport = (u) => (/[?&]transport=tcp/i.test(u) ? 'tcp' : 'udp');
    const rank = (u) => (/^turn:/i.test(u) ? 0 : 1);
    const udp = turn.filter((u) => transport(u) === 'udp').sort((a, b) => rank(a) - rank(b))[0];
    const tcp = turn.filter((u) => transport(u) === 'tcp').sort((a, b) => rank(b) - rank(a))[0];
    const chosen = [udp, tcp].filter(Boolean).slice(0, TURN_URIS_PER_PEER_CONNECTION);
    out.push({ ...s, urls: chosen });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// GetIceServerConfig from the page (SigV4 with SubtleCrypto; the vendored SDK only presigns URLs)

const enc = new TextEncoder();
const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, '0')).join('');
async function sha256Hex(subtle, text) {
  return hex(await subtle.digest('SHA-256', enc.encode(text)));
}
async function hmac(subtle, key, text) {
  const k = await subtle.importKey('raw', typeof key === 'string' ? enc.encode(key) : key, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign']);
  return subtle.sign('HMAC', k, enc.encode(text));
}

/**
 * POST {endpoint}/v1/get-ice-server-config, signed with AWS Signature Version 4 (service
 * `kinesisvideo`), and returns RTCIceServer-shaped entries ({urls, username, credential}).
 * @param {{fetch, endpoint, channelArn, clientId, region, credentials, now, subtle}} a
 */
export async function fetchIceServers(a) {
  return (await fetchIceServerConfig(a)).servers;
}

/**
 * fetchIceServers, with how long the answer's credentials live: `{servers, ttlSeconds}`, the
 * shortest `Ttl` of its entries (null when none says).
 */
export async function fetchIceServerConfig({ fetch, endpoint, channelArn, clientId, region, credentials, now, subtle }) {
  if (!subtle) throw new SignalingError('this browser has no WebCrypto (a secure context is needed)', 'ICE_SERVERS');
  const url = new URL('/v1/get-ice-server-config', endpoint);
  const body = JSON.stringify(clientId ? { ChannelARN: channelArn, ClientId: clientId, Service: 'TURN' } : { ChannelARN: channelArn, Service: 'TURN' });
  const amzDate = new Date(now).toISOString().replace(/[:-]|\.\d{3}/g, '');
  const day = amzDate.slice(0, 8);
  const headers = { 'content-type': 'application/json', host: url.host, 'x-amz-date': amzDate };
  if (credentials.sessionToken) headers['x-amz-security-token'] = credentials.sessionToken;
  const names = Object.keys(headers).sort();
  const canonical = ['POST', url.pathname, '', ...names.map((n) => `${n}:${headers[n]}`), '', names.join(';'), await sha256Hex(subtle, body)].join('\n');
  const scope = `${day}/${region}/kinesisvideo/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, await sha256Hex(subtle, canonical)].join('\n');
  let key = await hmac(subtle, `AWS4${credentials.secretAccessKey}`, day);
  for (const part of [region, 'kinesisvideo', 'aws4_request']) key = await hmac(subtle, key, part);
  const signature = hex(await hmac(subtle, key, toSign));
  const send = { ...headers };
  delete send.host; // the browser sets it
  send.authorization = `AWS4-HMAC-SHA256 Credential=${credentials.accessKeyId}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  const res = await fetch(url.href, { method: 'POST', headers: send, body });
  const text = await res.text();
  if (!res.ok) {
    let type = `HTTP ${res.status}`;
    try {
      type = JSON.parse(text).__type || type;
    } catch {
      /* not JSON */
    }
    // Worth asking again: KVS's throttle (HTTP 400 ClientLimitExceededException, as its API
    // reference lists it) and server errors; not a refused signature or a bad argument.
    throw new SignalingError(`GetIceServerConfig refused: ${type}`, 'ICE_SERVERS', type === 'ClientLimitExceededException' || res.status >= 500);
  }
  const out = JSON.parse(text);
  const list = out.IceServerList || [];
  const ttls = list.map((s) => Number(s.Ttl)).filter((t) => Number.isFinite(t) && t > 0);
  return {
    servers: list.map((s) => ({ urls: s.Uris || [], username: s.Username, credential: s.Password })),
    ttlSeconds: ttls.length ? Math.min(...ttls) : null,
  };
}
/** KVS ClientId: 1-256 of [a-zA-Z0-9_.-], not starting with AWS_ (reserved). */
const KVS_CLIENT_ID_RE = /^[a-zA-Z0-9_.-]{1,256}$/;

/** Whether `id` is a ClientId Kinesis Video Streams accepts for a viewer. */
export function isValidKvsClientId(id) {
  return typeof id === 'string' && KVS_CLIENT_ID_RE.test(id) && !id.startsWith('AWS_');
}

/** Settles once; the rejection is marked handled (nobody may be waiting on it). */
function deferred() {
  let resolve;
  let reject;
  const promise = new Promise((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {});
  let settled = false;
  return {
    promise,
    resolve: (v) => {
      if (!settled) (settled = true), resolve(v);
    },
    reject: (e) => {
      if (!settled) (settled = true), reject(e);
    },
  };
}

/**
 * Kinesis Video Streams signaling: one SDK `SignalingClient` per channel of the grant's plan,
 * MASTER on our own channel and VIEWER (with the grant's `clientId`) on each earlier participant's.
 *
 * - Offers go only to peers, on their channel as viewer; answers only as master, to the viewer's
 *   client id; candidates follow the role we have on that link.
 * - KVS names a viewer only by its client id: an offer's `remoteClientId` is mapped to a user with
 *   the room's participants' `clientId` (grant.room, updateRoom(), or `fetchRoom()` when unknown).
 * - A refreshed grant (`updateGrant`) reconnects every channel with the new credentials, make
 *   before break: the new client opens, then the old one is closed (KVS replaces a connection
 *   with the same role and client id anyway).
 * - KVS closes signaling connections after 10 min idle and 1 h at most: a closed client is
 *   reconnected (at once, then with backoff) until close(), unless its peer left the room. A
 *   connection that closes within `stableOpenMs` of opening counts as a failure, so a channel
 *   whose connection keeps being replaced backs off instead of looping.
 * - Sends wait (up to `openTimeoutMs`) for the channel's client to be open.
 */
export class KvsTransport extends BaseTransport {
  constructor(grant, opts = {}) {
    super();
    this.kind = 'aws';
    this.log = opts.log || (() => {});
    this.fallbackRegion = opts.region || null;
    this.fetchRoom = opts.fetchRoom || null;
    this.SignalingClient = opts.SignalingClient || null;
    this.loadSdk = opts.loadSdk || (() => loadKvsSdk());
    this.schedule = opts.schedule || ((fn, ms) => setTimeout(fn, ms));
    this.cancel = opts.cancel || ((t) => clearTimeout(t));
    this.now = opts.now || (() => Date.now());
    this.openTimeoutMs = opts.openTimeoutMs ?? KVS_OPEN_TIMEOUT_MS;
    this.stableOpenMs = opts.stableOpenMs ?? KVS_STABLE_OPEN_MS;
    [this.backoffBaseMs, this.backoffMaxMs] = opts.backoffMs || KVS_BACKOFF_MS;
    this.voiceRoomId = grant.voiceRoomId;
    this.grant = grant;
    this.grantSeq = 1;
    this.channels = new Map(); // plan key -> channel state
    this.userByClientId = new Map(); // from the room's participants: who sends from a client id
    this.clientIdByUser = new Map(); // viewers that offered on our channel -> their client id
    this.linkRole = new Map(); // userId -> our role on that link, from what was signalled
    this.unknown = new Map(); // client id -> messages waiting for fetchRoom()
    this.lookup = null;
    this.connected = false;
    this.closed = false;
    this.fetch = opts.fetch || (typeof globalThis.fetch === 'function' ? globalThis.fetch.bind(globalThis) : null);
    this.subtle = opts.subtle || (globalThis.crypto && globalThis.crypto.subtle) || null;
    this.iceCache = new Map(); // channel ARN -> { at, servers, grantSeq, keepMs }
    this.iceFetching = new Map(); // channel ARN -> { grantSeq, promise }: the GetIceServerConfig in flight
    this.rand = opts.rand || Math.random;
    this.rememberRoom(grant.room);
  }

  region() {
    return (this.grant.credentials && this.grant.credentials.region) || this.fallbackRegion;
  }

  async connect() {
    if (this.closed) throw new SignalingError('transport closed');
    if (this.connected) return;
    if (!this.SignalingClient) {
      const sdk = await this.loadSdk();
      this.SignalingClient = sdk.SignalingClient;
      this.log(`Kinesis Video Streams SDK ${sdk.VERSION || ''} loaded`.replace('  ', ' '));
    }
    if (this.closed) throw new SignalingError('transport closed');
    if (!this.region()) throw new SignalingError('the voice credentials name no AWS region (and config.json none either)', 'BAD_GRANT');
    if ((this.grant.peers || []).length && !isValidKvsClientId(this.grant.clientId)) {
      throw new SignalingError(`the voice credentials carry no valid KVS client id (${JSON.stringify(this.grant.clientId)}), which a viewer needs`, 'BAD_GRANT');
    }
    this.connected = true;
    for (const spec of channelPlan(this.grant)) this.addChannel(spec);
    const own = this.channels.get('self');
    const firsts = [...this.channels.values()].map((ch) => ch.first.promise);
    const [ownResult] = await Promise.allSettled(firsts);
    if (this.closed) throw new SignalingError('transport closed');
    if (ownResult.status === 'rejected') {
      const why = ownResult.reason && ownResult.reason.message;
      this.close();
      throw new SignalingError(`could not connect to our own signaling channel ${own.channelName}: ${why}`, 'SIGNALING_UNAVAILABLE', true);
    }
  }

  // --- channels and their clients -------------------------------------------------------

  addChannel(spec) {
    // failures: consecutive failed attempts (or connections that closed right after opening).
    const ch = { ...spec, current: null, next: null, failures: 0, retryTimer: null, waiters: [], gone: false, first: deferred() };
    this.channels.set(spec.key, ch);
    this.startClient(ch, 'current');
    return ch;
  }

  /**
   * One connection attempt: a new SDK client with the grant's current credentials, put in the
   * channel's `slot` ('current', or 'next' while an open client is being replaced) before it
   * opens, so that a failure, even a synchronous one, finds it there.
   */
  startClient(ch, slot) {
    const creds = this.grant.credentials || {};
    const config = {
      channelARN: ch.channelArn,
      channelEndpoint: ch.endpoint,
      role: ch.role,
      region: this.region(),
      credentials: { accessKeyId: creds.accessKeyId, secretAccessKey: creds.secretAccessKey, sessionToken: creds.sessionToken },
      systemClockOffset: 0,
    };
    if (ch.role === 'VIEWER') config.clientId = this.grant.clientId;
    const att = { client: null, grantSeq: this.grantSeq, opened: false, openedAt: 0, failuresBefore: 0, failed: false, retired: false, timer: null };
    ch[slot] = att;
    try {
      att.client = new this.SignalingClient(config);
    } catch (e) {
      // Invalid configuration (e.g. a grant without an endpoint): retrying will not help until
      // a new grant arrives, but the backoff keeps that cheap.
      this.attemptFailed(ch, att, e);
      return;
    }
    const c = att.client;
    c.on('open', () => this.onClientOpen(ch, att));
    c.on('close', () => this.onClientClose(ch, att));
    c.on('error', (e) => this.onClientError(ch, att, e));
    c.on('sdpOffer', (desc, from) => this.onMessage(ch, att, 'offer', desc, from));
    c.on('sdpAnswer', (desc, from) => this.onMessage(ch, att, 'answer', desc, from));
    c.on('iceCandidate', (cand, from) => this.onMessage(ch, att, 'candidate', cand, from));
    c.on('statusResponse', (r) => {
      if (att.retired) return;
      const what = r ? `${r.errorType || r.statusCode || 'error'} ${r.description || ''}`.trim() : 'error';
      this.handlers.error(new SignalingError(`KVS refused a message on ${ch.channelName}: ${what}`, 'KVS_STATUS'));
    });
    att.timer = this.schedule(() => {
      if (!att.opened && !att.failed && !att.retired) {
        this.attemptFailed(ch, att, new Error(`not connected after ${this.openTimeoutMs / 1000} s`));
      }
    }, this.openTimeoutMs);
    try {
      c.open();
    } catch (e) {
      this.attemptFailed(ch, att, e);
    }
  }

  retire(att) {
    if (!att || att.retired) return;
    att.retired = true;
    if (att.timer !== null) this.cancel(att.timer);
    att.timer = null;
    try {
      if (att.client) att.client.close();
    } catch {
      /* already closed */
    }
  }

  onClientOpen(ch, att) {
    if (att.retired || att.failed || this.closed || ch.gone) {
      this.retire(att);
      return;
    }
    att.opened = true;
    att.openedAt = this.now();
    if (att.timer !== null) this.cancel(att.timer);
    att.timer = null;
    // Counted as a success only if it stays open (see onClientClose).
    att.failuresBefore = ch.failures;
    ch.failures = 0;
    if (att === ch.next) {
      const old = ch.current;
      ch.current = att;
      ch.next = null;
      this.retire(old);
    } else if (att !== ch.current) {
      this.retire(att);
      return;
    }
    this.log(`Signaling client connected (KVS ${ch.role} on ${ch.channelName})`);
    ch.first.resolve();
    for (const w of ch.waiters.splice(0)) w.resolve(att);
  }

  onClientError(ch, att, e) {
    if (att.retired) return;
    if (!att.opened) {
      this.attemptFailed(ch, att, e);
      return;
    }
    // An open connection's error is followed by its close, which reconnects.
    this.handlers.error(new SignalingError(`KVS signaling ${ch.role} on ${ch.channelName}: ${(e && e.message) || 'connection error'}`, 'SIGNALING', true));
  }

  onClientClose(ch, att) {
    if (att.retired) return;
    if (!att.opened) {
      this.attemptFailed(ch, att, new Error('connection closed before it opened'));
      return;
    }
    att.retired = true;
    if (this.closed || ch.gone) return;
    const flapped = this.now() - att.openedAt < this.stableOpenMs;
    if (flapped) ch.failures = att.failuresBefore;
    this.log(`Signaling client closed (KVS ${ch.role} on ${ch.channelName}${flapped ? ', right after it opened' : ''}); reconnecting`);
    if (ch.current === att) {
      ch.current = ch.next; // a rotation in flight takes over
      ch.next = null;
      if (!ch.current) this.scheduleReconnect(ch, flapped);
    }
  }

  /** A connection attempt that never opened: drop it and try again later. */
  attemptFailed(ch, att, err) {
    if (att.failed || att.retired) return;
    att.failed = true;
    this.retire(att);
    const why = (err && err.message) || String(err);
    ch.first.reject(new SignalingError(why, 'SIGNALING_UNAVAILABLE', true));
    if (this.closed || ch.gone) return;
    this.handlers.error(new SignalingError(`KVS signaling ${ch.role} on ${ch.channelName} could not connect: ${why}`, 'SIGNALING_UNAVAILABLE', true));
    if (ch.next === att) ch.next = null;
    if (ch.current === att) ch.current = null;
    this.scheduleReconnect(ch, true);
  }

  /** At once after an open connection closed; after 1, 2, 3 ... failures 1 s, 2 s, 4 s ... ≤ 30 s. */
  reconnectDelayMs(failures) {
    if (failures <= 0) return 0;
    return Math.min(this.backoffMaxMs, this.backoffBaseMs * 2 ** (failures - 1));
  }

  /** @param {boolean} failed  an attempt failed (or a connection closed right after opening) */
  scheduleReconnect(ch, failed) {
    if (this.closed || ch.gone || ch.retryTimer !== null) return;
    ch.failures = failed ? ch.failures + 1 : 0;
    const delay = this.reconnectDelayMs(ch.failures);
    ch.retryTimer = this.schedule(() => {
      ch.retryTimer = null;
      if (this.closed || ch.gone) return;
      if (!ch.current) this.startClient(ch, 'current');
      else if (ch.current.opened && ch.current.grantSeq < this.grantSeq && !ch.next) this.startClient(ch, 'next');
    }, delay);
  }

  /** Reconnect with the current credentials: make before break when the channel is open. */
  rotate(ch) {
    if (ch.current && ch.current.opened) {
      this.retire(ch.next);
      this.startClient(ch, 'next');
      return;
    }
    // Not open (connecting with old credentials, or waiting to retry): start over now.
    if (ch.retryTimer !== null) this.cancel(ch.retryTimer);
    ch.retryTimer = null;
    this.retire(ch.current);
    this.retire(ch.next);
    ch.next = null;
    ch.failures = 0;
    this.startClient(ch, 'current');
  }

  dropChannel(ch, why) {
    ch.gone = true;
    if (ch.retryTimer !== null) this.cancel(ch.retryTimer);
    ch.retryTimer = null;
    this.retire(ch.current);
    this.retire(ch.next);
    ch.current = null;
    ch.next = null;
    ch.first.reject(new SignalingError(why));
    for (const w of ch.waiters.splice(0)) w.reject(new SignalingError(`signaling channel ${ch.channelName} closed: ${why}`, 'NOT_PEER'));
    if (this.channels.get(ch.key) === ch) this.channels.delete(ch.key);
    if (this.connected && !this.closed) this.log(`Signaling client for ${ch.channelName} closed: ${why}`);
  }

  /** Resolves with the channel's open attempt, waiting up to openTimeoutMs. */
  whenOpen(ch) {
    if (ch.current && ch.current.opened && !ch.current.retired) return Promise.resolve(ch.current);
    return new Promise((resolve, reject) => {
      const w = { resolve: null, reject: null };
      const timer = this.schedule(() => {
        const i = ch.waiters.indexOf(w);
        if (i >= 0) ch.waiters.splice(i, 1);
        reject(new SignalingError(`signaling channel ${ch.channelName} is not connected`, 'NOT_CONNECTED', true));
      }, this.openTimeoutMs);
      w.resolve = (att) => {
        this.cancel(timer);
        resolve(att);
      };
      w.reject = (e) => {
        this.cancel(timer);
        reject(e);
      };
      ch.waiters.push(w);
    });
  }

  // --- grant and room -------------------------------------------------------------------

  updateGrant(grant) {
    if (!grant || grant.voiceRoomId !== this.voiceRoomId || this.closed) return;
    this.grant = grant;
    this.grantSeq += 1;
    this.rememberRoom(grant.room);
    if (!this.connected) return;
    const plan = channelPlan(grant);
    const wanted = new Map(plan.map((s) => [s.key, s]));
    for (const ch of [...this.channels.values()]) {
      const s = wanted.get(ch.key);
      if (!s || s.channelArn !== ch.channelArn) this.dropChannel(ch, 'no longer in the voice credentials');
    }
    for (const spec of plan) {
      const ch = this.channels.get(spec.key);
      if (!ch) {
        this.addChannel(spec);
      } else {
        ch.endpoint = spec.endpoint;
        this.rotate(ch);
      }
    }
    this.log('Signaling clients reconnecting with refreshed credentials');
  }

  updateRoom(view) {
    if (!view || view.voiceRoomId !== this.voiceRoomId || this.closed) return;
    this.rememberRoom(view);
    const participants = view.participants || [];
    for (const ch of [...this.channels.values()]) {
      if (ch.key === 'self') continue;
      const p = participants.find((x) => x.userId === ch.userId);
      // A peer who left (and maybe joined again, with a new channel) is no longer ours to view.
      if (!p || (p.channelArn && p.channelArn !== ch.channelArn)) this.dropChannel(ch, `${ch.userId} left the voice room`);
    }
    // Nothing more goes to, or is taken from, someone who left (a rejoin offers afresh).
    const present = new Set(participants.map((p) => p.userId));
    for (const user of [...this.clientIdByUser.keys(), ...this.linkRole.keys()]) {
      if (!present.has(user)) {
        this.clientIdByUser.delete(user);
        this.linkRole.delete(user);
      }
    }
    for (const [cid, user] of [...this.userByClientId]) {
      if (!present.has(user) && user !== this.grant.userId) this.userByClientId.delete(cid);
    }
  }

  /**
   * A joiner's (or a resumed participant's) client id from its event: its offers to our channel
   * come under that id, and knowing it beforehand saves a fetchRoom (a Lambda call) per
   * earlier participant on every join.
   */
  learnClientId(userId, clientId) {
    if (this.closed || !userId || !clientId) return;
    this.rememberRoom({ participants: [{ userId, clientId }] });
  }

  /** Learns who sends from which client id. Where to send is learnt only from offers. */
  rememberRoom(view) {
    if (!view || !Array.isArray(view.participants)) return;
    for (const p of view.participants) {
      if (p.clientId) this.userByClientId.set(p.clientId, p.userId);
    }
  }

  // --- receiving ------------------------------------------------------------------------

  onMessage(ch, att, kind, payload, senderClientId) {
    if (att.retired || this.closed || ch.gone) return;
    if (ch.role === 'VIEWER') {
      // On a peer's channel only its master talks to us.
      if (kind === 'offer') {
        this.handlers.error(new SignalingError(`ignored an SDP offer on ${ch.channelName}, where we are a viewer`, 'NOT_PEER'));
        return;
      }
      this.dispatch(ch.userId, kind, payload);
      return;
    }
    if (kind === 'answer') {
      this.handlers.error(new SignalingError(`ignored an SDP answer on our own channel ${ch.channelName}, where we are the master`, 'NOT_PEER'));
      return;
    }
    if (!senderClientId) {
      this.handlers.error(new SignalingError(`ignored a ${kind} without a sender client id on ${ch.channelName}`, 'NOT_PEER'));
      return;
    }
    const user = this.userByClientId.get(senderClientId);
    if (user) this.fromViewer(user, senderClientId, kind, payload);
    else this.queueUnknown(senderClientId, kind, payload);
  }

  fromViewer(user, clientId, kind, payload) {
    if (kind === 'offer') {
      this.linkRole.set(user, 'master');
      this.clientIdByUser.set(user, clientId);
    }
    this.dispatch(user, kind, payload);
  }

  /** A viewer we cannot name yet (joined after our grant): ask for the room, then deliver. */
  queueUnknown(clientId, kind, payload) {
    const q = this.unknown.get(clientId) || [];
    if (q.length < UNKNOWN_CLIENT_QUEUE_MAX) q.push([kind, payload]);
    this.unknown.set(clientId, q);
    if (this.lookup) return;
    this.lookup = (async () => {
      // Yield first, so that `this.lookup` is set before the finally below clears it, even when
      // there is no fetchRoom (or it throws at once); otherwise every later unknown sender would
      // wait here forever. It also batches the messages of one burst into one lookup.
      await null;
      try {
        if (this.fetchRoom) {
          const view = await this.fetchRoom();
          if (view) this.updateRoom(view);
        }
      } catch (e) {
        this.handlers.error(new SignalingError(`could not look up the voice room's participants: ${e.message}`, 'SIGNALING', true));
      } finally {
        this.lookup = null;
        const waiting = [...this.unknown.entries()];
        this.unknown.clear();
        if (!this.closed) {
          for (const [cid, msgs] of waiting) {
            const user = this.userByClientId.get(cid);
            if (user) for (const [k, p] of msgs) this.fromViewer(user, cid, k, p);
            else this.handlers.error(new SignalingError(`dropped ${msgs.length} signaling message(s) from client id ${cid}, which is no participant of this voice room`, 'NOT_PEER'));
          }
        }
      }
    })();
  }

  // --- sending --------------------------------------------------------------------------

  sendOffer(to, desc) {
    const ch = this.channels.get(`peer:${to}`);
    if (!ch) {
      return Promise.reject(new SignalingError(`offer to ${to} refused: offers go only to earlier participants, as viewer on their channel`, 'NOT_PEER'));
    }
    this.linkRole.set(to, 'viewer');
    return this.sendOn(ch, 'offer', { type: desc.type, sdp: desc.sdp }, null);
  }

  sendAnswer(to, desc) {
    const clientId = this.clientIdByUser.get(to);
    if (!clientId) {
      return Promise.reject(new SignalingError(`answer to ${to} refused: no viewer with that user id on our channel`, 'NOT_PEER'));
    }
    this.linkRole.set(to, 'master');
    return this.sendOn(this.channels.get('self'), 'answer', answerPayload(desc), clientId);
  }

  sendCandidate(to, cand) {
    const role = this.linkRole.get(to) || (this.channels.has(`peer:${to}`) ? 'viewer' : 'master');
    if (role === 'viewer') {
      const ch = this.channels.get(`peer:${to}`);
      if (!ch) return Promise.reject(new SignalingError(`candidate to ${to} refused: not connected to their channel`, 'NOT_PEER'));
      return this.sendOn(ch, 'candidate', cand, null);
    }
    const clientId = this.clientIdByUser.get(to);
    if (!clientId) return Promise.reject(new SignalingError(`candidate to ${to} refused: no viewer with that user id on our channel`, 'NOT_PEER'));
    return this.sendOn(this.channels.get('self'), 'candidate', cand, clientId);
  }

  async sendOn(ch, kind, payload, recipientClientId) {
    if (this.closed) throw new SignalingError('transport closed');
    if (!ch) throw new SignalingError(`${kind} not sent: not connected`, 'NOT_CONNECTED', true);
    // KVS limits the base64 text the SDK makes of the JSON, a third larger; over it KVS refuses
    // the message (a status response at best) and the peer would wait for it forever.
    const size = new TextEncoder().encode(JSON.stringify(payload)).length;
    const encoded = base64Length(size);
    if (size > MAX_PAYLOAD_BYTES || encoded > KVS_MAX_MESSAGE_PAYLOAD) {
      throw new SignalingError(`${kind} payload is ${size} bytes, ${encoded} in base64, over KVS's ${KVS_MAX_MESSAGE_PAYLOAD}-character messagePayload limit`, 'TOO_LARGE');
    }
    const att = await this.whenOpen(ch);
    if (this.closed) throw new SignalingError('transport closed');
    await this.paced(ch, att, kind === 'candidate' ? 'ice' : 'sdp', (on) => {
      try {
        const c = on.client;
        const args = recipientClientId ? [payload, recipientClientId] : [payload];
        if (kind === 'offer') c.sendSdpOffer(...args);
        else if (kind === 'answer') c.sendSdpAnswer(...args);
        else c.sendIceCandidate(...args);
      } catch (e) {
        throw new SignalingError(`${kind} on ${ch.channelName} not sent: ${e.message}`, 'SIGNALING', true);
      }
    });
  }

  /**
   * Runs `send` on `att`'s WebSocket when its budget allows: one FIFO queue per connection (order
   * kept across kinds), offers/answers at least PACING_WINDOW_MS / KVS_SDP_PER_SECOND apart and
   * candidates PACING_WINDOW_MS / KVS_ICE_PER_SECOND apart, so at most that many in any
   * PACING_WINDOW_MS and never in a burst (see KVS_ICE_PER_SECOND). At most PACING_QUEUE_MAX
   * messages wait. A connection replaced by a rotation (new credentials, make before break)
   * while a message waits hands it to its replacement, already open; one that closed fails it
   * (retryable).
   */
  paced(ch, att, bucket, send) {
    const q = att.pacing || (att.pacing = { tail: Promise.resolve(), waiting: 0, last: { sdp: null, ice: null } });
    if (q.waiting >= PACING_QUEUE_MAX) {
      return Promise.reject(new SignalingError(`too many signaling messages waiting on ${ch.channelName}`, 'SIGNALING_BUSY', true));
    }
    q.waiting += 1;
    const gap = PACING_WINDOW_MS / (bucket === 'ice' ? KVS_ICE_PER_SECOND : KVS_SDP_PER_SECOND);
    const turn = q.tail.then(
      () =>
        new Promise((resolve, reject) => {
          let on = att;
          const attempt = () => {
            const next = ch.current;
            if (on.retired && !this.closed && !ch.gone && next && next !== on && next.opened && !next.retired) on = next;
            if (on.retired || this.closed) {
              reject(new SignalingError(`signaling connection on ${ch.channelName} closed before a queued message was sent`, 'NOT_CONNECTED', true));
              return;
            }
            const now = this.now();
            const last = q.last[bucket];
            if (last !== null && now - last < gap) {
              this.schedule(attempt, Math.ceil(last + gap - now));
              return;
            }
            q.last[bucket] = now;
            try {
              send(on);
              resolve();
            } catch (e) {
              reject(e);
            }
          };
          attempt();
        }),
    );
    const done = turn.finally(() => {
      q.waiting -= 1;
    });
    q.tail = done.catch(() => {});
    return done;
  }

  /**
   * Our own channel's ICE servers, limited by limitTurn (the grant's list; every peer entry of a
   * grant carries the same list).
   */
  grantIceServers() {
    return limitTurn(((this.grant || {}).self || {}).iceServers || []);
  }

  /**
   * Fresh ICE servers for the link with `userId`, whoever it is: GetIceServerConfig
   * (SigV4-signed with the grant's credentials) on OUR OWN channel, as its master, cached for
   * ICE_CACHE_MS and 80 % of KVS's Ttl (TURN credentials live 300 s), limited by limitTurn. Every link uses our
   * own channel's TURN so that a channel's 50 TURN allocations carry only its owner's links
   * (TURN_URIS_PER_PEER_CONNECTION). Links asking at the same time share one call. A throttled
   * (or 5xx) call is asked again after ICE_RETRY_DELAYS_MS; when it still fails, or fails
   * otherwise, falls back to the grant's list, with an error reported (the page then tries STUN
   * and whatever TURN credentials are still valid).
   */
  async iceServersFor(_userId) {
    const entry = this.grant.self;
    if (!entry || !entry.httpsEndpoint || !this.fetch) return this.grantIceServers();
    const cached = this.iceCache.get(entry.channelArn);
    if (cached && this.now() - cached.at < cached.keepMs && cached.grantSeq === this.grantSeq) return cached.servers;
    const inFlight = this.iceFetching.get(entry.channelArn);
    if (inFlight && inFlight.grantSeq === this.grantSeq) return inFlight.promise;
    const current = { grantSeq: this.grantSeq, promise: null };
    current.promise = this.fetchOwnIceServers(entry).finally(() => {
      if (this.iceFetching.get(entry.channelArn) === current) this.iceFetching.delete(entry.channelArn);
    });
    this.iceFetching.set(entry.channelArn, current);
    return current.promise;
  }

  /** GetIceServerConfig on our own channel (`entry`), retried while throttled; see iceServersFor. */
  async fetchOwnIceServers(entry) {
    for (let attempt = 0; ; attempt += 1) {
      try {
        const { servers, ttlSeconds } = await fetchIceServerConfig({
          fetch: this.fetch,
          endpoint: entry.httpsEndpoint,
          channelArn: entry.channelArn,
          clientId: null,
          region: this.region(),
          credentials: this.grant.credentials,
          now: this.now(),
          subtle: this.subtle,
        });
        const stun = (entry.iceServers || []).filter((s) => [].concat(s.urls || []).every((u) => String(u).startsWith('stun:')));
        const all = limitTurn([...stun, ...servers]);
        this.iceCache.set(entry.channelArn, { at: this.now(), servers: all, grantSeq: this.grantSeq, keepMs: iceCacheMs(ttlSeconds) });
        if (attempt) this.log(`Fresh ICE servers for ${entry.channelName || entry.channelArn} after ${attempt} ${attempt === 1 ? 'retry' : 'retries'}`);
        return all;
      } catch (e) {
        if (e.retryable && attempt < ICE_RETRY_DELAYS_MS.length && !this.closed) {
          const wait = Math.round(ICE_RETRY_DELAYS_MS[attempt] * (0.5 + 0.5 * this.rand()));
          this.log(`GetIceServerConfig: ${e.message}; asking again in ${wait} ms`);
          await new Promise((resolve) => this.schedule(resolve, wait));
          if (this.closed) return this.grantIceServers();
          continue;
        }
        this.handlers.error(new SignalingError(`could not get fresh ICE servers for ${entry.channelName || entry.channelArn}: ${e.message}`, 'ICE_SERVERS', !!e.retryable));
        return this.grantIceServers();
      }
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    for (const ch of [...this.channels.values()]) this.dropChannel(ch, 'transport closed');
    this.channels.clear();
    this.unknown.clear();
  }
}

// ---------------------------------------------------------------------------------------------
// Credential refresh

/** Above this remaining lifetime, refresh a fixed margin before expiry; below, at a fraction. */
const LONG_LIFETIME_MS = 10 * 60 * 1000;
const REFRESH_MARGIN_MS = 5 * 60 * 1000;
const SHORT_LIFETIME_FRACTION = 0.8;
const MAX_LIFETIME_MS = 60 * 60 * 1000;

/**
 * How long to wait before asking for fresh voice credentials: 5 minutes before `expiresAt`, or at
 * 80 % of the remaining lifetime when that is 10 minutes or less. Called when the grant arrives.
 *
 * With `issuedAt` (the server's clock at issuance, sent with every grant) the lifetime is
 * `expiresAt - issuedAt`, so a browser clock that is off by minutes or hours does not matter.
 * Without it (an older server) the lifetime is `expiresAt - now`; one that is not positive (a
 * clock skewed against the server's) is taken as the 1 h maximum rather than refreshing in a
 * tight loop.
 * @param {number} expiresAt  ms since epoch, from the grant
 * @param {number} now        ms since epoch, the browser's clock
 * @param {number} [issuedAt] ms since epoch, from the grant (server clock)
 */
export function refreshDelayMs(expiresAt, now, issuedAt) {
  let lifetime = Number.isFinite(issuedAt) && issuedAt > 0 ? expiresAt - issuedAt : expiresAt - now;
  if (!(lifetime > 0) || lifetime > MAX_LIFETIME_MS + REFRESH_MARGIN_MS) lifetime = MAX_LIFETIME_MS;
  const delay = lifetime > LONG_LIFETIME_MS ? lifetime - REFRESH_MARGIN_MS : lifetime * SHORT_LIFETIME_FRACTION;
  return Math.max(500, Math.round(delay));
}
