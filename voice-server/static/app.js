// Voice Chat web client: the glue between the modules.
//
//   connection.js  the app WebSocket (requests with deadlines, events, heartbeat)
//   store.js       the state and the pure reducer every change goes through
//   views.js       the page, drawn from the state (one render per batch of changes)
//   voice.js       one voice session (mic, transport, peer links), dependencies injected
//   messages.js    wire error codes → plain words, in one place
//   config.js      self-hosted or AWS mode (docs/web-client.md)
//   signaling.js   the signaling transport (self-hosted relay or Kinesis Video Streams)
//
// Resilience (docs/web-client.md, "Liveness, reconnect, resume, reload and sign-out"): a lost or
// dead connection is reopened with backoff; the page says hello again with the stored resume
// token, reopens the room and, if it was in voice, asks for voice credentials again — which
// resumes the participation (or rejoins) — and rebuilds its peer links. A reload does the same
// from localStorage. "Sign out" forgets it all.
//
// No inline scripts or handlers anywhere (the server's CSP forbids them).

import { createTransport, refreshDelayMs } from './signaling.js';
import { apiGatewayErrorText, appSocketUrl, awsRefusalHint, keepaliveEveryMs, keepaliveRequest, loadClientConfig, modeFeatures, roomFromHash, SELF_HOSTED } from './config.js';
import { AppConnection, reconnectDelayMs } from './connection.js';
import { describeError as describe } from './messages.js';
import { amAdmin, displayName, initialState, reduce, roomName, viewIsStale, voiceEpoch } from './store.js';
import { $, h, render, updateSpeaking } from './views.js';
import { openMicrophone, VoiceSession } from './voice.js';
import { createRecording } from './recording.js';

// ---------------------------------------------------------------------------------------------
// Logging (console and the test hook)

const logLines = [];
function log(msg) {
  logLines.push(msg);
  if (logLines.length > 1000) logLines.shift();
  console.log(`[voice] ${msg}`);
}
function warn(msg) {
  logLines.push(msg);
  if (logLines.length > 1000) logLines.shift();
  console.warn(`[voice] ${msg}`);
}

// ---------------------------------------------------------------------------------------------
// Mode

let config = SELF_HOSTED;
let features = modeFeatures(SELF_HOSTED);
let configError = null;
const configReady = loadClientConfig().then(
  (c) => {
    config = c;
    features = modeFeatures(c);
    applyMode();
    return c;
  },
  (e) => {
    showConfigError(e);
    throw e;
  },
);
configReady.catch(() => {});

/** Plain words for an error; codes and server messages only in the console. */
function describeError(e) {
  return describe(e, { warn, hint: (code) => (features.hello ? null : awsRefusalHint(code)) });
}

// ---------------------------------------------------------------------------------------------
// State: one store, one render per batch of changes

let state = initialState();
let renderQueued = false;
let signedIn = false;
let app = null; // the current AppConnection
let session = null; // the VoiceSession we are in
let lastSession = null;
/** The last links made, closed ones included, for the test hook: bounded, not every link ever. */
const recentLinks = [];

function dispatch(action) {
  const before = state;
  state = reduce(state, action);
  if (state === before) return;
  savePlace();
  scheduleRender();
}

/** One render for any number of changes in the same turn (state, or a peer link's state). */
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    render(state, viewCtx());
    recording.render(state);
  });
}

function viewCtx() {
  return { features, session, signedIn, configError, openRoom, requestJoin, decide, moderate, moreRooms, moreMembers, olderMessages };
}

const nameOf = (userId) => displayName(state, userId);

let toastId = 0;
function toast(text, kind = 'info') {
  const id = ++toastId;
  dispatch({ type: 'toast', id, text, kind });
  setTimeout(() => dispatch({ type: 'toastGone', id }), kind === 'error' ? 8000 : 4000);
}

function notice(chatRoomId, text, kind = 'info', tag = null) {
  dispatch({ type: 'notice', chatRoomId, text, kind, tag });
}

// Recording with consent lives in recording.js; these are its hooks into the page.
const recording = createRecording({
  app: () => app,
  session: () => session,
  state: () => state,
  get features() {
    return features;
  },
  refreshVoiceRoom: (chatRoomId) => refreshVoiceRoom(chatRoomId),
  notice,
  toast,
  log,
  warn,
  confirm: async (text) => window.confirm(text),
});

// ---------------------------------------------------------------------------------------------
// Storage: who we are (resume token) and where we were (room, voice), across reloads.

const IDENTITY_KEY = 'voiceChat.identity';
const PLACE_KEY = 'voiceChat.place';

function loadJson(key) {
  try {
    return JSON.parse(localStorage.getItem(key) || 'null');
  } catch {
    return null;
  }
}
function saveJson(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
  } catch {
    /* storage unavailable: no resume after a reload, nothing else lost */
  }
}

let savedPlace = '';
function savePlace() {
  if (!signedIn || !features.hello) return;
  const place = { roomId: state.currentRoomId, voice: state.voice ? { chatRoomId: state.voice.chatRoomId, voiceRoomId: state.voice.voiceRoomId } : null };
  const text = JSON.stringify(place);
  if (text === savedPlace) return;
  savedPlace = text;
  saveJson(PLACE_KEY, place);
}

// ---------------------------------------------------------------------------------------------
// Connection: open, hello, reconnect

function wsUrl() {
  return appSocketUrl(config, location);
}

function newConnection() {
  return new AppConnection(wsUrl(), {
    requestTimeoutMs: features.requestTimeoutMs,
    // AWS: every request is a Lambda invocation; the keepalive (startKeepalive) doubles as the heartbeat.
    heartbeatMs: features.heartbeat ? undefined : null,
    warn,
    apiGatewayErrorText,
  });
}

/**
 * AWS: API Gateway closes a connection idle for 10 minutes. The keepalive keeps it open, and
 * one without an answer means the connection is dead (reconnect). `ping` where the Lambda
 * serves it (builtin chat), else `getVoiceRoom` for the room on screen (config.js
 * keepaliveRequest).
 */
function startKeepalive(conn) {
  // In voice every 5 s (the Lambda's liveness record, which also applies the liveness rule to the
  // room, so a silently dead participant leaves the others' lists within ~30 s), else every
  // 5 min (config.js keepaliveEveryMs).
  const voiceChat = () => (session && !session.ended ? session.chatRoomId : null);
  conn.startKeepalive(() => keepaliveEveryMs(features, !!voiceChat()), () => {
    const room = (session && session.chatRoomId) || state.currentRoomId;
    const req = app === conn ? keepaliveRequest(features, room, voiceChat()) : null;
    if (!req) return null;
    const epoch = voiceEpoch(state, room);
    const p = conn.request(req.action, req.fields);
    return req.action === 'getVoiceRoom' ? p.then((r) => setVoiceRoom(room, r.voiceRoom, epoch)) : p;
  });
}

