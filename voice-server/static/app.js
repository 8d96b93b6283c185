// Voice Chat web client: chat rooms (hello, rooms, join requests, members, messages) and voice
// rooms over WebRTC in a full mesh.
//
// Two modes, chosen by ./config.js from config.json next to index.html (docs/web-client.md):
// - self-hosted (no config.json): the voice-server that served the page is also the chat app;
//   chat, voice and the signaling relay share its /ws.
// - AWS ({"mode":"aws",...}): the voice actions go to the API Gateway WebSocket (the same action
//   names and replies, docs/lambda.md), signaling to Kinesis Video Streams; identity, rooms, join
//   requests, members and messages are the existing chat app's, so that part of the UI is
//   replaced by "open a chat room by id" and an explanation.
//
// Mesh rule (TEAM protocol): each participant is MASTER of its own channel and VIEWER on each
// earlier participant's channel. The viewer (later joiner) creates the RTCPeerConnection and
// sends the offer; the master answers. Signaling goes through ./signaling.js, whose transport
// (self-hosted relay or Kinesis Video Streams) is chosen by the grant's credentials.
//
// No inline scripts or handlers anywhere (the server's CSP forbids them): everything is wired
// here with addEventListener, and text is only ever set with textContent.

import { createTransport, refreshDelayMs } from './signaling.js';
import { apiGatewayErrorText, appSocketUrl, awsRefusalHint, loadClientConfig, modeFeatures, roomFromHash, SELF_HOSTED } from './config.js';

// ---------------------------------------------------------------------------------------------
// Mode: read once at start-up. Until config.json has been read the page is self-hosted; every
// handler that talks to a backend waits for `configReady` first.

let config = SELF_HOSTED;
let features = modeFeatures(SELF_HOSTED);
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

// ---------------------------------------------------------------------------------------------
// Small helpers

const $ = (sel) => document.querySelector(sel);

/** Creates an element; `props` are assigned (className, textContent, type, dataset...). */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'onclick') node.addEventListener('click', v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** Debug log kept for the test hook and written to the console (the original's log lines). */
const logLines = [];
function log(msg) {
  logLines.push({ at: Date.now(), level: 'info', msg });
  if (logLines.length > 1000) logLines.shift();
  console.log(`[voice] ${msg}`);
}
function warn(msg) {
  logLines.push({ at: Date.now(), level: 'warn', msg });
  if (logLines.length > 1000) logLines.shift();
  console.warn(`[voice] ${msg}`);
}

/** A refusal from the server (or a lost connection), carrying the wire error code. */
class ApiError extends Error {
  constructor(action, error) {
    super((error && error.message) || (error && error.code) || 'request failed');
    this.name = 'ApiError';
    this.action = action;
    this.code = (error && error.code) || 'UNKNOWN';
    this.retryable = !!(error && error.retryable);
  }
}

/** "message (CODE)" for showing a refusal to a person; on AWS with what the chat app must do. */
function describeError(e) {
  if (e instanceof ApiError) {
    const hint = features.hello ? null : awsRefusalHint(e.code);
    return hint ? `${e.message} (${e.code}). ${hint}` : `${e.message} (${e.code})`;
  }
  return e && e.message ? e.message : String(e);
}

// ---------------------------------------------------------------------------------------------
// The app WebSocket: requests with matched replies, pushed events, buffered signal events.

const REQUEST_TIMEOUT_MS = 15000;
const SIGNAL_BUFFER_MAX = 200;
const SIGNAL_BUFFER_AGE_MS = 30000;

class AppConnection {
  constructor(url, { requestTimeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    this.url = url;
    this.requestTimeoutMs = requestTimeoutMs;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = new Map();
    this.signalSubs = new Map();
    this.signalBuffer = [];
    this.onclose = () => {};
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url);
      this.ws = ws;
      let opened = false;
      ws.addEventListener('open', () => {
        opened = true;
        resolve();
      });
      ws.addEventListener('message', (e) => this.handle(e.data));
      ws.addEventListener('close', (e) => {
        for (const p of this.pending.values()) {
          clearTimeout(p.timer);
          p.reject(new ApiError(p.action, { code: 'DISCONNECTED', message: 'the connection to the server closed' }));
        }
        this.pending.clear();
        if (opened) this.onclose(e);
        else reject(new Error('Could not connect to the server.'));
      });
    });
  }

  isOpen() {
    return !!this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends one request; resolves with its `data`, rejects with ApiError. */
  request(action, fields = {}, timeoutMs = this.requestTimeoutMs) {
    return new Promise((resolve, reject) => {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
        reject(new ApiError(action, { code: 'DISCONNECTED', message: 'not connected to the server' }));
        return;
      }
      const requestId = `r${this.nextId++}`;
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new ApiError(action, { code: 'TIMEOUT', message: `no reply to ${action} within ${timeoutMs / 1000} s`, retryable: true }));
      }, timeoutMs);
      this.pending.set(requestId, { resolve, reject, timer, action });
      this.ws.send(JSON.stringify({ action, requestId, ...fields }));
    });
  }

  handle(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      warn('ignored a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg !== 'object') {
      warn('ignored a frame that is not a JSON object');
      return;
    }
    if (msg.type === 'reply') {
      const p = this.pending.get(msg.requestId);
      if (!p) {
        if (!msg.ok) warn(`server refused a request: ${msg.error && msg.error.code}`);
        return;
      }
      this.pending.delete(msg.requestId);
      clearTimeout(p.timer);
      if (msg.ok) p.resolve(msg.data || {});
      else p.reject(new ApiError(msg.action, msg.error));
    } else if (msg.type === 'event') {
      if (msg.event === 'signal') this.routeSignal(msg);
      else this.emit(msg.event, msg);
    } else {
      // API Gateway's own answer to a failed route ({"message": "Internal server error", ...}):
      // it names no request of ours, so it can only be reported.
      const text = apiGatewayErrorText(msg);
      if (text) {
        warn(text);
        this.emit('apiError', { text, frame: msg });
      }
    }
  }

  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, []);
    this.listeners.get(event).push(fn);
  }

  emit(event, msg) {
    for (const fn of this.listeners.get(event) || []) {
      try {
        fn(msg);
      } catch (e) {
        warn(`handler for ${event} failed: ${e.message}`);
        console.error(e);
      }
    }
  }

  /** Signals for a voice room go to its transport; ones that arrive first wait in a buffer. */
  routeSignal(msg) {
    const fn = this.signalSubs.get(msg.voiceRoomId);
    if (fn) {
      fn(msg);
      return;
    }
    const now = Date.now();
    this.signalBuffer = this.signalBuffer.filter((s) => now - s.at < SIGNAL_BUFFER_AGE_MS);
    if (this.signalBuffer.length >= SIGNAL_BUFFER_MAX) this.signalBuffer.shift();
    this.signalBuffer.push({ at: now, msg });
  }

  /** Subscribes a transport to one voice room's signals; returns the unsubscribe function. */
  onSignal(voiceRoomId, fn) {
    this.signalSubs.set(voiceRoomId, fn);
    const now = Date.now();
    const early = this.signalBuffer.filter((s) => s.msg.voiceRoomId === voiceRoomId && now - s.at < SIGNAL_BUFFER_AGE_MS);
    this.signalBuffer = this.signalBuffer.filter((s) => s.msg.voiceRoomId !== voiceRoomId);
    for (const s of early) fn(s.msg);
    return () => {
      if (this.signalSubs.get(voiceRoomId) === fn) this.signalSubs.delete(voiceRoomId);
    };
  }
}

