// Which deployment this page talks to, read from `config.json` next to index.html.
//
//   no config.json (HTTP 404)                    self-hosted: the voice-server that served this page,
//                                                chat and voice over its own /ws
//   {"mode":"aws","webSocketUrl":…,"region":…,   AWS: actions over the API Gateway WebSocket,
//    "chat":"builtin"|"existing"}                signaling over Kinesis Video Streams. "builtin"
//                                                (the stack's ChatMode=builtin): the Lambda is the
//                                                chat app too, the page shows the whole chat UI;
//                                                "existing" (or no "chat", as older stacks wrote
//                                                it): chat is someone else's app, the page does
//                                                voice only
//
// Pure functions (no DOM at import time), so Node's test runner can check them:
// tests/browser/config.test.mjs. Docs: docs/web-client.md, docs/deploy-aws.md.

/** A config.json that cannot be used; `message` says what to fix. */
export class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConfigError';
    this.code = 'BAD_CONFIG';
  }
}

/** The mode without config.json. */
export const SELF_HOSTED = Object.freeze({ mode: 'self-hosted' });

/** AWS region names: us-east-1, eu-central-1, ap-southeast-2, us-gov-west-1, cn-north-1 ... */
const REGION_RE = /^[a-z]{2}(-[a-z]+)+-[0-9]+$/;
const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);
const FIX = 'Upload the stack output WebClientConfig as config.json (docs/deploy-aws.md, "Uploading"), or remove config.json to use the self-hosted server.';

/** Where the chat lives in AWS mode: the stack's own Lambda, or the existing chat app. */
export const CHAT_MODES = Object.freeze(['builtin', 'existing']);

/**
 * Parses the text of config.json.
 * @param {string} text
 * @returns {{mode: 'self-hosted'} | {mode: 'aws', webSocketUrl: string, region: string, chat: 'builtin'|'existing'}}
 * @throws {ConfigError} not JSON, not an object, unknown mode, bad URL, region or chat
 */