/** Self-hosted and AWS with the built-in chat: socket + hello (with the stored resume token, so we stay the same user). */
async function connectSelfHosted(name) {
  dispatch({ type: 'connecting' });
  const conn = newConnection();
  await conn.open();
  if (features.mode === 'aws') {
    conn.on('apiError', (ev) => toast(ev.text, 'error'));
    startKeepalive(conn);
  }
  const ident = loadJson(IDENTITY_KEY);
  const token = ident && ident.resumeToken;
  const me = await conn.request('hello', token ? { name: ident.name || name, resumeToken: token } : { name });
  saveJson(IDENTITY_KEY, { resumeToken: me.resumeToken || token, name: me.name, userId: me.userId });
  wireEvents(conn);
  conn.onclose = () => onConnectionLost(conn);
  app = conn;
  log(`Connected to the server as ${me.name} (${me.userId})${me.resumed ? ' (resumed)' : ''}`);
  dispatch({ type: 'online', me: { userId: me.userId, name: me.name } });
  return conn;
}

let reconnecting = false;

/** The socket closed or was declared dead: keep voice going peer to peer, reconnect. */
function onConnectionLost(conn) {
  if (conn !== app || !signedIn) return;
  app = null;
  log('Connection lost; reconnecting');
  dispatch({ type: 'offline' });
  reconnectLoop();
}

async function reconnectLoop() {
  if (reconnecting) return;
  reconnecting = true;
  try {
    for (let attempt = 1; signedIn; attempt++) {
      const delay = reconnectDelayMs(attempt);
      dispatch({ type: 'offline', attempt, retryInMs: delay });
      await new Promise((r) => setTimeout(r, delay));
      if (!signedIn) return;
      try {
        await restore();
        toast('Reconnected');
        return;
      } catch (e) {
        warn(`reconnect attempt ${attempt} failed: ${e.message}`);
        if (app) {
          const c = app;
          app = null;
          c.close();
        }
      }
    }
  } finally {
    reconnecting = false;
  }
}

/** Where a reload found us (localStorage), until the first restore that succeeds. */
let pendingPlace = null;

/** After (re)connecting: rooms, the open room, and voice if we were in it. */
async function restore(place = pendingPlace) {
  let voice = null;
  if (features.hello) {
    const ident = loadJson(IDENTITY_KEY);
    await connectSelfHosted((ident && ident.name) || (state.me && state.me.name) || 'Guest');
    // A call still running (a reconnect, not a reload) is resumed first: the room list and the
    // open room, several requests (on AWS each a Lambda invocation), follow alongside. Its
    // failure is awaited (and thrown) below.
    if (session && !session.ended) {
      voice = resumeVoice(place && place.voice);
      voice.catch(() => {});
    }
    await loadRooms();
    const roomId = state.currentRoomId || (place && place.roomId);
    if (roomId && state.rooms.some((r) => r.roomId === roomId && r.myState === 'approved')) await openRoom(roomId);
  } else {
    await ensureAwsConnection();
    await refreshKnownRooms();
  }
  await (voice || resumeVoice(place && place.voice));
  pendingPlace = null;
}

let resumingVoice = false;
/** How long the page keeps trying to get back into voice while the server answers "try again". */
const VOICE_RESUME_PATIENCE_MS = 60000;

/** A refusal worth retrying: the server is busy or restarting, or did not answer in time. */
const retryable = (e) => !!(e && (e.retryable || e.code === 'TIMEOUT' || e.code === 'UNAVAILABLE' || e.code === 'RATE_LIMITED'));

/**
 * Back into voice after a reconnect (the session still runs: resume it on the new connection)
 * or a reload (no session: `saved` says where we were). If that voice room is gone, join the
 * room's current voice chat, or start one (a server restart without resume ended it). Refusals
 * that say "try again" (UNAVAILABLE, a timeout) are retried with backoff for up to
 * VOICE_RESUME_PATIENCE_MS, voice shown as reconnecting meanwhile; a lost connection is left to
 * the reconnect loop.
 */
async function resumeVoice(saved) {
  if (resumingVoice) return;
  const target = session && !session.ended ? { chatRoomId: session.chatRoomId, voiceRoomId: session.voiceRoomId } : saved;
  if (!target || !target.chatRoomId) return;
  resumingVoice = true;
  const deadline = Date.now() + VOICE_RESUME_PATIENCE_MS;
  try {
    for (let attempt = 1; ; attempt++) {
      try {
        await resumeVoiceOnce(target, attempt);
        return;
      } catch (e) {
        if (e.code === 'DISCONNECTED' || !retryable(e) || Date.now() > deadline) {
          if (e.code !== 'DISCONNECTED' && !session) notice(target.chatRoomId, `Could not get back into the voice chat. ${describeError(e)}`, 'error');
          if (e.code === 'DISCONNECTED') throw e;
          if (!session) dispatch({ type: 'voice', voice: null });
          return;
        }
        warn(`getting back into voice: ${e.code}; trying again (attempt ${attempt})`);
        if (!session) dispatch({ type: 'voice', voice: { chatRoomId: target.chatRoomId, voiceRoomId: target.voiceRoomId, phase: 'reconnecting', muted: false } });
        await new Promise((r) => setTimeout(r, reconnectDelayMs(attempt)));
        if (!app || !signedIn) throw e;
      }
    }
  } finally {
    resumingVoice = false;
  }
}

/** Resuming that failed this many times with "try again" becomes a leave and a fresh join. */
const RESUME_ATTEMPTS_BEFORE_REJOIN = 3;

async function resumeVoiceOnce(target, attempt) {
  const s = session && !session.ended ? session : null;
  if (s) {
    const t0 = Date.now();
    try {
      await s.resume();
      log(`Voice resumed in ${Date.now() - t0} ms`);
      setPhase(s, 'connected');
      return;
    } catch (e) {
      if (e.code === 'DISCONNECTED') throw e;
      if (retryable(e) && attempt < RESUME_ATTEMPTS_BEFORE_REJOIN) throw e;
      // Refused, or the old participation cannot be resumed (e.g. a restarted server that lost
      // its signaling channel): give it up and join the room's voice chat afresh.
      warn(`voice resume failed (${e.code}); leaving and joining the room's voice chat again`);
      if (retryable(e) && app) await app.request('leaveVoiceRoom', { voiceRoomId: s.voiceRoomId }).catch((err) => warn(`leaveVoiceRoom: ${err.code || err.message}`));
      s.teardown('resume refused');
      session = null;
    }
  }
  // The placeholder (if any) gives way to the real session.
  if (state.voice && !session) dispatch({ type: 'voice', voice: null });
  await enterVoice(target.chatRoomId, target.voiceRoomId, { rejoin: true });
}

// ---------------------------------------------------------------------------------------------
// Voice

/**
 * A voice room view from a reply. `epoch`: voiceEpoch() when the request was sent; a view that
 * an event overtook (store.js viewIsStale) is not applied, the page asks for the room again.
 */
function setVoiceRoom(chatRoomId, view, epoch) {
  if (viewIsStale(state, chatRoomId, epoch)) {
    log('A voice room view older than the latest event was not applied; reading the room again');
    refreshVoiceRoomSoon(chatRoomId);
    return;
  }
  dispatch({ type: 'voiceRoom', chatRoomId, view, epoch });
  const s = session;
  if (s && s.transport && view && view.status === 'active' && view.voiceRoomId === s.voiceRoomId) s.transport.updateRoom(view);
  syncServerMutes();
}