// ---------------------------------------------------------------------------------------------
// State

const state = {
  app: null,
  me: null, // {userId, name}
  rooms: [],
  currentRoomId: null,
  members: [], // of the current room
  messages: [], // of the current room
  requests: new Map(), // roomId -> Map(userId -> name): pending join requests (admin)
  names: new Map(), // userId -> display name
  voiceRooms: new Map(), // chatRoomId -> VoiceRoomView (active) | null
  notices: new Map(), // chatRoomId -> {text, kind}
  session: null, // the VoiceSession we are in, if any
  busy: false,
};

/** Every peer link ever made, for the test hook (closed ones stay to prove they closed). */
const allLinks = [];
let lastSession = null;

function nameOf(userId) {
  if (state.me && userId === state.me.userId) return state.me.name;
  return state.names.get(userId) || userId;
}

function currentRoom() {
  return state.rooms.find((r) => r.roomId === state.currentRoomId) || null;
}

/** AWS: there is no hello; the chat app's user id comes back in our first grant or room. */
function learnMe(userId) {
  if (state.me || !userId) return;
  state.me = { userId, name: userId };
  state.names.set(userId, userId);
  setConnStatus(`Connected as ${userId}`, true);
}

function amAdmin(roomId) {
  const r = state.rooms.find((x) => x.roomId === roomId);
  return !!(r && state.me && r.adminUserId === state.me.userId);
}

// ---------------------------------------------------------------------------------------------
// Microphone