export function parseClientConfig(text) {
  let raw;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    const html = /^\s*</.test(String(text));
    throw new ConfigError(`config.json is not valid JSON${html ? ' (it looks like an HTML page)' : ''}: ${e.message}. ${FIX}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError(`config.json must be a JSON object like {"mode":"aws","webSocketUrl":"wss://…","region":"us-east-1"}. ${FIX}`);
  }
  if (raw.mode === 'self-hosted') return SELF_HOSTED;
  if (raw.mode !== 'aws') {
    throw new ConfigError(`config.json has mode ${JSON.stringify(raw.mode)}; the client knows "aws" (and "self-hosted"). ${FIX}`);
  }
  if (typeof raw.webSocketUrl !== 'string' || !raw.webSocketUrl) {
    throw new ConfigError(`config.json (mode "aws") needs "webSocketUrl", the stack output WebSocketUrl (wss://…/production). ${FIX}`);
  }
  let url;
  try {
    url = new URL(raw.webSocketUrl);
  } catch {
    throw new ConfigError(`config.json's webSocketUrl ${JSON.stringify(raw.webSocketUrl)} is not a URL. ${FIX}`);
  }
  // wss only; ws:// only to a loopback host, for trying the client against a local stand-in.
  const plainOk = url.protocol === 'ws:' && LOOPBACK_HOSTS.has(url.hostname);
  if (url.protocol !== 'wss:' && !plainOk) {
    throw new ConfigError(`config.json's webSocketUrl must start with wss:// (got ${JSON.stringify(raw.webSocketUrl)}). ${FIX}`);
  }
  if (url.hash) throw new ConfigError(`config.json's webSocketUrl must not have a #fragment. ${FIX}`);
  if (typeof raw.region !== 'string' || !REGION_RE.test(raw.region)) {
    throw new ConfigError(`config.json (mode "aws") needs "region", the stack's AWS region such as "us-east-1" (got ${JSON.stringify(raw.region)}). ${FIX}`);
  }
  // No "chat": a config.json written before the field existed, when the page only did voice.
  const chat = raw.chat === undefined ? 'existing' : raw.chat;
  if (!CHAT_MODES.includes(chat)) {
    throw new ConfigError(
      `config.json's "chat" is ${JSON.stringify(raw.chat)}; it must be "builtin" (the stack runs the chat itself: ChatMode=builtin) or "existing" (your own chat app identifies users: ChatMode=existing). ${FIX}`,
    );
  }
  return Object.freeze({ mode: 'aws', webSocketUrl: raw.webSocketUrl, region: raw.region, chat });
}

/**
 * Fetches and parses config.json next to the page. 404 means self-hosted; any other failure is a
 * ConfigError, never a silent fallback (a CloudFront page has no /ws to fall back to).
 * @param {{fetchFn?: Function, url?: string, base?: string}} opts
 */
export async function loadClientConfig({ fetchFn = globalThis.fetch, url = 'config.json', base = globalThis.location && globalThis.location.href } = {}) {
  const where = base ? new URL(url, base).href : url;
  let resp;
  try {
    resp = await fetchFn(where, { cache: 'no-store', credentials: 'same-origin' });
  } catch (e) {
    throw new ConfigError(`could not fetch ${where}: ${(e && e.message) || e}. Reload the page.`);
  }
  if (resp.status === 404) return SELF_HOSTED;
  if (!resp.ok) {
    // S3 behind CloudFront (Origin Access Control, no ListBucket) answers 403 for a missing object.
    const hint = resp.status === 403 ? ' On CloudFront/S3 a file that was never uploaded answers 403.' : '';
    throw new ConfigError(`${where} answered HTTP ${resp.status}.${hint} ${FIX}`);
  }
  return parseClientConfig(await resp.text());
}

/**
 * What each mode offers, so the UI can hide what the backend does not serve.
 * Self-hosted: the server is the chat app too. AWS with chat "builtin": so is the Lambda
 * (docs/lambda.md, "Chat in builtin mode"): the same chat UI, only signaling differs (KVS).
 * AWS with chat "existing": the Lambda serves the voice actions only; identity, rooms, join
 * requests, members and messages are the chat app's.
 *
 * heartbeat: whether the page sends `ping` every 10 s (connection.js). Not on AWS, where every
 * frame is a Lambda invocation; there `keepaliveMs` keeps API Gateway from closing an idle
 * socket, with `keepalive` the action it sends ('ping', answered on $default by the Lambda, or
 * 'getVoiceRoom' where $default may be the existing chat app's). pollMs: how often the room list
 * and members are re-read as a safety net (events keep them live).
 */
export function modeFeatures(config) {
  if (config && config.mode === 'aws' && config.chat === 'builtin') {
    return Object.freeze({
      mode: 'aws',
      chatMode: 'builtin',
      hello: true, // the Lambda serves hello with resume tokens
      chat: true, // and every chat action (docs/protocol.md, "Chat actions")
      knowsAdmins: true, // listRooms names each room's admin
      heartbeat: false,
      requestTimeoutMs: 30000, // API Gateway allows an integration 29 s
      keepaliveMs: 5 * 60 * 1000, // API Gateway closes a WebSocket idle for 10 min
      keepalive: 'ping', // the stack's own API: $default is the Lambda, which answers ping
      voiceKeepaliveMs: VOICE_KEEPALIVE_MS, // in voice: getVoiceRoom, the Lambda's liveness record
      pollMs: 60000, // each poll is two Lambda invocations; events carry the live changes
    });
  }
  if (config && config.mode === 'aws') {
    return Object.freeze({
      mode: 'aws',
      chatMode: 'existing',
      hello: false, // the chat app identifies the connection; there is no hello
      chat: false, // no listRooms/createRoom/requestJoin/approveJoin/listMembers/sendMessage/getMessages
      knowsAdmins: false, // who administers a chat room is in the chat app's table, not told to us
      heartbeat: false,
      requestTimeoutMs: 30000, // API Gateway allows an integration 29 s
      keepaliveMs: 5 * 60 * 1000, // API Gateway closes a WebSocket idle for 10 min
      // $default may be the chat app's (ExistingWebSocketApiId), so not ping: a voice route.
      keepalive: 'getVoiceRoom',
      voiceKeepaliveMs: VOICE_KEEPALIVE_MS, // in voice: the Lambda's liveness record
      pollMs: null, // no room list to poll
    });
  }
  return Object.freeze({ mode: 'self-hosted', chatMode: 'builtin', hello: true, chat: true, knowsAdmins: true, heartbeat: true, requestTimeoutMs: 15000, keepaliveMs: null, keepalive: null, voiceKeepaliveMs: null, pollMs: 15000 });
}

/**
 * AWS, while in voice: how often the page proves it is alive. API Gateway does not ping clients,
 * so a participant whose network died silently is noticed only by its missing keepalives: the
 * Lambda records each one (`getVoiceRoom` from the participant's connection) and, in the same
 * request, applies the liveness rule to the room: a participant not heard from for
 * VOICE_LIVENESS_TIMEOUT_SECS (default 10 s, two of these, so one late keepalive is no false
 * alarm) becomes reconnecting, and leaves after the 15 s reconnect grace. So the others'
 * keepalives take a dead participant out of their lists within 10 + 5 + 15 = 30 s of its last
 * keepalive (docs/protocol.md, getVoiceRoom). Outside voice nobody is listed, so the 5-minute
 * keepalive (API Gateway's 10-minute idle close) is enough.
 */
export const VOICE_KEEPALIVE_MS = 5 * 1000;

/**
 * How long the AWS keepalive waits between two requests: `voiceKeepaliveMs` while in voice,
 * `keepaliveMs` otherwise. Null: no keepalive (self-hosted, whose heartbeat pings every 10 s).
 * @param {object} features  from modeFeatures
 * @param {boolean} inVoice  whether the page is in (or resuming) a voice room
 * @returns {number|null}
 */
export function keepaliveEveryMs(features, inVoice) {
  if (!features || !features.keepaliveMs) return null;
  return inVoice && features.voiceKeepaliveMs ? features.voiceKeepaliveMs : features.keepaliveMs;
}

/**
 * The keepalive request for AWS mode (`features.keepaliveMs` apart): in voice, `getVoiceRoom`
 * for the voice room's chat room (`voiceChatRoomId`), the request the Lambda records as the
 * participant's liveness (both chat modes); otherwise `ping` where the Lambda answers it, else
 * `getVoiceRoom` for the room on screen (a voice route of the stack, whatever $default is).
 * Null: nothing to send (self-hosted, which has its heartbeat; or no room open yet).
 * @returns {{action: string, fields: object}|null}
 */
export function keepaliveRequest(features, roomId, voiceChatRoomId = null) {
  if (!features || !features.keepaliveMs) return null;
  if (voiceChatRoomId && features.voiceKeepaliveMs) return { action: 'getVoiceRoom', fields: { roomId: voiceChatRoomId } };
  if (features.keepalive === 'ping') return { action: 'ping', fields: {} };
  if (features.keepalive === 'getVoiceRoom' && roomId) return { action: 'getVoiceRoom', fields: { roomId } };
  return null;
}

/**
 * The app WebSocket URL. Self-hosted: `/ws` of the page's own host. AWS: `webSocketUrl`, with the
 * page's query parameters appended, so a chat app whose `$connect` identifies users from query
 * parameters (a token, say) gets them: `https://<client>/?token=…` → `wss://…/production?token=…`.
 * @param {object} config  from parseClientConfig / loadClientConfig
 * @param {{protocol: string, host: string, search?: string}} loc  the page's location
 */
export function appSocketUrl(config, loc) {
  if (!config || config.mode !== 'aws') {
    const proto = loc.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${proto}//${loc.host}/ws`;
  }
  const url = new URL(config.webSocketUrl);
  for (const [k, v] of new URLSearchParams(loc.search || '')) url.searchParams.append(k, v);
  return url.href;
}

/** The chat room named by a page fragment `#room=<id>` (AWS mode deep link), or null. */
export function roomFromHash(hash) {
  const params = new URLSearchParams(String(hash || '').replace(/^#/, ''));
  const room = (params.get('room') || '').trim();
  return room || null;
}

/**
 * What a person should do about a refusal in AWS mode, where the chat app (not this page) owns
 * identity and membership. Null when the message the Lambda sent says enough.
 */
export function awsRefusalHint(code) {
  switch (code) {
    case 'NOT_IDENTIFIED':
      return 'The chat app does not know this connection: it must register the connection (its connections table) before voice works. Sign in through your chat app; see docs/web-client.md.';
    case 'CHAT_ROOM_NOT_FOUND':
      return 'There is no chat room with this id in the chat app.';
    case 'NOT_MEMBER':
      return 'Ask to join this chat room in your chat app; its admin approves there.';
    case 'NOT_APPROVED':
      return 'Your join request is waiting for the chat room admin, in your chat app.';
    case 'UNKNOWN_ACTION':
      return 'The voice API does not know this action: the stack may be older than this page, or the stage was not redeployed.';
    default:
      return null;
  }
}

/**
 * API Gateway answers some failures itself, with a frame that is not our protocol:
 * `{"message": "Internal server error", "connectionId": …, "requestId": <its own id>}`. It cannot
 * be matched to our request (the requestId is API Gateway's), so it is only reported.
 * @returns {string|null} what to show, or null for a frame of our protocol
 */
export function apiGatewayErrorText(frame) {
  if (!frame || typeof frame !== 'object' || 'type' in frame || typeof frame.message !== 'string') return null;
  const m = frame.message;
  let why = 'see the voice function\'s log (docs/deploy-aws.md, "Troubleshooting")';
  if (/forbidden/i.test(m)) why = 'no route for that action, or a wrong stage in webSocketUrl';
  else if (/internal server error/i.test(m)) why = 'the voice function failed or the route has no route response; see its log';
  else if (/timed out/i.test(m)) why = 'the voice function took longer than API Gateway waits (29 s)';
  else if (/limit exceeded|too many requests/i.test(m)) why = 'API Gateway throttled the request; try again in a moment';
  return `The voice API answered "${m}": ${why}.`;
}