/**
 * Moderators' mutes (serverMute) applied to this page: a server-muted peer's audio is not
 * played, and when we are the one muted our microphone track is turned off.
 */
function syncServerMutes() {
  const s = session;
  if (!s || s.ended) return;
  const vr = state.voiceRooms[s.chatRoomId];
  if (!vr || vr.voiceRoomId !== s.voiceRoomId) return;
  const me = state.me && state.me.userId;
  for (const p of vr.participants) {
    if (p.userId === me) {
      if (p.serverMuted && !s.muted) {
        s.setMuted(true);
        dispatch({ type: 'muted', muted: true });
      }
    } else {
      s.silence(p.userId, !!p.serverMuted);
    }
  }
}

/** AWS: there is no hello; the chat app's user id comes back in our first grant or room. */
function learnMe(userId) {
  if (state.me || !userId) return;
  dispatch({ type: 'me', me: { userId, name: userId } });
}

function makeSession(chatRoomId, voiceRoomId, stream) {
  return new VoiceSession(
    {
      app: () => app,
      createTransport,
      refreshDelayMs,
      RTCPeerConnection: window.RTCPeerConnection,
      MediaStream: window.MediaStream,
      RTCRtpReceiver: window.RTCRtpReceiver,
      AudioContext: window.AudioContext,
      attachAudio: (userId) => {
        // Must be an unmuted, playing element: without it Chrome delivers no remote audio.
        const el = h('audio', { autoplay: true, muted: false, dataset: { userId } });
        $('#audio-sink').append(el);
        return el;
      },
      detachAudio: (el) => el.remove(),
      onAudioBlocked: () => dispatch({ type: 'audioBlocked', blocked: true }),
      onGrant: (grant, epoch) => {
        learnMe(grant.userId);
        if (grant.room) setVoiceRoom(chatRoomId, grant.room, epoch);
      },
      viewEpoch: () => voiceEpoch(state, chatRoomId),
      onChange: scheduleRender,
      onScreenShareEnded: () => {
        if (session) stopScreenShare(session);
      },
      onSignalingError,
      onTransportLog: (m) => {
        // A KVS channel (re)connected: a signaling problem shown earlier is over.
        const n = state.notices[chatRoomId];
        if (/^Signaling client connected/.test(m) && n && n.tag === 'signaling') notice(chatRoomId, null);
      },
      onLevels: () => updateSpeaking(session),
      onEnded: (reason, kind) => endSession(reason, kind),
      onLink: (link) => {
        recentLinks.push(link);
        if (recentLinks.length > 32) recentLinks.shift();
      },
      nameOf,
      log,
      warn,
      region: config.region,
      fetchRoom: async () => {
        const epoch = voiceEpoch(state, chatRoomId);
        const r = await app.request('getVoiceRoom', { roomId: chatRoomId });
        const view = r.voiceRoom && r.voiceRoom.voiceRoomId === voiceRoomId ? r.voiceRoom : null;
        if (view) setVoiceRoom(chatRoomId, view, epoch);
        return view;
      },
    },
    chatRoomId,
    voiceRoomId,
    stream,
  );
}

async function withBusy(fn) {
  if (state.busy) return;
  dispatch({ type: 'busy', busy: true });
  try {
    await fn();
  } finally {
    dispatch({ type: 'busy', busy: false });
  }
}

/**
 * Opens the mic and joins `voiceRoomId` (null: create one). `rejoin`: we were in voice before a
 * reconnect or reload; if that room is gone, join the room's current one or start a new one.
 */
async function enterVoice(chatRoomId, voiceRoomIdOrCreate, { rejoin = false } = {}) {
  if (session) {
    notice(chatRoomId, 'You are already in a voice chat. Leave it first.', 'error');
    return;
  }
  if (!app) {
    notice(chatRoomId, describeError({ code: 'DISCONNECTED', message: 'not connected' }), 'error');
    return;
  }
  // Consent: a joiner is told that the room is being recorded before its microphone opens.
  if (!(await recording.consentToJoin(chatRoomId))) return;
  let stream;
  try {
    stream = await openMicrophone(navigator.mediaDevices, { log, warn });
  } catch (e) {
    notice(chatRoomId, e.message, 'error');
    return;
  }
  const stop = () => {
    for (const t of stream.getTracks()) t.stop();
  };
  let voiceRoomId = voiceRoomIdOrCreate;
  if (rejoin && voiceRoomId) {
    // Still there? Otherwise fall through to "current or new".
    const epoch = voiceEpoch(state, chatRoomId);
    const r = await app.request('getVoiceRoom', { roomId: chatRoomId }).catch(() => null);
    const current = r && r.voiceRoom && r.voiceRoom.status === 'active' ? r.voiceRoom : null;
    if (r) setVoiceRoom(chatRoomId, current, epoch);
    if (!current) voiceRoomId = null;
    else if (current.voiceRoomId !== voiceRoomId) voiceRoomId = current.voiceRoomId;
  }
  if (!voiceRoomId) {
    try {
      const epoch = voiceEpoch(state, chatRoomId);
      const view = await app.request('createVoiceRoom', { roomId: chatRoomId });
      learnMe(view.masterUserId);
      setVoiceRoom(chatRoomId, view, epoch);
      voiceRoomId = view.voiceRoomId;
      log(`Voice room ${voiceRoomId} created`);
    } catch (e) {
      if (e.code === 'ALREADY_ACTIVE') {
        const epoch = voiceEpoch(state, chatRoomId);
        const r = await app.request('getVoiceRoom', { roomId: chatRoomId }).catch(() => null);
        if (r && r.voiceRoom && r.voiceRoom.status === 'active') {
          setVoiceRoom(chatRoomId, r.voiceRoom, epoch);
          voiceRoomId = r.voiceRoom.voiceRoomId;
        }
      }
      if (!voiceRoomId) {
        stop();
        if (rejoin && (e.code === 'DISCONNECTED' || retryable(e))) throw e;
        notice(chatRoomId, `Could not start voice chat. ${describeError(e)}`, 'error');
        return;
      }
    }
  }
  const s = makeSession(chatRoomId, voiceRoomId, stream);
  session = s;
  lastSession = s;
  dispatch({ type: 'voice', voice: { chatRoomId, voiceRoomId, phase: 'joining', muted: false } });
  notice(chatRoomId, null);
  try {
    await s.join();
    setPhase(s, 'connected');
  } catch (e) {
    s.teardown(`join failed: ${e.code || e.message}`);
    if (session === s) {
      session = null;
      dispatch({ type: 'voice', voice: null });
    }
    if (s.grant && app) app.request('leaveVoiceRoom', { voiceRoomId }).catch((err) => warn(`leaveVoiceRoom: ${err.code || err.message}`));
    if (rejoin && (e.code === 'DISCONNECTED' || retryable(e))) throw e;
    notice(chatRoomId, `Could not join the voice chat. ${describeError(e)}`, 'error');
  }
}

/**
 * Self-hosted: signaling problems go to the console only (the relay is the app socket, whose
 * loss the page shows anyway). AWS: a KVS channel that cannot connect is shown on the voice
 * panel until it reconnects.
 */