/** Opens the microphone; throws an Error whose message is what a person should read. */
async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error('Microphone unavailable: this page is not a secure context. Open it over https:// or on localhost.');
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    log('Microphone access granted');
    return stream;
  } catch (e) {
    warn(`getUserMedia failed: ${e.name}: ${e.message}`);
    if (e.name === 'NotAllowedError' || e.name === 'SecurityError' || e.name === 'PermissionDeniedError') {
      throw new Error('Microphone access denied. Allow microphone access for this site (the icon in the address bar, or browser settings → Privacy → Microphone), then try again.');
    }
    if (e.name === 'NotFoundError' || e.name === 'DevicesNotFoundError' || e.name === 'OverconstrainedError') {
      throw new Error('No microphone found. Connect a microphone (and check it is enabled in your system settings), then try again.');
    }
    if (e.name === 'NotReadableError' || e.name === 'TrackStartError') {
      throw new Error('The microphone is in use by another application or could not be started. Close other apps using it and try again.');
    }
    throw new Error(`Could not open the microphone: ${e.name}: ${e.message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Voice session: one voice room we are in; owns the mic, the transport and every peer link.

const SPEAKING_THRESHOLD = 0.02;
const SPEAKING_HOLD_MS = 350;
const LEVEL_INTERVAL_MS = 50;
const MAX_OFFER_RETRIES = 3;

function toRtcIceServers(list) {
  return (list || []).map((s) => {
    const out = { urls: s.urls };
    if (s.username) out.username = s.username;
    if (s.credential) out.credential = s.credential;
    return out;
  });
}

/** Peak absolute sample of an analyser's current window (0..1). */
function peakOf(meter) {
  meter.an.getFloatTimeDomainData(meter.buf);
  let peak = 0;
  for (let i = 0; i < meter.buf.length; i++) {
    const v = Math.abs(meter.buf[i]);
    if (v > peak) peak = v;
  }
  return peak;
}

class VoiceSession {
  constructor(app, chatRoomId, voiceRoomId, stream) {
    this.app = app;
    this.chatRoomId = chatRoomId;
    this.voiceRoomId = voiceRoomId;
    this.stream = stream;
    this.grant = null;
    this.grantCount = 0;
    this.transport = null;
    this.peers = new Map(); // userId -> link
    this.earlyCandidates = new Map(); // userId -> [candidate] before the link exists
    this.retries = new Map(); // userId -> offers retried
    this.muted = false;
    this.ended = false;
    this.endReason = null;
    this.refreshTimer = null;
    this.levelTimer = null;
    this.audioCtx = null;
    this.localMeter = null;
    this.localLevel = { peak: 0, lastLoudAt: 0 };
  }

  /** getVoiceCredentials, then the transport, then offers to every earlier participant. */
  async join() {
    const grant = await this.app.request('getVoiceCredentials', { voiceRoomId: this.voiceRoomId });
    if (this.ended) return;
    this.applyGrant(grant);
    // No await between the grant and the subscription, so no signal can slip past us.
    this.transport = createTransport(grant, {
      app: this.app,
      log: (m) => this.transportLog(m),
      // Kinesis Video Streams only (the relay ignores them): the region of config.json when the
      // credentials name none, and who is behind a viewer client id we do not know yet.
      region: config.region,
      fetchRoom: () => this.fetchRoom(),
    });
    this.transport.onOffer((from, desc) => this.onOffer(from, desc));
    this.transport.onAnswer((from, desc) => this.onAnswer(from, desc));
    this.transport.onCandidate((from, cand) => this.onCandidate(from, cand));
    this.transport.onError((e) => this.onSignalingError(e));
    await this.transport.connect();
    if (this.ended) return;
    log(`Joined voice room ${this.voiceRoomId} as ${grant.userId}; ${grant.peers.length} earlier participant(s) to call`);
    this.startMeters();
    for (const peer of grant.peers) this.call(peer);
    this.scheduleRefresh(grant);
  }

  applyGrant(grant) {
    this.grant = grant;
    this.grantCount += 1;
    learnMe(grant.userId);
    if (grant.room) setVoiceRoom(this.chatRoomId, grant.room);
  }

  /** The room as the server has it now (the KVS transport asks when a viewer is unknown). */
  async fetchRoom() {
    const r = await this.app.request('getVoiceRoom', { roomId: this.chatRoomId });
    const view = r.voiceRoom && r.voiceRoom.voiceRoomId === this.voiceRoomId ? r.voiceRoom : null;
    if (view && !this.ended) {
      setVoiceRoom(this.chatRoomId, view);
      renderAll();
    }
    return view;
  }

  transportLog(msg) {
    log(msg);
    // A KVS channel (re)connected: a signaling problem shown earlier is over.
    const n = state.notices.get(this.chatRoomId);
    if (/^Signaling client connected/.test(msg) && n && n.tag === 'signaling') notice(this.chatRoomId, null);
  }

  onSignalingError(e) {
    warn(`signaling: ${e.message}`);
    // Self-hosted: the console only, as before. AWS: a channel that cannot connect (expired or
    // refused credentials, KVS unreachable) is worth telling the person.
    if (features.hello || this.ended) return;
    if (['SIGNALING_UNAVAILABLE', 'KVS_STATUS', 'SIGNALING'].includes(e.code)) {
      notice(this.chatRoomId, `Voice signaling problem${e.retryable ? ' (retrying)' : ''}: ${e.message}`, 'error', 'signaling');
    }
  }

  // --- credential refresh -------------------------------------------------------------------

  /** Refresh ~5 min before expiry, or at 80 % of the lifetime when that is short. */
  scheduleRefresh(grant) {
    clearTimeout(this.refreshTimer);
    const delay = refreshDelayMs(grant.expiresAt, Date.now(), grant.issuedAt);
    this.refreshAt = Date.now() + delay;
    this.refreshTimer = setTimeout(() => this.refresh(grant.expiresAt), delay);
  }

  async refresh(previousExpiry) {
    if (this.ended) return;
    try {
      const grant = await this.app.request('getVoiceCredentials', { voiceRoomId: this.voiceRoomId });
      if (this.ended) return;
      this.applyGrant(grant);
      this.transport.updateGrant(grant);
      log(`Voice credentials refreshed (valid until ${new Date(grant.expiresAt).toLocaleTimeString()})`);
      // A peer whose connection failed or never started gets a fresh offer.
      for (const peer of grant.peers) {
        const link = this.peers.get(peer.userId);
        if (!link || ['failed', 'closed'].includes(link.pc.connectionState)) this.call(peer);
      }
      this.scheduleRefresh(grant);
    } catch (e) {
      if (this.ended) return;
      if (['VOICE_ROOM_ENDED', 'VOICE_ROOM_NOT_FOUND', 'NOT_PARTICIPANT', 'NOT_APPROVED', 'NOT_MEMBER'].includes(e.code)) {
        this.teardown(e.code === 'VOICE_ROOM_ENDED' || e.code === 'VOICE_ROOM_NOT_FOUND' ? 'Voice room ended' : `You can no longer take part in this voice chat: ${describeError(e)}`);
        return;
      }
      const left = previousExpiry - Date.now();
      warn(`credential refresh failed (${describeError(e)}); ${Math.round(left / 1000)} s left`);
      const retryIn = Math.max(1000, Math.min(15000, left / 3));
      this.refreshTimer = setTimeout(() => this.refresh(previousExpiry), retryIn);
    }
  }

  // --- peer links ---------------------------------------------------------------------------

  newLink(userId, role, iceServers) {
    const old = this.peers.get(userId);
    if (old) this.closeLink(old);
    const pc = new RTCPeerConnection({ iceServers: toRtcIceServers(iceServers) });
    const link = {
      userId,
      role, // our role on this link: 'viewer' = we offered, 'master' = we answered
      pc,
      pending: this.earlyCandidates.get(userId) || [],
      remoteStream: null,
      audioEl: null,
      meter: null,
      peak: 0,
      lastLoudAt: 0,
      createdAt: Date.now(),
    };
    this.earlyCandidates.delete(userId);
    this.peers.set(userId, link);
    allLinks.push(link);
    for (const track of this.stream.getAudioTracks()) pc.addTrack(track, this.stream);
    pc.addEventListener('icecandidate', (e) => {
      if (!e.candidate || this.ended) return;
      this.transport.sendCandidate(userId, e.candidate.toJSON()).then(
        () => log(`ICE candidate sent to ${nameOf(userId)}`),
        (err) => warn(`ICE candidate to ${nameOf(userId)} not sent: ${err.message}`),
      );
    });
    pc.addEventListener('connectionstatechange', () => {
      log(`Peer connection state: ${pc.connectionState} (${nameOf(userId)})`);
      if (pc.connectionState === 'connected') this.retries.delete(userId);
      if (pc.connectionState === 'failed' && role === 'viewer' && !this.ended) this.retryCall(userId);
      renderVoice();
    });
    pc.addEventListener('track', (e) => this.onTrack(link, e));
    return link;
  }

  /** We are the later joiner: create the connection and send the offer. */
  async call(peer) {
    const who = nameOf(peer.userId);
    try {
      const link = this.newLink(peer.userId, 'viewer', peer.iceServers);
      const offer = await link.pc.createOffer();
      await link.pc.setLocalDescription(offer);
      if (this.ended || this.peers.get(peer.userId) !== link) return;
      await this.transport.sendOffer(peer.userId, link.pc.localDescription);
      log(`SDP offer sent to ${who}`);
    } catch (e) {
      warn(`calling ${who} failed: ${e.message}`);
    }
    renderVoice();
  }

  retryCall(userId) {
    const n = (this.retries.get(userId) || 0) + 1;
    if (n > MAX_OFFER_RETRIES) {
      warn(`giving up on ${nameOf(userId)} after ${MAX_OFFER_RETRIES} retries`);
      return;
    }
    this.retries.set(userId, n);
    const peer = this.grant && this.grant.peers.find((p) => p.userId === userId);
    if (!peer) return;
    setTimeout(() => {
      const link = this.peers.get(userId);
      if (!this.ended && link && link.pc.connectionState === 'failed') this.call(peer);
    }, 1000 * n);
  }

  /** We are the master of our channel: a later joiner called us. */
  async onOffer(from, desc) {
    if (this.ended) return;
    log(`SDP offer received from ${nameOf(from)}`);
    const link = this.newLink(from, 'master', this.grant.self.iceServers);
    await link.pc.setRemoteDescription(desc);
    await this.flushCandidates(link);
    const answer = await link.pc.createAnswer();
    await link.pc.setLocalDescription(answer);
    if (this.ended || this.peers.get(from) !== link) return;
    await this.transport.sendAnswer(from, link.pc.localDescription);
    log(`SDP answer sent to ${nameOf(from)}`);
    renderVoice();
  }

  async onAnswer(from, desc) {
    if (this.ended) return;
    log(`SDP answer received from ${nameOf(from)}`);
    const link = this.peers.get(from);
    if (!link || link.role !== 'viewer' || link.pc.signalingState !== 'have-local-offer') {
      warn(`ignored an unexpected answer from ${nameOf(from)}`);
      return;
    }
    await link.pc.setRemoteDescription(desc);
    await this.flushCandidates(link);
  }

  async onCandidate(from, cand) {
    if (this.ended) return;
    log(`ICE candidate received from ${nameOf(from)}`);
    const link = this.peers.get(from);
    if (!link) {
      const q = this.earlyCandidates.get(from) || [];
      if (q.length < 100) q.push(cand);
      this.earlyCandidates.set(from, q);
      return;
    }
    if (!link.pc.remoteDescription) {
      link.pending.push(cand);
      return;
    }
    try {
      await link.pc.addIceCandidate(cand);
    } catch (e) {
      warn(`bad ICE candidate from ${nameOf(from)}: ${e.message}`);
    }
  }

  async flushCandidates(link) {
    const queued = link.pending.splice(0);
    for (const c of queued) {
      try {
        await link.pc.addIceCandidate(c);
      } catch (e) {
        warn(`bad ICE candidate from ${nameOf(link.userId)}: ${e.message}`);
      }
    }
  }

  onTrack(link, e) {
    if (e.track.kind !== 'audio' || this.ended) return;
    const stream = (e.streams && e.streams[0]) || new MediaStream([e.track]);
    log(`Received remote audio track from ${nameOf(link.userId)}`);
    link.remoteStream = stream;
    if (!link.audioEl) {
      // Must be an unmuted, playing element: without it Chrome delivers no remote audio at all.
      const el = h('audio', { autoplay: true, muted: false, dataset: { userId: link.userId } });
      $('#audio-sink').append(el);
      link.audioEl = el;
    }
    link.audioEl.srcObject = stream;
    link.audioEl.play().catch((err) => {
      warn(`audio playback blocked: ${err.message}`);
      $('#enable-audio').hidden = false;
    });
    if (this.audioCtx) {
      try {
        link.meter = this.makeMeter(stream);
      } catch (err) {
        warn(`no level meter for ${nameOf(link.userId)}: ${err.message}`);
      }
    }
    renderVoice();
  }

  closeLink(link) {
    try {
      link.pc.close();
    } catch {
      /* already closed */
    }
    if (link.meter) {
      try {
        link.meter.src.disconnect();
      } catch {
        /* context closed */
      }
    }
    if (link.audioEl) {
      link.audioEl.srcObject = null;
      link.audioEl.remove();
    }
    if (this.peers.get(link.userId) === link) this.peers.delete(link.userId);
  }

  dropPeer(userId) {
    const link = this.peers.get(userId);
    this.earlyCandidates.delete(userId);
    if (link) {
      this.closeLink(link);
      log(`Closed the connection to ${nameOf(userId)}`);
    }
  }

  // --- levels (speaking indicator) ----------------------------------------------------------

  makeMeter(stream) {
    const src = this.audioCtx.createMediaStreamSource(stream);
    const an = this.audioCtx.createAnalyser();
    an.fftSize = 1024;
    src.connect(an);
    return { src, an, buf: new Float32Array(an.fftSize) };
  }

  startMeters() {
    try {
      this.audioCtx = new AudioContext();
      if (this.audioCtx.state === 'suspended') this.audioCtx.resume().catch(() => {});
      this.localMeter = this.makeMeter(this.stream);
    } catch (e) {
      warn(`audio level meters unavailable: ${e.message}`);
      this.audioCtx = null;
      return;
    }
    this.levelTimer = setInterval(() => this.sampleLevels(), LEVEL_INTERVAL_MS);
  }

  sampleLevels() {
    const now = Date.now();
    if (this.localMeter) {
      const p = this.muted ? 0 : peakOf(this.localMeter);
      this.localLevel.peak = p;
      if (p > SPEAKING_THRESHOLD) this.localLevel.lastLoudAt = now;
    }
    for (const link of this.peers.values()) {
      if (!link.meter) continue;
      link.peak = peakOf(link.meter);
      if (link.peak > SPEAKING_THRESHOLD) link.lastLoudAt = now;
    }
    updateSpeaking();
  }

  isSpeaking(userId) {
    const now = Date.now();
    if (state.me && userId === state.me.userId) return now - this.localLevel.lastLoudAt < SPEAKING_HOLD_MS;
    const link = this.peers.get(userId);
    return !!link && now - link.lastLoudAt < SPEAKING_HOLD_MS;
  }

  // --- mute / end ---------------------------------------------------------------------------

  setMuted(muted) {
    this.muted = muted;
    for (const t of this.stream.getAudioTracks()) t.enabled = !muted;
    log(muted ? 'Microphone muted' : 'Microphone unmuted');
  }

  /** Closes everything this session holds; safe to call twice. */
  teardown(reason) {
    if (this.ended) return;
    this.ended = true;
    this.endReason = reason;
    clearTimeout(this.refreshTimer);
    clearInterval(this.levelTimer);
    for (const link of [...this.peers.values()]) this.closeLink(link);
    this.peers.clear();
    this.earlyCandidates.clear();
    if (this.transport) this.transport.close();
    for (const t of this.stream.getTracks()) t.stop();
    if (this.audioCtx) this.audioCtx.close().catch(() => {});
    log(`Voice session closed: ${reason}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Voice actions (buttons)

function setVoiceRoom(chatRoomId, view) {
  state.voiceRooms.set(chatRoomId, view && view.status === 'active' ? view : null);
  // KVS names viewers by client id: the transport learns who joined (and who left) from here.
  const s = state.session;
  if (s && s.transport && view && view.status === 'active' && view.voiceRoomId === s.voiceRoomId) s.transport.updateRoom(view);
}

/** The room's notice line; `tag` marks notices that a later success may clear. */
function notice(chatRoomId, text, kind = 'info', tag = null) {
  if (text) state.notices.set(chatRoomId, { text, kind, tag });
  else state.notices.delete(chatRoomId);
  renderVoice();
}

async function withBusy(fn) {
  if (state.busy) return;
  state.busy = true;
  renderVoice();
  try {
    await fn();
  } finally {
    state.busy = false;
    renderVoice();
  }
}

/** Opens the mic and joins `voiceRoomId`; the mic comes first so we never join without one. */
async function enterVoice(chatRoomId, voiceRoomIdOrCreate) {
  if (state.session) {
    notice(chatRoomId, 'You are already in a voice chat. Leave it first.', 'error');
    return;
  }
  let stream;
  try {
    stream = await openMicrophone();
  } catch (e) {
    notice(chatRoomId, e.message, 'error');
    return;
  }
  let voiceRoomId = voiceRoomIdOrCreate;
  if (!voiceRoomId) {
    try {
      const view = await state.app.request('createVoiceRoom', { roomId: chatRoomId });
      learnMe(view.masterUserId);
      setVoiceRoom(chatRoomId, view);
      voiceRoomId = view.voiceRoomId;
      log(`Voice room ${voiceRoomId} created`);
    } catch (e) {
      if (e.code === 'ALREADY_ACTIVE') {
        // Someone started one at the same moment: join theirs.
        const r = await state.app.request('getVoiceRoom', { roomId: chatRoomId }).catch(() => null);
        if (r && r.voiceRoom && r.voiceRoom.status === 'active') {
          setVoiceRoom(chatRoomId, r.voiceRoom);
          voiceRoomId = r.voiceRoom.voiceRoomId;
        }
      }
      if (!voiceRoomId) {
        for (const t of stream.getTracks()) t.stop();
        notice(chatRoomId, `Could not start voice chat: ${describeError(e)}`, 'error');
        return;
      }
    }
  }
  const session = new VoiceSession(state.app, chatRoomId, voiceRoomId, stream);
  state.session = session;
  lastSession = session;
  notice(chatRoomId, null);
  try {
    await session.join();
  } catch (e) {
    session.teardown(`join failed: ${describeError(e)}`);
    if (state.session === session) state.session = null;
    // We got credentials, so the server counts us in: do not stay a silent participant.
    if (session.grant) state.app.request('leaveVoiceRoom', { voiceRoomId }).catch((err) => warn(`leaveVoiceRoom: ${describeError(err)}`));
    notice(chatRoomId, `Could not join voice chat: ${describeError(e)}`, 'error');
  }
  renderAll();
}

function endSession(reason, kind = 'info') {
  const s = state.session;
  if (!s) return;
  s.teardown(reason);
  state.session = null;
  $('#enable-audio').hidden = true;
  notice(s.chatRoomId, reason, kind);
  renderAll();
}

async function toggleMute() {
  const s = state.session;
  if (!s) return;
  const muted = !s.muted;
  s.setMuted(muted);
  markMuted(s.chatRoomId, state.me.userId, muted);
  renderVoice();
  try {
    const view = await state.app.request('setMute', { voiceRoomId: s.voiceRoomId, muted });
    if (state.session === s) setVoiceRoom(s.chatRoomId, view);
  } catch (e) {
    // The microphone is muted locally either way; others just do not see the icon change.
    notice(s.chatRoomId, `Could not tell the others about your mute state: ${describeError(e)}`, 'error');
  }
  renderVoice();
}

async function leaveVoice() {
  const s = state.session;
  if (!s) return;
  try {
    await state.app.request('leaveVoiceRoom', { voiceRoomId: s.voiceRoomId });
  } catch (e) {
    warn(`leaveVoiceRoom: ${describeError(e)}`);
  }
  endSession('You left the voice chat.');
  refreshVoiceRoom(s.chatRoomId);
}

async function endVoice(chatRoomId) {
  const vr = state.voiceRooms.get(chatRoomId);
  if (!vr) return;
  try {
    const view = await state.app.request('endVoiceRoom', { voiceRoomId: vr.voiceRoomId });
    setVoiceRoom(chatRoomId, view);
    if (state.session && state.session.voiceRoomId === vr.voiceRoomId) endSession('Voice room ended');
    else notice(chatRoomId, 'Voice room ended');
  } catch (e) {
    notice(chatRoomId, `Could not end the voice chat: ${describeError(e)}`, 'error');
  }
}

async function refreshVoiceRoom(chatRoomId) {
  try {
    const r = await state.app.request('getVoiceRoom', { roomId: chatRoomId });
    setVoiceRoom(chatRoomId, r.voiceRoom);
    const n = state.notices.get(chatRoomId);
    if (n && n.tag === 'voice-state') state.notices.delete(chatRoomId);
  } catch (e) {
    warn(`getVoiceRoom: ${describeError(e)}`);
    // On AWS this is the only way we learn that the chat app stopped knowing us (e.g. after a
    // reconnect): say so.
    if (!features.hello) notice(chatRoomId, `Could not read this room's voice chat: ${describeError(e)}`, 'error', 'voice-state');
  }
  renderAll();
}

function markMuted(chatRoomId, userId, muted) {
  const vr = state.voiceRooms.get(chatRoomId);
  if (!vr) return;
  const p = vr.participants.find((x) => x.userId === userId);
  if (p) p.muted = muted;
}

// ---------------------------------------------------------------------------------------------
// Voice events

function onVoiceEvent(ev) {
  const chat = ev.chatRoomId;
  const s = state.session && state.session.voiceRoomId === ev.voiceRoomId ? state.session : null;
  switch (ev.event) {
    case 'voiceStarted': {
      // AWS: the chat app's other rooms are not listed until opened; one with voice is worth it.
      if (!features.chat && !state.rooms.some((r) => r.roomId === chat)) addAwsRoom(chat);
      if (!state.voiceRooms.get(chat) || state.voiceRooms.get(chat).voiceRoomId !== ev.voiceRoomId) {
        setVoiceRoom(chat, {
          voiceRoomId: ev.voiceRoomId,
          chatRoomId: chat,
          status: 'active',
          masterUserId: ev.master,
          participants: [{ userId: ev.master, muted: false }],
        });
        refreshVoiceRoom(chat);
      }
      if (ev.master !== (state.me && state.me.userId)) {
        toast(`${nameOf(ev.master)} started a voice chat in ${roomName(chat)}`);
        if (state.notices.get(chat) && state.notices.get(chat).text === 'Voice room ended') notice(chat, null);
      }
      break;
    }
    case 'participantJoined': {
      const vr = state.voiceRooms.get(chat);
      if (vr && vr.voiceRoomId === ev.voiceRoomId) {
        if (!vr.participants.some((p) => p.userId === ev.user)) vr.participants.push({ userId: ev.user, muted: ev.muted });
      } else {
        refreshVoiceRoom(chat);
      }
      // The joiner calls us (it is the viewer on our channel): nothing to do but wait.
      break;
    }
    case 'participantLeft': {
      const vr = state.voiceRooms.get(chat);
      if (vr && vr.voiceRoomId === ev.voiceRoomId) vr.participants = vr.participants.filter((p) => p.userId !== ev.user);
      if (s) {
        if (ev.user === state.me.userId) {
          if (ev.reason !== 'left') endSession('You were disconnected from the voice chat.', 'error');
        } else {
          s.dropPeer(ev.user);
          if (vr && vr.voiceRoomId === ev.voiceRoomId && s.transport) {
            // Tell the transport who is left. Anyone we have a link with stays, even if their
            // participantJoined has not arrived yet (their offer can come first over KVS).
            const listed = new Set(vr.participants.map((p) => p.userId));
            const linked = [...s.peers.keys()].filter((u) => !listed.has(u) && u !== ev.user).map((u) => ({ userId: u }));
            s.transport.updateRoom({ ...vr, participants: [...vr.participants, ...linked] });
          }
        }
      }
      break;
    }
    case 'muteChanged':
      markMuted(chat, ev.user, ev.muted);
      break;
    case 'masterChanged': {
      const vr = state.voiceRooms.get(chat);
      if (vr && vr.voiceRoomId === ev.voiceRoomId) vr.masterUserId = ev.master;
      break;
    }
    case 'voiceEnded': {
      const vr = state.voiceRooms.get(chat);
      if (vr && vr.voiceRoomId === ev.voiceRoomId) state.voiceRooms.set(chat, null);
      if (s) endSession('Voice room ended');
      else notice(chat, 'Voice room ended');
      break;
    }
    default:
      break;
  }
  renderAll();
}

// ---------------------------------------------------------------------------------------------
// Chat

function roomName(roomId) {
  const r = state.rooms.find((x) => x.roomId === roomId);
  return r ? r.name : roomId;
}

async function loadRooms() {
  if (!features.chat) {
    await refreshKnownRooms();
    return;
  }
  try {
    const data = await state.app.request('listRooms');
    state.rooms = data.rooms || [];
    for (const r of state.rooms) {
      const known = state.voiceRooms.get(r.roomId);
      if (!r.voiceRoomId) state.voiceRooms.set(r.roomId, null);
      else if (!known || known.voiceRoomId !== r.voiceRoomId) state.voiceRooms.delete(r.roomId);
    }
  } catch (e) {
    toast(`Could not load rooms: ${describeError(e)}`, 'error');
  }
  renderRooms();
}

async function openRoom(roomId) {
  if (!features.chat) {
    showAwsRoom(roomId);
    await refreshVoiceRoom(roomId);
    return;
  }
  state.currentRoomId = roomId;
  state.members = [];
  state.messages = [];
  renderAll();
  const [members, messages, voice] = await Promise.allSettled([
    state.app.request('listMembers', { roomId }),
    state.app.request('getMessages', { roomId }),
    state.app.request('getVoiceRoom', { roomId }),
  ]);
  if (state.currentRoomId !== roomId) return;
  if (members.status === 'fulfilled') {
    state.members = members.value.members || [];
    for (const m of state.members) state.names.set(m.userId, m.name);
    const pending = new Map();
    for (const m of state.members) if (m.state === 'pending') pending.set(m.userId, m.name);
    if (amAdmin(roomId)) state.requests.set(roomId, pending);
  } else {
    toast(`Could not load members: ${describeError(members.reason)}`, 'error');
  }
  if (messages.status === 'fulfilled') {
    state.messages = messages.value.messages || [];
    for (const m of state.messages) if (m.name) state.names.set(m.userId, m.name);
  }
  if (voice.status === 'fulfilled') setVoiceRoom(roomId, voice.value.voiceRoom);
  renderAll();
}

async function requestJoin(roomId) {
  try {
    const data = await state.app.request('requestJoin', { roomId });
    await loadRooms();
    if (data.state === 'approved') openRoom(roomId);
    else toast(`Join request sent to the admin of ${roomName(roomId)}. Waiting for approval…`);
  } catch (e) {
    toast(`Could not request to join: ${describeError(e)}`, 'error');
  }
}

async function decide(roomId, userId, approve) {
  try {
    await state.app.request(approve ? 'approveJoin' : 'denyJoin', { roomId, userId });
    const reqs = state.requests.get(roomId);
    if (reqs) reqs.delete(userId);
    if (state.currentRoomId === roomId) {
      const m = state.members.find((x) => x.userId === userId);
      if (m) {
        if (approve) m.state = 'approved';
        else state.members = state.members.filter((x) => x.userId !== userId);
      }
    }
    toast(`${approve ? 'Approved' : 'Denied'} ${nameOf(userId)}`);
  } catch (e) {
    toast(`Could not ${approve ? 'approve' : 'deny'}: ${describeError(e)}`, 'error');
  }
  renderAll();
}

function wireChatEvents(app) {
  app.on('joinRequested', (ev) => {
    state.names.set(ev.userId, ev.name);
    if (!state.requests.has(ev.roomId)) state.requests.set(ev.roomId, new Map());
    state.requests.get(ev.roomId).set(ev.userId, ev.name);
    toast(`${ev.name} asks to join ${roomName(ev.roomId)}`);
    renderAll();
  });
  app.on('joinApproved', async (ev) => {
    if (ev.userId !== state.me.userId) return;
    await loadRooms();
    toast(`You were approved to join ${roomName(ev.roomId)}`);
    if (!state.currentRoomId) openRoom(ev.roomId);
  });
  app.on('joinDenied', async (ev) => {
    if (ev.userId !== state.me.userId) return;
    await loadRooms();
    toast(`Your request to join ${roomName(ev.roomId)} was denied`, 'error');
  });
  app.on('memberJoined', (ev) => {
    state.names.set(ev.userId, ev.name);
    const r = state.rooms.find((x) => x.roomId === ev.roomId);
    if (ev.roomId === state.currentRoomId) {
      const m = state.members.find((x) => x.userId === ev.userId);
      if (m) m.state = 'approved';
      else state.members.push({ userId: ev.userId, name: ev.name, state: 'approved', isAdmin: false, online: true });
      if (r) r.memberCount = state.members.filter((x) => x.state === 'approved').length;
    }
    const reqs = state.requests.get(ev.roomId);
    if (reqs) reqs.delete(ev.userId);
    renderAll();
  });
  app.on('message', (ev) => {
    if (ev.name) state.names.set(ev.userId, ev.name);
    if (ev.roomId !== state.currentRoomId) {
      if (ev.userId !== state.me.userId) toast(`${ev.name} in ${roomName(ev.roomId)}: ${ev.text}`);
      return;
    }
    state.messages.push(ev);
    if (state.messages.length > 200) state.messages.shift();
    renderMessages();
  });
  wireVoiceEvents(app);
}

/** The voice events, which both deployments send (docs/protocol.md, "Events"). */
function wireVoiceEvents(app) {
  for (const e of ['voiceStarted', 'participantJoined', 'participantLeft', 'muteChanged', 'masterChanged', 'voiceEnded']) {
    app.on(e, onVoiceEvent);
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering

function toast(text, kind = 'info') {
  const t = h('div', { className: `toast toast-${kind}`, textContent: text });
  $('#toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 4000);
}

function renderAll() {
  renderRooms();
  renderRoom();
  renderVoice();
}

function renderRooms() {
  const list = $('#rooms');
  list.replaceChildren();
  $('#rooms-empty').hidden = state.rooms.length > 0;
  for (const r of state.rooms) {
    const mine = r.myState;
    const isAdmin = state.me && r.adminUserId === state.me.userId;
    const pendingCount = (state.requests.get(r.roomId) || new Map()).size;
    const voiceActive = !!state.voiceRooms.get(r.roomId) || (r.voiceRoomId && state.voiceRooms.get(r.roomId) !== null);
    let action;
    if (mine === 'approved') {
      action = h('button', { type: 'button', className: 'small', textContent: 'Open', onclick: () => openRoom(r.roomId) });
    } else if (mine === 'pending') {
      action = h('button', { type: 'button', className: 'small', textContent: 'Requested', disabled: true });
    } else {
      action = h('button', { type: 'button', className: 'small primary', textContent: 'Request to join', onclick: () => requestJoin(r.roomId) });
    }
    const li = h(
      'li',
      { className: `room-item${r.roomId === state.currentRoomId ? ' active' : ''}`, dataset: { roomId: r.roomId } },
      h(
        'div',
        { className: 'room-main' },
        h('span', { className: 'room-name', textContent: r.name }),
        h(
          'span',
          { className: 'room-meta' },
          r.memberCount == null ? null : `${r.memberCount} member${r.memberCount === 1 ? '' : 's'}`,
          isAdmin ? h('span', { className: 'pill', textContent: 'admin' }) : null,
          mine === 'pending' ? h('span', { className: 'pill pill-warn', textContent: 'pending' }) : null,
          voiceActive ? h('span', { className: 'pill pill-live', textContent: 'voice' }) : null,
          isAdmin && pendingCount ? h('span', { className: 'pill pill-warn', textContent: `${pendingCount} request${pendingCount === 1 ? '' : 's'}` }) : null,
        ),
      ),
      action,
    );
    list.append(li);
  }
  const ind = $('#voice-indicator');
  if (state.session) {
    ind.hidden = false;
    ind.textContent = `In voice: ${roomName(state.session.chatRoomId)}${state.session.muted ? ' (muted)' : ''}`;
  } else {
    ind.hidden = true;
  }
}

function renderRoom() {
  const room = currentRoom();
  $('#room').hidden = !room;
  $('#no-room').hidden = !!room;
  if (!room) return;
  $('#room-title').textContent = room.name;
  // Members
  const members = $('#members');
  members.replaceChildren();
  for (const m of state.members.filter((x) => x.state === 'approved')) {
    members.append(
      h(
        'li',
        { className: 'member', dataset: { userId: m.userId } },
        h('span', { className: `dot ${m.online === false ? 'dot-off' : 'dot-on'}` }),
        h('span', { className: 'member-name', textContent: m.name }),
        state.me && m.userId === state.me.userId ? h('span', { className: 'muted', textContent: ' (you)' }) : null,
        m.isAdmin || m.userId === room.adminUserId ? h('span', { className: 'pill', textContent: 'admin' }) : null,
      ),
    );
  }
  // Join requests (admin only)
  const reqs = amAdmin(room.roomId) ? state.requests.get(room.roomId) || new Map() : new Map();
  $('#requests-section').hidden = reqs.size === 0;
  const rl = $('#requests');
  rl.replaceChildren();
  for (const [userId, name] of reqs) {
    rl.append(
      h(
        'li',
        { className: 'request', dataset: { userId } },
        h('span', { className: 'member-name', textContent: name }),
        h(
          'span',
          { className: 'buttons' },
          h('button', { type: 'button', className: 'small primary', textContent: 'Approve', onclick: () => decide(room.roomId, userId, true) }),
          h('button', { type: 'button', className: 'small danger', textContent: 'Deny', onclick: () => decide(room.roomId, userId, false) }),
        ),
      ),
    );
  }
  renderMessages();
}

function renderMessages() {
  const ul = $('#messages');
  const atBottom = ul.scrollHeight - ul.scrollTop - ul.clientHeight < 40;
  ul.replaceChildren();
  for (const m of state.messages) {
    const at = m.at ? new Date(m.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
    ul.append(
      h(
        'li',
        { className: `message${state.me && m.userId === state.me.userId ? ' own' : ''}` },
        h('span', { className: 'message-head' }, h('strong', { textContent: m.name || nameOf(m.userId) }), h('time', { textContent: at })),
        h('span', { className: 'message-text', textContent: m.text }),
      ),
    );
  }
  if (atBottom) ul.scrollTop = ul.scrollHeight;
}

function show(id, visible) {
  $(id).hidden = !visible;
}

function renderVoice() {
  const room = currentRoom();
  if (!room) return;
  const chat = room.roomId;
  const vr = state.voiceRooms.get(chat) || null;
  const s = state.session;
  const inHere = !!(s && s.chatRoomId === chat);
  const inElsewhere = !!(s && !inHere);
  const busy = state.busy;

  const pill = $('#voice-state');
  const status = $('#voice-status');
  if (inHere) {
    pill.textContent = s.muted ? 'In voice · muted' : 'In voice';
    pill.className = 'pill pill-live';
    status.textContent = s.transport ? `You are in the voice chat (${vr ? vr.participants.length : 1} participant${vr && vr.participants.length === 1 ? '' : 's'}).` : 'Joining…';
  } else if (vr) {
    pill.textContent = 'Voice active';
    pill.className = 'pill pill-live';
    status.textContent = `${nameOf(vr.masterUserId)} is hosting a voice chat with ${vr.participants.length} participant${vr.participants.length === 1 ? '' : 's'}.`;
  } else {
    pill.textContent = 'No voice chat';
    pill.className = 'pill';
    status.textContent = 'Nobody is talking here. Start a voice chat and the others in this room can join.';
  }
  if (inElsewhere) status.textContent += ` You are in voice in ${roomName(s.chatRoomId)}.`;

  show('#start-voice', !vr && !s);
  show('#join-voice', !!vr && !s);
  show('#mute-button', inHere);
  show('#leave-voice', inHere);
  // On AWS we cannot tell who administers the chat room: offer End to all, the Lambda decides.
  show('#end-voice', !!vr && (inHere || amAdmin(chat) || (state.me && vr.masterUserId === state.me.userId) || !features.knowsAdmins));
  for (const id of ['#start-voice', '#join-voice']) $(id).disabled = busy;
  if (inHere) {
    const mb = $('#mute-button');
    mb.textContent = s.muted ? 'Unmute' : 'Mute';
    mb.classList.toggle('active', s.muted);
    mb.setAttribute('aria-pressed', String(s.muted));
  }

  const n = state.notices.get(chat);
  const msg = $('#voice-message');
  msg.hidden = !n;
  msg.textContent = n ? n.text : '';
  msg.className = `notice${n && n.kind === 'error' ? ' notice-error' : ''}`;

  const ul = $('#participants');
  ul.replaceChildren();
  if (!vr) return;
  for (const p of vr.participants) {
    const isMe = state.me && p.userId === state.me.userId;
    const link = inHere && !isMe ? s.peers.get(p.userId) : null;
    let conn = null;
    if (inHere && !isMe) {
      const cs = link ? link.pc.connectionState : 'waiting';
      conn = h('span', { className: `conn conn-${cs}`, textContent: cs, title: 'Peer connection state' });
    }
    const muted = isMe && inHere ? s.muted : p.muted;
    ul.append(
      h(
        'li',
        { className: 'participant', dataset: { userId: p.userId } },
        h('span', { className: 'speaking-dot', title: 'Speaking' }),
        h('span', { className: 'member-name', textContent: nameOf(p.userId) }),
        isMe ? h('span', { className: 'muted', textContent: ' (you)' }) : null,
        p.userId === vr.masterUserId ? h('span', { className: 'pill', textContent: 'host' }) : null,
        h('span', { className: `mute-state${muted ? ' is-muted' : ''}`, textContent: muted ? 'muted' : 'mic on' }),
        conn,
      ),
    );
  }
  updateSpeaking();
}

function updateSpeaking() {
  const s = state.session;
  for (const li of document.querySelectorAll('#participants .participant')) {
    li.classList.toggle('speaking', !!(s && !s.ended && s.isSpeaking(li.dataset.userId)));
  }
}

// ---------------------------------------------------------------------------------------------
// Start-up and wiring

function wsUrl() {
  return appSocketUrl(config, location);
}

function setConnStatus(text, on) {
  const el = $('#connection-status');
  el.textContent = text;
  el.className = `status ${on ? 'status-on' : 'status-off'}`;
}

const RESUME_KEY = 'voiceChat.resume';

/** Opens the WebSocket and says hello; a resume token from this tab keeps the same user id. */
async function connect(name) {
  const app = new AppConnection(wsUrl());
  await app.open();
  let resumeToken = null;
  try {
    const saved = JSON.parse(sessionStorage.getItem(RESUME_KEY) || 'null');
    if (saved && saved.name === name) resumeToken = saved.resumeToken;
  } catch {
    /* storage unavailable: a new user each time */
  }
  const me = await app.request('hello', resumeToken ? { name, resumeToken } : { name });
  try {
    if (me.resumeToken) sessionStorage.setItem(RESUME_KEY, JSON.stringify({ name, resumeToken: me.resumeToken }));
  } catch {
    /* ignore */
  }
  app.onclose = () => onConnectionLost(name);
  state.app = app;
  state.me = { userId: me.userId, name: me.name };
  state.names.set(me.userId, me.name);
  wireChatEvents(app);
  setConnStatus(`Connected as ${me.name}`, true);
  $('#banner').hidden = true;
  log(`Connected to the server as ${me.name} (${me.userId})`);
  return app;
}

/**
 * The socket closed: voice cannot go on (the server drops us from it); reconnect with backoff.
 * On AWS also after API Gateway's 2 h connection limit; the new connection is a new one for the
 * chat app too (see refreshVoiceRoom's NOT_IDENTIFIED notice).
 */
function onConnectionLost(name) {
  const what = features.hello ? 'the server' : 'the voice API';
  setConnStatus('Disconnected', false);
  const b = $('#banner');
  b.textContent = `Connection to ${what} lost. Reconnecting…`;
  b.hidden = false;
  if (state.session) endSession(`Disconnected from ${what}; voice chat closed.`, 'error');
  let attempt = 0;
  const retry = async () => {
    attempt += 1;
    try {
      if (features.hello) {
        await connect(name);
        await loadRooms();
        if (state.currentRoomId) await openRoom(state.currentRoomId);
      } else {
        await ensureAwsConnection();
        await refreshKnownRooms();
      }
      toast('Reconnected');
    } catch {
      const delay = Math.min(10000, 1000 * 2 ** Math.min(attempt, 4));
      b.textContent = `Connection to ${what} lost. Retrying in ${Math.round(delay / 1000)} s…`;
      setTimeout(retry, delay);
    }
  };
  setTimeout(retry, 500);
}

// ---------------------------------------------------------------------------------------------
// AWS mode: no hello, no room list; chat rooms are opened by id and probed with getVoiceRoom.

let awsConnecting = null;

/** The API Gateway WebSocket, opened once and reopened after a loss. */
async function ensureAwsConnection() {
  if (state.app && state.app.isOpen()) return state.app;
  if (awsConnecting) return awsConnecting;
  awsConnecting = (async () => {
    const url = wsUrl();
    const host = new URL(url).host;
    const app = new AppConnection(url, { requestTimeoutMs: features.requestTimeoutMs });
    try {
      await app.open();
    } catch {
      throw new Error(`Could not connect to the voice API at ${host}: check webSocketUrl in config.json (the stack output WebSocketUrl), or your chat app refused the connection.`);
    }
    wireVoiceEvents(app);
    app.on('apiError', (ev) => toast(ev.text, 'error'));
    // API Gateway closes a connection idle for 10 minutes; a call in progress sends nothing on it.
    const keepalive = setInterval(() => {
      const room = (state.session && state.session.chatRoomId) || state.currentRoomId;
      if (state.app === app && room) refreshVoiceRoom(room);
    }, features.keepaliveMs);
    app.onclose = () => {
      clearInterval(keepalive);
      onConnectionLost(null);
    };
    state.app = app;
    setConnStatus(state.me ? `Connected as ${state.me.name}` : 'Connected to the voice API', true);
    $('#banner').hidden = true;
    log(`Connected to the voice API at ${host}`);
    return app;
  })();
  try {
    return await awsConnecting;
  } finally {
    awsConnecting = null;
  }
}

function addAwsRoom(roomId) {
  if (state.rooms.some((r) => r.roomId === roomId)) return;
  // The chat app knows the name, the admin and the members; we know the id.
  state.rooms.push({ roomId, name: roomId, adminUserId: null, memberCount: null, myState: 'approved', voiceRoomId: null });
  renderRooms();
}

function showAwsRoom(roomId) {
  state.currentRoomId = roomId;
  state.members = [];
  state.messages = [];
  try {
    history.replaceState(null, '', `#room=${encodeURIComponent(roomId)}`);
  } catch {
    /* a sandboxed page: no deep link, nothing else lost */
  }
  renderAll();
}

/** Connects if needed and opens `roomId` if the voice API lets us see its voice state. */
async function openAwsRoom(roomId) {
  const app = await ensureAwsConnection();
  // The probe: NOT_IDENTIFIED / CHAT_ROOM_NOT_FOUND / NOT_MEMBER / NOT_APPROVED come back here,
  // with the connection kept open, so that trying again after the chat app caught up works.
  const r = await app.request('getVoiceRoom', { roomId });
  addAwsRoom(roomId);
  setVoiceRoom(roomId, r.voiceRoom);
  showAwsRoom(roomId);
}

async function refreshKnownRooms() {
  await Promise.all(state.rooms.map((r) => refreshVoiceRoom(r.roomId)));
}

/** Turns the self-hosted page into the AWS one (labels, hidden chat, explanations). */
function applyMode() {
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
  $('#end-voice').title = 'Ends the voice chat for everyone (its host or the chat room admin only; others are refused with NOT_ALLOWED)';
  const room = roomFromHash(location.hash);
  if (room && !input.value) {
    input.value = room;
    // A deep link (#room=<id>, also what a reload keeps): open it straight away.
    $('#hello-form').requestSubmit();
  }
}

/** config.json exists but cannot be used: say what to fix; there is nothing to connect to. */
function showConfigError(e) {
  warn(`config.json: ${e.message}`);
  const err = $('#login-error');
  err.textContent = `This page is not configured: ${e.message}`;
  err.hidden = false;
  $('#connect-button').disabled = true;
  setConnStatus('Not configured', false);
}

function wireUi() {
  $('#hello-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    // Self-hosted: a display name. AWS: a chat room id (applyMode relabels the field).
    const name = $('#display-name').value.trim();
    const err = $('#login-error');
    err.hidden = true;
    if (!name) return;
    $('#connect-button').disabled = true;
    try {
      await configReady;
      if (features.hello) {
        await connect(name);
        $('#login').hidden = true;
        $('#app').hidden = false;
        await loadRooms();
        renderAll();
      } else {
        await openAwsRoom(name);
        $('#login').hidden = true;
        $('#app').hidden = false;
      }
    } catch (ex) {
      err.textContent = features.hello ? `Could not connect: ${describeError(ex)}` : `Could not open chat room ${name}: ${describeError(ex)}`;
      err.hidden = false;
      $('#connect-button').disabled = false;
    }
  });
  $('#refresh-rooms').addEventListener('click', () => loadRooms());
  // Coming back to this window (the two-window case): someone may have created a room meanwhile.
  window.addEventListener('focus', () => {
    if (!features.hello) {
      // AWS: only the open room's voice state (each request is a Lambda invocation).
      if (state.app && state.currentRoomId) refreshVoiceRoom(state.currentRoomId);
      return;
    }
    if (state.app && state.me) loadRooms();
  });
  $('#create-room-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('#room-name');
    const name = input.value.trim();
    if (!name) return;
    if (!features.chat) {
      // AWS: "Open" a chat room of the chat app by its id.
      try {
        await openAwsRoom(name);
        input.value = '';
      } catch (ex) {
        toast(`Could not open chat room ${name}: ${describeError(ex)}`, 'error');
      }
      return;
    }
    try {
      const r = await state.app.request('createRoom', { name });
      input.value = '';
      await loadRooms();
      openRoom(r.roomId);
    } catch (ex) {
      toast(`Could not create the room: ${describeError(ex)}`, 'error');
    }
  });
  $('#message-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = $('#message-input');
    const text = input.value.trim();
    if (!text || !state.currentRoomId) return;
    try {
      await state.app.request('sendMessage', { roomId: state.currentRoomId, text });
      input.value = '';
    } catch (ex) {
      toast(`Message not sent: ${describeError(ex)}`, 'error');
    }
  });
  $('#start-voice').addEventListener('click', () => withBusy(() => enterVoice(state.currentRoomId, null)));
  $('#join-voice').addEventListener('click', () => {
    const vr = state.voiceRooms.get(state.currentRoomId);
    if (vr) withBusy(() => enterVoice(state.currentRoomId, vr.voiceRoomId));
  });
  $('#mute-button').addEventListener('click', () => toggleMute());
  $('#leave-voice').addEventListener('click', () => leaveVoice());
  $('#end-voice').addEventListener('click', () => endVoice(state.currentRoomId));
  $('#enable-audio').addEventListener('click', () => {
    const s = state.session;
    if (s) {
      if (s.audioCtx) s.audioCtx.resume().catch(() => {});
      for (const link of s.peers.values()) if (link.audioEl) link.audioEl.play().catch(() => {});
    }
    $('#enable-audio').hidden = true;
  });
}

// A small, read-only window into the client for the browser tests and for debugging by hand.
window.voiceDebug = {
  mode: () => features.mode,
  me: () => state.me,
  inVoice: () => !!(state.session && !state.session.ended),
  voiceRoomId: () => (state.session ? state.session.voiceRoomId : null),
  muted: () => !!(state.session && state.session.muted),
  grantCount: () => (lastSession ? lastSession.grantCount : 0),
  refreshAt: () => (lastSession ? lastSession.refreshAt : null),
  peers: () =>
    state.session
      ? [...state.session.peers.values()].map((l) => ({
          userId: l.userId,
          role: l.role,
          connectionState: l.pc.connectionState,
          iceConnectionState: l.pc.iceConnectionState,
          hasRemoteAudio: !!l.remoteStream,
        }))
      : [],
  allPeerConnections: () => allLinks.map((l) => ({ userId: l.userId, role: l.role, connectionState: l.pc.connectionState })),
  remoteStreams: () => {
    const out = {};
    if (state.session) for (const l of state.session.peers.values()) if (l.remoteStream) out[l.userId] = l.remoteStream;
    return out;
  },
  peerConnection: (userId) => (state.session && state.session.peers.get(userId) ? state.session.peers.get(userId).pc : null),
  audioElements: () =>
    [...document.querySelectorAll('#audio-sink audio')].map((a) => ({ userId: a.dataset.userId, muted: a.muted, paused: a.paused, hasStream: !!a.srcObject })),
  micTracks: () => (lastSession ? lastSession.stream.getAudioTracks().map((t) => ({ readyState: t.readyState, enabled: t.enabled })) : []),
  speaking: () => {
    const s = state.session;
    const vr = s && state.voiceRooms.get(s.chatRoomId);
    return vr ? Object.fromEntries(vr.participants.map((p) => [p.userId, s.isSpeaking(p.userId)])) : {};
  },
  voiceRoom: (chatRoomId) => state.voiceRooms.get(chatRoomId || state.currentRoomId) || null,
  notice: () => {
    const n = state.notices.get(state.currentRoomId);
    return n ? n.text : null;
  },
  log: () => logLines.map((l) => l.msg),
};

wireUi();