function onSignalingError(e) {
  const s = session;
  if (features.mode !== 'aws' || !s || s.ended) return;
  if (['SIGNALING_UNAVAILABLE', 'KVS_STATUS', 'SIGNALING'].includes(e.code)) {
    notice(s.chatRoomId, `Trouble reaching the voice signaling service${e.retryable ? '; retrying' : ''}. Others may not hear you until it is back.`, 'error', 'signaling');
  }
}

/** The voice phase shown, if `s` is still the session the state describes. */
function setPhase(s, phase) {
  if (session === s && state.voice && state.voice.voiceRoomId === s.voiceRoomId) dispatch({ type: 'voice', voice: { ...state.voice, phase } });
}

function endSession(reason, kind = 'info') {
  const s = session;
  if (!s) return;
  s.teardown(reason);
  session = null;
  dispatch({ type: 'voice', voice: null });
  notice(s.chatRoomId, reason, kind);
  scheduleRender();
}

/**
 * Camera or screen share on/off for our voice session (docs/web-client.md, "Video and screen
 * sharing"). Any participant may turn its camera on; a screen share is asked of the server first
 * (startScreenShare: the room's policy, one sharer at a time), and its refusal is shown in plain
 * words before any picker opens. A refused device is a notice, never a teardown.
 */
async function toggleVideo(slot) {
  const s = session;
  if (!s) return;
  if (s.video[slot]) {
    await s.setVideo(slot, null);
    if (slot === 'screen') await stopScreenShare(s);
    scheduleRender();
    return;
  }
  if (slot === 'screen') {
    try {
      const epoch = voiceEpoch(state, s.chatRoomId);
      const view = await app.request('startScreenShare', { voiceRoomId: s.voiceRoomId });
      if (session === s) setVoiceRoom(s.chatRoomId, view, epoch);
    } catch (e) {
      notice(s.chatRoomId, `Screen sharing did not start. ${describeError(e)}`, 'error');
      scheduleRender();
      return;
    }
  }
  const md = navigator.mediaDevices;
  try {
    const stream = slot === 'screen' ? await md.getDisplayMedia({ video: true, audio: false }) : await md.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    const track = stream.getVideoTracks()[0];
    if (session !== s || s.ended) {
      track.stop();
      return;
    }
    if (slot === 'screen') track.contentHint = 'detail';
    await s.setVideo(slot, track);
  } catch (e) {
    warn(`${slot === 'screen' ? 'getDisplayMedia' : 'getUserMedia(video)'} failed: ${e.name}: ${e.message}`);
    const what = slot === 'screen' ? 'Screen sharing did not start' : 'The camera did not start';
    const why = e.name === 'NotAllowedError' ? 'permission was refused or the picker was closed.' : e.name === 'NotFoundError' ? 'no device was found.' : `${e.name}.`;
    notice(s.chatRoomId, `${what}: ${why}`, 'error');
    // The server was told we share: tell it we do not.
    if (slot === 'screen') await stopScreenShare(s);
  }
  scheduleRender();
}

/** Tells the server our screen share is over (the page's button or the browser's own "stop"). */
async function stopScreenShare(s) {
  try {
    const epoch = voiceEpoch(state, s.chatRoomId);
    const view = await app.request('stopScreenShare', { voiceRoomId: s.voiceRoomId });
    if (session === s) setVoiceRoom(s.chatRoomId, view, epoch);
  } catch (e) {
    // Already stopped by the server (policy change, a host stopped it): nothing to undo.
    if (e.code !== 'NOT_SHARING') warn(`stopScreenShare: ${e.code || e.message}`);
  }
}

/** The master or the admin sets who may share a screen (docs/protocol.md, setScreenSharePolicy). */
async function setSharePolicy(policy) {
  const s = session;
  if (!s) return;
  try {
    const epoch = voiceEpoch(state, s.chatRoomId);
    const view = await app.request('setScreenSharePolicy', { voiceRoomId: s.voiceRoomId, policy });
    if (session === s) setVoiceRoom(s.chatRoomId, view, epoch);
  } catch (e) {
    notice(s.chatRoomId, `Could not change who may share a screen. ${describeError(e)}`, 'error');
  }
}

async function toggleMute() {
  const s = session;
  if (!s) return;
  const muted = !s.muted;
  s.setMuted(muted);
  dispatch({ type: 'muted', muted });
  try {
    const epoch = voiceEpoch(state, s.chatRoomId);
    const view = await app.request('setMute', { voiceRoomId: s.voiceRoomId, muted });
    if (session === s) setVoiceRoom(s.chatRoomId, view, epoch);
  } catch (e) {
    notice(s.chatRoomId, `Your microphone is ${muted ? 'muted' : 'on'}, but the others could not be told. ${describeError(e)}`, 'error');
  }
}

/** A moderator mutes `userId` for everyone, or lifts it (docs/protocol.md, serverMute). */
async function serverMute(userId, muted) {
  const s = session;
  if (!s) return;
  try {
    const epoch = voiceEpoch(state, s.chatRoomId);
    const view = await app.request('serverMute', { voiceRoomId: s.voiceRoomId, userId, muted });
    if (session === s) setVoiceRoom(s.chatRoomId, view, epoch);
  } catch (e) {
    notice(s.chatRoomId, `${muted ? 'Could not mute' : 'Could not unmute'} ${nameOf(userId)}. ${describeError(e)}`, 'error');
  }
}

async function leaveVoice() {
  const s = session;
  if (!s) return;
  s.stopRefreshing();
  try {
    await app.request('leaveVoiceRoom', { voiceRoomId: s.voiceRoomId });
  } catch (e) {
    warn(`leaveVoiceRoom: ${e.code || e.message}`);
  }
  endSession('You left the voice chat.');
  refreshVoiceRoom(s.chatRoomId);
}

async function endVoice(chatRoomId) {
  const vr = state.voiceRooms[chatRoomId];
  if (!vr) return;
  try {
    const epoch = voiceEpoch(state, chatRoomId);
    const view = await app.request('endVoiceRoom', { voiceRoomId: vr.voiceRoomId });
    setVoiceRoom(chatRoomId, view, epoch);
    if (session && session.voiceRoomId === vr.voiceRoomId) endSession('Voice room ended');
    else notice(chatRoomId, 'Voice room ended', 'info', 'ended');
  } catch (e) {
    notice(chatRoomId, `Could not end the voice chat. ${describeError(e)}`, 'error');
  }
}

async function refreshVoiceRoom(chatRoomId) {
  if (!app) return;
  try {
    const epoch = voiceEpoch(state, chatRoomId);
    const r = await app.request('getVoiceRoom', { roomId: chatRoomId });
    setVoiceRoom(chatRoomId, r.voiceRoom, epoch);
    const n = state.notices[chatRoomId];
    if (n && n.tag === 'voice-state') notice(chatRoomId, null);
  } catch (e) {
    warn(`getVoiceRoom: ${e.code || e.message}`);
    if (!features.hello && e.code !== 'DISCONNECTED') notice(chatRoomId, `Could not read this room's voice chat. ${describeError(e)}`, 'error', 'voice-state');
  }
}

/** Reads the room again shortly: one read for a burst of overtaken views (setVoiceRoom). */
const refreshTimers = new Map();
function refreshVoiceRoomSoon(chatRoomId) {
  if (refreshTimers.has(chatRoomId)) return;
  refreshTimers.set(
    chatRoomId,
    setTimeout(() => {
      refreshTimers.delete(chatRoomId);
      refreshVoiceRoom(chatRoomId);
    }, 200),
  );
}

// Own participation dropped by the server while our socket is open: get back in (bounded).
const rejoinTimes = [];
function rejoinAfterDrop(chatRoomId) {
  log('The server took us out of the voice chat while connected; rejoining');
  const now = Date.now();
  while (rejoinTimes.length && now - rejoinTimes[0] > 60000) rejoinTimes.shift();
  if (rejoinTimes.length >= 3) {
    endSession('You were disconnected from the voice chat.', 'error');
    return;
  }
  rejoinTimes.push(now);
  const s = session;
  if (s) {
    s.teardown('dropped by the server');
    session = null;
    dispatch({ type: 'voice', voice: null });
  }
  enterVoice(chatRoomId, null, { rejoin: true }).catch((e) => warn(`rejoin failed: ${e.code || e.message}`));
}

// ---------------------------------------------------------------------------------------------
// Events: the reducer updates the state; here only the side effects on sockets and links.

/** Voice events seen, by name (the test hook tells a server with voice resume by them). */
const eventCounts = {};

function onVoiceEvent(ev) {
  eventCounts[ev.event] = (eventCounts[ev.event] || 0) + 1;
  const wasServerMuted = !!(state.voice && state.voice.serverMuted);
  dispatch({ type: 'event', msg: ev });
  if (ev.event === 'muteChanged' || ev.event === 'participantJoined') syncServerMutes();
  const mine = ev.event === 'muteChanged' && state.me && ev.user === state.me.userId && session && session.voiceRoomId === ev.voiceRoomId;
  if (mine && !!ev.serverMuted !== wasServerMuted) {
    toast(ev.serverMuted ? 'The host muted you for everyone. You can unmute once they allow it.' : 'The host allows you to speak again: unmute when you are ready.');
  }
  const chat = ev.chatRoomId;
  const me = state.me && state.me.userId;
  const s = session && session.voiceRoomId === ev.voiceRoomId ? session : null;
  // The joiner's offers come from this KVS client id: know it before they arrive.
  if (s && s.transport && ev.clientId && (ev.event === 'participantJoined' || ev.event === 'participantResumed')) s.transport.learnClientId(ev.user, ev.clientId);
  switch (ev.event) {
    case 'voiceStarted':
      if (!features.chat && !state.rooms.some((r) => r.roomId === chat)) addAwsRoom(chat);
      refreshVoiceRoom(chat);
      if (ev.master !== me) toast(`${nameOf(ev.master)} started a voice chat in ${roomName(state, chat)}`);
      break;
    case 'participantJoined': {
      const vr = state.voiceRooms[chat];
      if (!vr || vr.voiceRoomId !== ev.voiceRoomId) refreshVoiceRoom(chat);
      // A rejoin of someone we still had a link with: they call us (they are the later joiner),
      // and their offer from a new connection replaces the old link.
      break;
    }
    case 'participantLeft':
      if (s) {
        if (ev.user === me) {
          // Before our join's reply this is about an older participation (a reload, a reconnect).
          if (s.joining) log('Ignored our own participantLeft for an older connection');
          else if (ev.reason !== 'left' && ev.reason !== 'roomEnded' && app) rejoinAfterDrop(chat);
        } else {
          s.dropPeer(ev.user);
          const vr = state.voiceRooms[chat];
          if (vr && vr.voiceRoomId === ev.voiceRoomId && s.transport) {
            const listed = new Set(vr.participants.map((p) => p.userId));
            const linked = [...s.peers.keys()].filter((u) => !listed.has(u) && u !== ev.user).map((u) => ({ userId: u }));
            s.transport.updateRoom({ ...vr, participants: [...vr.participants, ...linked] });
          }
        }
      }
      break;
    case 'participantResumed':
      if (s && ev.user !== me) s.peerReturned(ev.user);
      break;
    case 'screenShareStopped':
      // The server ended our share (a host stopped it, the policy changed, we resumed from
      // another tab): stop sending it.
      if (s && ev.user === me && s.video.screen) {
        s.setVideo('screen', null).then(scheduleRender);
        if (ev.reason && ev.reason.kind !== 'stopped') toast('Your screen share was stopped.');
        else if (ev.reason && ev.reason.by !== me) toast(`${nameOf(ev.reason.by)} stopped your screen share.`);
      }
      break;
    case 'screenSharePolicyChanged':
      if (s && ev.by !== me) toast(ev.policy === 'hosts' ? 'Only the host and the room admin may share a screen now.' : 'Everyone in the voice chat may share a screen now.');
      break;
    case 'voiceEnded':
      if (s) {
        s.teardown('Voice room ended');
        session = null;
      }
      break;
    default:
      break;
  }
  if (chat === state.currentRoomId && ['participantJoined', 'participantLeft', 'participantReconnecting', 'participantResumed'].includes(ev.event)) refreshMembersSoon();
}

function wireEvents(conn) {
  for (const e of ['voiceStarted', 'participantJoined', 'participantLeft', 'participantReconnecting', 'participantResumed', 'muteChanged', 'masterChanged', 'voiceEnded', 'screenShareStarted', 'screenShareStopped', 'screenSharePolicyChanged']) {
    conn.on(e, onVoiceEvent);
  }
  for (const e of ['recordingStarted', 'recordingStopped']) conn.on(e, (ev) => recording.onEvent(ev));
  if (!features.chat) return;
  conn.on('joinRequested', (ev) => {
    dispatch({ type: 'event', msg: ev });
    toast(`${nameOf(ev.userId)} asks to join ${roomName(state, ev.roomId)}`);
  });
  conn.on('joinApproved', async (ev) => {
    if (ev.userId !== state.me.userId) return;
    await loadRooms();
    toast(`You were approved to join ${roomName(state, ev.roomId)}`);
    if (!state.currentRoomId) openRoom(ev.roomId);
  });
  conn.on('joinDenied', async (ev) => {
    if (ev.userId !== state.me.userId) return;
    await loadRooms();
    toast(`Your request to join ${roomName(state, ev.roomId)} was denied`, 'error');
  });
  // Not sent by every server version: where it exists, the room list is live without polling.
  conn.on('roomCreated', () => loadRooms().catch(() => {}));
  conn.on('presenceChanged', (ev) => dispatch({ type: 'event', msg: ev }));
  conn.on('memberJoined', (ev) => {
    dispatch({ type: 'event', msg: ev });
    if (ev.roomId === state.currentRoomId) refreshMembersSoon();
  });
  conn.on('memberRemoved', (ev) => {
    const mine = state.me && ev.userId === state.me.userId;
    const room = roomName(state, ev.roomId);
    if (mine && session && session.chatRoomId === ev.roomId) {
      session.teardown(`You were removed from ${room}`);
      session = null;
    }
    dispatch({ type: 'event', msg: ev });
    if (mine) toast(`You were removed from ${room}${ev.banned ? ' and cannot ask to join again' : ''}`, 'error');
  });
  conn.on('message', (ev) => {
    dispatch({ type: 'event', msg: ev });
    if (ev.roomId !== state.currentRoomId && ev.userId !== state.me.userId) toast(`${nameOf(ev.userId)} in ${roomName(state, ev.roomId)}: ${ev.text}`);
  });
}

// ---------------------------------------------------------------------------------------------
// Chat

async function loadRooms() {
  if (!features.chat) {
    await refreshKnownRooms();
    return;
  }
  if (!app) return;
  try {
    const data = await app.request('listRooms');
    dispatch({ type: 'rooms', rooms: data.rooms || [], nextCursor: data.nextCursor });
  } catch (e) {
    if (e.code === 'DISCONNECTED') throw e;
    toast(`Could not load the rooms. ${describeError(e)}`, 'error');
  }
}

// Lists come in pages (docs/protocol.md: `nextCursor`); "Show more" asks for the next one.

async function moreRooms() {
  if (!app || !state.roomsCursor) return;
  try {
    const data = await app.request('listRooms', { cursor: state.roomsCursor });
    dispatch({ type: 'rooms', rooms: data.rooms || [], nextCursor: data.nextCursor, more: true });
  } catch (e) {
    toast(`Could not load more rooms. ${describeError(e)}`, 'error');
  }
}

async function moreMembers() {
  const roomId = state.currentRoomId;
  if (!app || !roomId || !state.membersCursor) return;
  try {
    const r = await app.request('listMembers', { roomId, cursor: state.membersCursor });
    dispatch({ type: 'members', roomId, members: r.members || [], admin: amAdmin(state, roomId), nextCursor: r.nextCursor, more: true });
  } catch (e) {
    toast(`Could not load more members. ${describeError(e)}`, 'error');
  }
}

async function olderMessages() {
  const roomId = state.currentRoomId;
  if (!app || !roomId || !state.messagesCursor) return;
  try {
    const r = await app.request('getMessages', { roomId, cursor: state.messagesCursor });
    if (state.currentRoomId === roomId) dispatch({ type: 'messages', roomId, messages: r.messages || [], nextCursor: r.nextCursor, older: true });
  } catch (e) {
    toast(`Could not load older messages. ${describeError(e)}`, 'error');
  }
}

async function loadMembers(roomId) {
  if (!app || !features.chat) return;
  try {
    const r = await app.request('listMembers', { roomId });
    dispatch({ type: 'members', roomId, members: r.members || [], admin: amAdmin(state, roomId), nextCursor: r.nextCursor });
  } catch (e) {
    warn(`listMembers: ${e.code || e.message}`);
  }
}

let membersTimer = null;
/** Presence has no event of its own: re-list members shortly after anything that may change it. */
function refreshMembersSoon() {
  if (membersTimer) return;
  membersTimer = setTimeout(() => {
    membersTimer = null;
    if (state.currentRoomId) loadMembers(state.currentRoomId);
  }, 300);
}

async function openRoom(roomId) {
  if (!features.chat) {
    showAwsRoom(roomId);
    await refreshVoiceRoom(roomId);
    return;
  }
  dispatch({ type: 'openRoom', roomId });
  const epoch = voiceEpoch(state, roomId);
  const [members, messages, voice] = await Promise.allSettled([
    app.request('listMembers', { roomId }),
    app.request('getMessages', { roomId }),
    app.request('getVoiceRoom', { roomId }),
  ]);
  if (state.currentRoomId !== roomId) return;
  if (members.status === 'fulfilled') dispatch({ type: 'members', roomId, members: members.value.members || [], admin: amAdmin(state, roomId), nextCursor: members.value.nextCursor });
  else if (members.reason.code === 'DISCONNECTED') throw members.reason;
  else toast(`Could not load the members. ${describeError(members.reason)}`, 'error');
  if (messages.status === 'fulfilled') dispatch({ type: 'messages', roomId, messages: messages.value.messages || [], nextCursor: messages.value.nextCursor });
  if (voice.status === 'fulfilled') setVoiceRoom(roomId, voice.value.voiceRoom, epoch);
}

async function requestJoin(roomId) {
  try {
    const data = await app.request('requestJoin', { roomId });
    await loadRooms();
    if (data.state === 'approved') openRoom(roomId);
    else toast(`Join request sent to the admin of ${roomName(state, roomId)}. Waiting for approval…`);
  } catch (e) {
    toast(`Could not ask to join. ${describeError(e)}`, 'error');
  }
}

async function decide(roomId, userId, approve) {
  try {
    await app.request(approve ? 'approveJoin' : 'denyJoin', { roomId, userId });
    dispatch({ type: 'decided', roomId, userId, approve });
    toast(`${approve ? 'Approved' : 'Denied'} ${nameOf(userId)}`);
  } catch (e) {
    toast(`Could not ${approve ? 'approve' : 'deny'}. ${describeError(e)}`, 'error');
  }
}

/** The admin removes (or bans) a member, after a confirmation in plain words. */
async function moderate(roomId, userId, ban) {
  const who = nameOf(userId);
  const room = roomName(state, roomId);
  const question = ban
    ? `Ban ${who} from ${room}? They will be removed now, leave any voice chat here, and cannot ask to join again until you unban them.`
    : `Remove ${who} from ${room}? They will leave any voice chat here at once. They can ask to join again.`;
  if (!window.confirm(question)) return;
  try {
    await app.request(ban ? 'banMember' : 'removeMember', { roomId, userId });
    toast(`${ban ? 'Banned' : 'Removed'} ${who}`);
  } catch (e) {
    toast(`Could not ${ban ? 'ban' : 'remove'} ${who}. ${describeError(e)}`, 'error');
  }
}

/**
 * While signed in: the room list and the open room's members re-read every `features.pollMs`
 * (15 s self-hosted; 60 s on AWS, where each read is a Lambda invocation), a safety net beside
 * the events that carry those changes.
 */
let lastPollAt = 0;
setInterval(() => {
  if (!signedIn || !app || !features.chat || !features.pollMs || document.hidden) return;
  if (Date.now() - lastPollAt < features.pollMs - 1000) return;
  lastPollAt = Date.now();
  loadRooms().catch(() => {});
  if (state.currentRoomId) loadMembers(state.currentRoomId);
}, 15000);

// ---------------------------------------------------------------------------------------------
// AWS mode: no hello, no room list; chat rooms are opened by id and probed with getVoiceRoom.

let awsConnecting = null;

async function ensureAwsConnection() {
  if (app && app.isOpen()) return app;
  if (awsConnecting) return awsConnecting;
  awsConnecting = (async () => {
    dispatch({ type: 'connecting' });
    const url = wsUrl();
    const host = new URL(url).host;
    const conn = newConnection();
    try {
      await conn.open();
    } catch {
      throw new Error(`Could not connect to the voice API at ${host}: check webSocketUrl in config.json (the stack output WebSocketUrl), or your chat app refused the connection.`);
    }
    wireEvents(conn);
    conn.on('apiError', (ev) => toast(ev.text, 'error'));
    startKeepalive(conn);
    conn.onclose = () => onConnectionLost(conn);
    app = conn;
    log(`Connected to the voice API at ${host}`);
    dispatch({ type: 'online' });
    return conn;
  })();
  try {
    return await awsConnecting;
  } finally {
    awsConnecting = null;
  }
}

function addAwsRoom(roomId) {
  dispatch({ type: 'addRoom', room: { roomId, name: roomId, adminUserId: null, memberCount: null, myState: 'approved', voiceRoomId: null } });
}

function showAwsRoom(roomId) {
  dispatch({ type: 'openRoom', roomId });
  try {
    history.replaceState(null, '', `#room=${encodeURIComponent(roomId)}`);
  } catch {
    /* a sandboxed page: no deep link, nothing else lost */
  }
}

async function openAwsRoom(roomId) {
  const conn = await ensureAwsConnection();
  const epoch = voiceEpoch(state, roomId);
  const r = await conn.request('getVoiceRoom', { roomId });
  addAwsRoom(roomId);
  setVoiceRoom(roomId, r.voiceRoom, epoch);
  showAwsRoom(roomId);
}

async function refreshKnownRooms() {
  await Promise.all(state.rooms.map((r) => refreshVoiceRoom(r.roomId)));
}

function applyMode() {
  if (features.mode === 'aws' && features.hello) {
    // The stack is the chat app too: the self-hosted page, with a line saying where it talks to.
    document.body.classList.add('mode-aws');
    $('#login h2').after(
      h('p', {
        id: 'mode-note',
        className: 'muted',
        textContent: `This page talks to the voice and chat API at ${new URL(config.webSocketUrl).host} (AWS).`,
      }),
    );
    return;
  }
  if (features.hello) return;
  document.body.classList.add('mode-aws');
  const host = new URL(config.webSocketUrl).host;
  $('#login h2').textContent = "Open a chat room's voice chat";
  $('label[for="display-name"]').textContent = 'Chat room id';
  const input = $('#display-name');
  input.placeholder = 'the chat room id from your chat app';
  input.maxLength = 128;
  input.name = 'roomId';
  $('#login h2').after(
    h('p', {
      id: 'mode-note',
      className: 'muted',
      textContent: `This page talks to the voice API at ${host} (AWS). Your chat app says who you are and who may join a room; chat rooms, join requests and messages stay in the chat app.`,
    }),
  );
  $('.sidebar h2').textContent = 'Chat rooms';
  $('#rooms-empty').textContent = 'No chat room open yet.';
  $('#refresh-rooms').title = "Read these rooms' voice chat state again";
  $('label[for="room-name"]').textContent = 'Open another chat room';
  const other = $('#room-name');
  other.placeholder = 'Chat room id';
  other.maxLength = 128;
  $('#create-room-form button[type="submit"]').textContent = 'Open';
  $('#no-room p').textContent = 'Open a chat room by its id on the left.';
  const cols = $('#room .columns');
  cols.hidden = true;
  cols.after(
    h('p', {
      id: 'chat-elsewhere',
      className: 'card muted',
      textContent: 'Text chat, members and join requests are in your chat app. On AWS this page does voice only: the voice API serves the voice actions, nothing else.',
    }),
  );
  $('#end-voice').title = 'Ends the voice chat for everyone (its host or the chat room admin only)';
  const room = roomFromHash(location.hash);
  if (room && !input.value) {
    input.value = room;
    $('#hello-form').requestSubmit();
  }
}

function showConfigError(e) {
  warn(`config.json: ${e.message}`);
  configError = e;
  const err = $('#login-error');
  err.textContent = `This page is not configured: ${e.message}`;
  err.hidden = false;
  $('#connect-button').disabled = true;
  scheduleRender();
}

// ---------------------------------------------------------------------------------------------
// Sign in, sign out, start-up

function showApp() {
  signedIn = true;
  $('#login').hidden = true;
  $('#app').hidden = false;
  savePlace();
  scheduleRender();
}

/** Revokes every resume token of this user (a lost laptop, a shared computer), then signs out here. */
async function signOutEverywhere() {
  if (!window.confirm('Sign out on every browser and device? Anywhere you are still signed in will start over with a new name next time. You will be signed out here too.')) return;
  try {
    await app.request('signOutEverywhere');
  } catch (e) {
    toast(`Could not sign out everywhere. ${describeError(e)}`, 'error');
    return;
  }
  await signOut();
  toast('Signed out everywhere');
}

async function signOut() {
  const s = session;
  signedIn = false;
  if (s) {
    if (app) await app.request('leaveVoiceRoom', { voiceRoomId: s.voiceRoomId }, 3000).catch(() => {});
    s.teardown('signed out');
    session = null;
  }
  if (app) {
    const c = app;
    app = null;
    c.close();
  }
  saveJson(IDENTITY_KEY, null);
  saveJson(PLACE_KEY, null);
  savedPlace = '';
  dispatch({ type: 'signedOut' });
  $('#app').hidden = true;
  $('#login').hidden = false;
  $('#display-name').value = '';
  $('#connect-button').disabled = false;
  scheduleRender();
}

/** A stored identity: connect straight away, reopen the room, get back into voice. */
async function autoResume() {
  await configReady;
  if (!features.hello) return;
  const ident = loadJson(IDENTITY_KEY);
  if (!ident || !ident.resumeToken) return;
  const place = loadJson(PLACE_KEY);
  pendingPlace = place;
  $('#display-name').value = ident.name || '';
  const t0 = Date.now();
  signedIn = true;
  $('#login').hidden = true;
  $('#app').hidden = false;
  try {
    await restore(place);
    if (state.voice) log(`Back in voice ${Date.now() - t0} ms after the page loaded`);
  } catch (e) {
    warn(`resume after reload failed: ${e.message}`);
    if (app) {
      const c = app;
      app = null;
      c.close();
    }
    dispatch({ type: 'offline' });
    reconnectLoop();
  }
  savePlace();
  scheduleRender();
}

function wireUi() {
  $('#hello-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('#display-name').value.trim();
    const err = $('#login-error');
    err.hidden = true;
    if (!name) return;
    $('#connect-button').disabled = true;
    try {
      await configReady;
      if (features.hello) {
        // A typed name is a new sign-in: no stored token (Sign out cleared it).
        await connectSelfHosted(name);
        showApp();
        await loadRooms();
      } else {
        await openAwsRoom(name);
        showApp();
      }
    } catch (ex) {
      if (app) {
        const c = app;
        app = null;
        c.close();
      }
      dispatch({ type: 'offline' });
      err.textContent = features.hello ? `Could not connect. ${describeError(ex)}` : `Could not open chat room ${name}. ${describeError(ex)}`;
      err.hidden = false;
      $('#connect-button').disabled = false;
    }
  });
  $('#refresh-rooms').addEventListener('click', () => loadRooms().catch(() => {}));
  window.addEventListener('focus', () => {
    if (!app) return;
    if (!features.hello) {
      if (state.currentRoomId) refreshVoiceRoom(state.currentRoomId);
      return;
    }
    if (state.me) loadRooms().catch(() => {});
  });
  $('#create-room-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('#room-name');
    const name = input.value.trim();
    if (!name) return;
    if (!features.chat) {
      try {
        await openAwsRoom(name);
        input.value = '';
      } catch (ex) {
        toast(`Could not open chat room ${name}. ${describeError(ex)}`, 'error');
      }
      return;
    }
    try {
      const r = await app.request('createRoom', { name });
      input.value = '';
      await loadRooms();
      openRoom(r.roomId);
    } catch (ex) {
      toast(`Could not create the room. ${describeError(ex)}`, 'error');
    }
  });
  $('#message-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('#message-input');
    const text = input.value.trim();
    if (!text || !state.currentRoomId || !app) return;
    try {
      await app.request('sendMessage', { roomId: state.currentRoomId, text });
      input.value = '';
    } catch (ex) {
      toast(`Message not sent. ${describeError(ex)}`, 'error');
    }
  });
  $('#start-voice').addEventListener('click', () => withBusy(() => enterVoice(state.currentRoomId, null)));
  $('#join-voice').addEventListener('click', () => {
    const vr = state.voiceRooms[state.currentRoomId];
    if (vr) withBusy(() => enterVoice(state.currentRoomId, vr.voiceRoomId));
  });
  $('#mute-button').addEventListener('click', () => toggleMute());
  $('#participants').addEventListener('click', (e) => {
    const b = e.target.closest && e.target.closest('button[data-moderate]');
    if (b) serverMute(b.dataset.moderate, b.dataset.muted === 'true');
  });
  $('#camera-button').addEventListener('click', () => withBusy(() => toggleVideo('camera')));
  $('#screen-button').addEventListener('click', () => withBusy(() => toggleVideo('screen')));
  $('#share-policy-button').addEventListener('click', (e) => {
    const policy = e.currentTarget.dataset.policy;
    withBusy(() => setSharePolicy(policy));
  });
  $('#leave-voice').addEventListener('click', () => leaveVoice());
  $('#end-voice').addEventListener('click', () => endVoice(state.currentRoomId));
  $('#sign-out').addEventListener('click', () => signOut());
  $('#sign-out').after(h('button', { type: 'button', id: 'sign-out-everywhere', className: 'small', hidden: true, textContent: 'Sign out everywhere', title: 'Forget you on every browser and device, e.g. after losing a laptop', onclick: () => signOutEverywhere() }));
  $('#enable-audio').addEventListener('click', () => {
    const s = session;
    if (s) {
      if (s.audioCtx) s.audioCtx.resume().catch(() => {});
      for (const link of s.peers.values()) if (link.audioEl) link.audioEl.play().catch(() => {});
    }
    dispatch({ type: 'audioBlocked', blocked: false });
  });
}

// A small window into the client for the browser tests and for debugging by hand.
window.voiceDebug = {
  /** Test hook: what this browser records and uploads, and the room's recordings list. */
  recording: () => recording.test(),
  mode: () => features.mode,
  me: () => state.me,
  conn: () => state.conn,
  inVoice: () => !!(session && !session.ended),
  voicePhase: () => (state.voice ? state.voice.phase : null),
  voiceRoomId: () => (session ? session.voiceRoomId : null),
  muted: () => !!(session && session.muted),
  grantCount: () => (lastSession ? lastSession.grantCount : 0),
  refreshAt: () => (lastSession ? lastSession.refreshAt : null),
  peers: () =>
    session
      ? [...session.peers.values()].map((l) => ({
          userId: l.userId,
          role: l.role,
          connectionState: l.pc.connectionState,
          iceConnectionState: l.pc.iceConnectionState,
          hasRemoteAudio: !!l.remoteStream,
        }))
      : [],
  /** The last 32 peer connections made (closed ones included), not every one ever. */
  allPeerConnections: () => recentLinks.map((l) => ({ userId: l.userId, role: l.role, connectionState: l.pc.connectionState, turnUsers: l.pc.getConfiguration ? (l.pc.getConfiguration().iceServers || []).map((s) => s.username).filter(Boolean) : [] })),
  linksCreated: () => (session ? session.linksCreated : 0),
  iceRestarts: () => (session ? session.iceRestarts : 0),
  /** Test hook: an ICE restart on our link to `userId` (we must offer on it). */
  restartIce: (userId) => (session ? session.restartIce(userId) : false),
  /** The server's answer to `ping`: {ok} or {code} (UNKNOWN_ACTION: a server without ping). */
  ping: async () => {
    if (!app) return { code: 'DISCONNECTED' };
    try {
      await app.request('ping', {}, 5000);
      return { ok: true };
    } catch (e) {
      return { code: e.code };
    }
  },
  /**
   * Test hook: sends (or stops, `on` false) a screen track without asking the server, as a
   * page that ignores the rules would: receivers must not show it (they show a screen track
   * only from the announced sharer).
   */
  screenUnannounced: async (on = true) => {
    if (!session) return false;
    if (!on) return session.setVideo('screen', null).then(() => true);
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    await session.setVideo('screen', stream.getVideoTracks()[0]);
    return true;
  },
  /** Test hook: how many peer connections this session created, and its renegotiations. */
  renegotiations: () => (session ? session.renegotiations : 0),
  /** Test hook: our video tracks and, per peer, which of their video slots reach us. */
  video: () =>
    session
      ? {
          local: { camera: !!session.video.camera, screen: !!session.video.screen },
          remote: session.remoteVideos().map((r) => ({ userId: r.userId, slot: r.slot, readyState: r.track.readyState })),
          tiles: [...document.querySelectorAll('#video-stage figure, #video-tiles figure')].map((f) => ({ key: f.dataset.key, slot: f.dataset.slot, inStage: f.parentNode.id === 'video-stage' })),
        }
      : null,
  remoteStreams: () => {
    const out = {};
    if (session) for (const l of session.peers.values()) if (l.remoteStream) out[l.userId] = l.remoteStream;
    return out;
  },
  peerConnection: (userId) => (session && session.peers.get(userId) ? session.peers.get(userId).pc : null),
  audioElements: () =>
    [...document.querySelectorAll('#audio-sink audio')].map((a) => ({ userId: a.dataset.userId, muted: a.muted, paused: a.paused, hasStream: !!a.srcObject })),
  micTracks: () => (lastSession ? lastSession.stream.getAudioTracks().map((t) => ({ readyState: t.readyState, enabled: t.enabled })) : []),
  speaking: () => {
    const vr = session && state.voiceRooms[session.chatRoomId];
    return vr ? Object.fromEntries(vr.participants.map((p) => [p.userId, session.isSpeaking(p.userId)])) : {};
  },
  voiceRoom: (chatRoomId) => state.voiceRooms[chatRoomId || state.currentRoomId] || null,
  notice: () => {
    const n = state.notices[state.currentRoomId];
    return n ? n.text : null;
  },
  state: () => state,
  eventCounts: () => ({ ...eventCounts }),
  log: () => logLines.slice(),
};

wireUi();
autoResume();
