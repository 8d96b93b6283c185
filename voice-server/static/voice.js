// One voice room we are in: the microphone, the signaling transport and one RTCPeerConnection per
// other participant (the mesh rule: we offer to every earlier participant, later ones offer to
// us). Every browser API and every piece of the page comes in as a dependency, so this module
// loads under node:test with fakes (tests/browser/voice.test.mjs).
//
// Every new link and every ICE restart uses the freshest ICE servers: the transport's
// `iceServersFor(userId)` where it has one (current KVS TURN credentials), else the latest grant's.
//
// Media-path recovery (docs/web-client.md, "Reconnect"): a link that goes `disconnected` for
// `DISCONNECTED_GRACE_MS` or `failed` gets an ICE restart from the side that offers on it (fresh
// ICE servers from the latest grant, `restartIce()` and a new offer on the same connection); if
// that does not bring it back within `ICE_RESTART_WAIT_MS`, the link is rebuilt (a new
// RTCPeerConnection, the old one closed). A renegotiation or ICE restart from the other side
// arrives as an offer for the same remote DTLS fingerprint and is answered on the existing link;
// only an offer from a new remote connection replaces it. Offers per peer are limited
// (`OFFERS_PER_WINDOW` per `OFFER_WINDOW_MS`), excess ones dropped. Replaced and ended links are
// closed and released at once.
//
// Every offer we send (first call, renegotiation, ICE restart) waits at most `ANSWER_WAIT_MS` for
// its answer: then the same offer goes out again on the same link, and if that one is not answered
// either the link is closed and rebuilt. An answer says which offer it answers (`offer`: the
// offer's SDP origin); one for an earlier offer or connection is ignored.
//
// Video (docs/web-client.md, "Video and screen sharing"): every link carries one audio and two
// video transceivers (camera, screen; media.js VIDEO_SLOTS), created by the side that offers.
// Turning the camera or a screen share on or off replaces the sender's track, flips the
// transceiver's direction (sendrecv / recvonly) and renegotiates on the same RTCPeerConnection.
// Offers only ever go from a link's viewer to its master (the relay and KVS both enforce that),
// so a master with a change asks its viewer for a new offer over the link's negotiated control
// data channel ("renegotiate"); the SDP itself still goes through the signaling transport (in
// AWS mode KVS, paced). Each video sender is capped by RTCRtpSender.setParameters from the
// number of peers it sends to (media.js videoCaps).

import { VIDEO_SLOTS, videoCaps, videoTransceivers, directionFor, receives, preferredVideoCodecs, preferredAudioCodecs, headerExtensionsToNegotiate } from './media.js';

const SPEAKING_THRESHOLD = 0.02;
const SPEAKING_HOLD_MS = 350;
const LEVEL_INTERVAL_MS = 50;
const MAX_REBUILDS = 3;
const DISCONNECTED_GRACE_MS = 2500;
export const ICE_RESTART_WAIT_MS = 8000;
export const OFFERS_PER_WINDOW = 6;
const OFFER_WINDOW_MS = 10000;
/**
 * Renegotiations (our offers, or our requests for one) we send per link per OFFER_WINDOW_MS:
 * one below the peer's OFFERS_PER_WINDOW, which also counts the link's first offer. Changes
 * beyond it wait and go out together in one later renegotiation, so a quick series of
 * camera/screen toggles is never dropped by the peer's limit (a dropped offer would leave the
 * link without the change).
 */
export const RENEGOTIATIONS_PER_WINDOW = OFFERS_PER_WINDOW - 1;
/**
 * How long an offer we sent waits for its answer before the page acts (sends the same offer
 * again; after a second miss, rebuilds the link). An answer normally takes one to two seconds
 * (KVS delivers each way within a second; the peer creates its answer at once). The slowest
 * answer that is still coming: a peer making a new connection first asks GetIceServerConfig,
 * retried for up to ~6.8 s when KVS throttles it (signaling.js ICE_RETRY_DELAYS_MS), and its
 * answer may queue behind its own paced KVS messages (~1 s). 9 s waits that out, so a re-send is
 * rare when nothing was lost, and at one re-send per 9 s the page stays well inside the peer's
 * OFFERS_PER_WINDOW per OFFER_WINDOW_MS (every offer we send counts, see offerWait). A lost
 * answer costs at most 2 × 9 s (+ the rebuild's short delay) before a fresh connection.
 */
export const ANSWER_WAIT_MS = 9000;

/**
 * Which offer an SDP is: its origin line's session id and version (`o=- <id> <version> ...`),
 * different for every RTCPeerConnection and every changed offer of one. A master puts it on its
 * answer (`offer`), so the offering side can tell an answer to an earlier offer or connection.
 */
export function offerId(sdp) {
  const m = /^o=\S+ (\S+) (\S+) /m.exec(String(sdp || ''));
  return m ? `${m[1]} ${m[2]}` : null;
}

/**
 * The per-peer offer window shared by what we admit and what we send: `times` kept to those
 * within OFFER_WINDOW_MS of `now` (`recent`), and how long until another fits under `limit`
 * (`wait`, 0 if it fits now; else when the oldest leaves the window, with 50 ms to spare).
 */
function offerWindow(times, now, limit) {
  const recent = (times || []).filter((t) => now - t < OFFER_WINDOW_MS);
  const wait = recent.length < limit ? 0 : OFFER_WINDOW_MS - (now - recent[0]) + 50;
  return { recent, wait };
}

/** Grant ICE server entries as RTCPeerConnection wants them. */
function toRtcIceServers(list) {
  return (list || []).map((s) => {
    const out = { urls: s.urls };
    if (s.username) out.username = s.username;
    if (s.credential) out.credential = s.credential;
    return out;
  });
}

/**
 * The RTCPeerConnection configuration for `list` (grant ICE servers). `max-bundle`: every peer is
 * this web client, which bundles, so all m-lines share one transport and the ICE candidates a
 * renegotiation offer repeats are listed once instead of once per m-line (audio, two video, data):
 * about 1.5 KB less base64 per camera offer in a KVS room (docs/web-client.md, "Offer sizes").
 * setConfiguration must repeat it: a bundle policy that differs from the constructor's throws.
 */
export function rtcConfig(list) {
  return { iceServers: toRtcIceServers(list), bundlePolicy: 'max-bundle' };
}

/** The DTLS fingerprint of an SDP: the same for every offer of one RTCPeerConnection. */
export function sdpFingerprint(sdp) {
  const m = /^a=fingerprint:(.+)$/m.exec(String(sdp || ''));
  return m ? m[1].trim() : null;
}

/** Opens the microphone; throws an Error whose message is what a person should read. */
export async function openMicrophone(mediaDevices, { log = () => {}, warn = () => {} } = {}) {
  if (!mediaDevices || !mediaDevices.getUserMedia) {
    throw new Error('Microphone unavailable: this page is not a secure context. Open it over https:// or on localhost.');
  }
  try {
    const stream = await mediaDevices.getUserMedia({ audio: true, video: false });
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
    throw new Error(`Could not open the microphone: ${e.name}`);
  }
}

function peakOf(meter) {
  meter.an.getFloatTimeDomainData(meter.buf);
  let peak = 0;
  for (let i = 0; i < meter.buf.length; i++) {
    const v = Math.abs(meter.buf[i]);
    if (v > peak) peak = v;
  }
  return peak;
}

/**
 * deps: app() (the current AppConnection: request, onSignal), createTransport(grant, opts),
 * refreshDelayMs(expiresAt, now, issuedAt), RTCPeerConnection, MediaStream, AudioContext
 * (optional), attachAudio(userId, stream) → element, detachAudio(el), onAudioBlocked(),
 * onGrant(grant), onChange(), onEnded(reason, kind) (the server took us out), onLink(link) (a
 * new link, for the debug hook), onSignalingError(e), onTransportLog(msg), onLevels(),
 * nameOf(userId), log, warn, region, fetchRoom(),
 * setTimeout/clearTimeout/setInterval/clearInterval, now.
 */
export class VoiceSession {
  constructor(deps, chatRoomId, voiceRoomId, stream) {
    this.d = {
      setTimeout: (...a) => setTimeout(...a),
      clearTimeout: (t) => clearTimeout(t),
      setInterval: (...a) => setInterval(...a),
      clearInterval: (t) => clearInterval(t),
      now: () => Date.now(),
      log: () => {},
      warn: () => {},
      nameOf: (u) => u,
      onChange: () => {},
      onGrant: () => {},
      onEnded: () => {},
      onLink: () => {},
      onAudioBlocked: () => {},
      ...deps,
    };
    this.chatRoomId = chatRoomId;
    this.voiceRoomId = voiceRoomId;
    this.stream = stream;
    this.grant = null;
    this.grantCount = 0;
    this.transport = null;
    this.peers = new Map(); // userId -> link
    this.earlyCandidates = new Map();
    this.rebuilds = new Map(); // userId -> rebuilds since the last 'connected'
    this.offerTimes = new Map(); // userId -> recent offer arrival times
    this.askTimes = new Map(); // userId -> recent "renegotiate" requests (control channel)
    this.offersSent = new Map(); // userId -> recent times we sent them an offer (any link)
    this.rebuildTimers = new Map(); // userId -> the pending rebuild's timer
    this.muted = false;
    // Peers a moderator muted: their audio is not played here (the mute is enforced by the
    // receivers, since audio goes peer to peer).
    this.silenced = new Set();
    this.ended = false;
    this.endReason = null;
    this.refreshTimer = null;
    this.levelTimer = null;
    this.audioCtx = null;
    this.localMeter = null;
    this.localLevel = { peak: 0, lastLoudAt: 0 };
    this.iceRestarts = 0;
    this.linksCreated = 0;
    this.video = { camera: null, screen: null }; // our own video tracks, or null
    this.renegotiations = 0;
  }

  log(m) { this.d.log(m); }
  warn(m) { this.d.warn(m); }
  name(u) { return this.d.nameOf(u); }

  /** getVoiceCredentials (join, or resume after a reconnect), then signaling and the offers. */
  async join() {
    const grant = await this.requestGrant();
    if (this.ended) return;
    await this.start(grant);
  }

  /**
   * After a reconnect (new app connection): a fresh grant on it, a new transport, every link
   * rebuilt (ours to earlier participants now; later ones call us). Throws the ApiError of
   * getVoiceCredentials, so the caller can fall back to joining another voice room.
   */
  async resume() {
    const grant = await this.requestGrant();
    if (this.ended) return;
    if (this.keepsTransport(grant)) {
      // KVS signaling and the media never went through the app connection: both outlived its
      // loss (e.g. API Gateway's 2-hour cut). The same participation goes on: new credentials
      // and client id for the signaling sockets (rotated make-before-break), the links kept
      // (those that broke meanwhile are restored as after a refresh), and offers that arrived
      // while we waited for the grant (later joiners told of our resume) answered on them.
      this.applyGrant(grant);
      this.transport.updateGrant(grant);
      for (const peer of grant.peers) {
        const link = this.peers.get(peer.userId);
        if (!link || ['failed', 'closed'].includes(link.pc.connectionState)) this.call(peer);
      }
      this.scheduleRefresh(grant);
      this.d.onChange();
      return;
    }
    if (this.transport) this.transport.close();
    this.transport = null;
    for (const link of [...this.peers.values()]) this.closeLink(link);
    this.rebuilds.clear();
    await this.start(grant);
  }

  /**
   * Whether a resume keeps the signaling transport and the links: a transport that does not
   * depend on the app connection (KVS, not the relay), still open, for the same participation
   * (same own channel, not a fresh join).
   */
  keepsTransport(grant) {
    const t = this.transport;
    return !!(t && !t.closed && t.kind === 'aws' && grant && grant.credentials && grant.credentials.kind === 'aws' && !grant.newlyJoined && this.grant && grant.self && this.grant.self && grant.self.channelArn === this.grant.self.channelArn);
  }

  /**
   * getVoiceCredentials; `joining` is true until its reply, so that events about an older
   * participation that arrive before it (e.g. our own participantLeft for the connection a
   * reload closed) are not taken for news about this one.
   */
  async requestGrant() {
    this.joining = true;
    this.grantEpoch = this.viewEpoch();
    try {
      return await this.d.app().request('getVoiceCredentials', { voiceRoomId: this.voiceRoomId });
    } finally {
      this.joining = false;
    }
  }

  async start(grant) {
    this.applyGrant(grant);
    // No await between the grant and the subscription, so no signal can slip past us.
    const transport = this.d.createTransport(grant, {
      app: this.d.app(),
      log: (m) => {
        this.log(m);
        if (this.d.onTransportLog) this.d.onTransportLog(m);
      },
      region: this.d.region,
      fetchRoom: () => (this.d.fetchRoom ? this.d.fetchRoom() : null),
    });
    this.transport = transport;
    transport.onOffer((from, desc) => this.onOffer(from, desc));
    transport.onAnswer((from, desc) => this.onAnswer(from, desc));
    transport.onCandidate((from, cand) => this.onCandidate(from, cand));
    transport.onError((e) => {
      this.warn(`signaling: ${e.message}`);
      if (this.d.onSignalingError && !this.ended) this.d.onSignalingError(e);
    });
    await transport.connect();
    if (this.ended) return;
    this.log(`Joined voice room ${this.voiceRoomId} as ${grant.userId}; ${grant.peers.length} earlier participant(s) to call`);
    if (!this.audioCtx) this.startMeters();
    for (const peer of grant.peers) this.call(peer);
    this.scheduleRefresh(grant);
    this.d.onChange();
  }

  /** grant.room is the room as the server read it; onGrant gets the epoch (app.js setVoiceRoom) of when it was asked for. */
  applyGrant(grant) {
    this.grant = grant;
    this.grantCount += 1;
    this.d.onGrant(grant, this.grantEpoch);
  }

  /** The page's voice-event count when a grant is asked for (undefined: the page keeps none). */
  viewEpoch() {
    return this.d.viewEpoch ? this.d.viewEpoch() : undefined;
  }

  /**
   * The freshest ICE servers for a link with `userId` (the latest grant's), as the transport
   * reads them where it has a rule (KVS: our own channel's, one TURN server, limitTurn).
   */
  iceServersFor(userId, role) {
    if (!this.grant) return [];
    if (this.transport && typeof this.transport.grantIceServers === 'function') return this.transport.grantIceServers(userId);
    if (role === 'master') return this.grant.self.iceServers;
    const p = this.grant.peers.find((x) => x.userId === userId);
    return p ? p.iceServers : this.grant.self.iceServers;
  }

  /**
   * Applies the freshest ICE servers to a link before it gathers candidates: from the transport
   * when it can fetch current ones (KVS TURN credentials live 300 s), else the latest grant's.
   * Returns false if the link was replaced or closed meanwhile.
   */
  async refreshIceServers(link) {
    if (!this.transport || typeof this.transport.iceServersFor !== 'function' || !link.pc.setConfiguration) return !link.closed;
    try {
      const servers = await this.transport.iceServersFor(link.userId);
      if (link.closed || this.ended) return false;
      if (servers) link.pc.setConfiguration(rtcConfig(servers));
    } catch (e) {
      this.warn(`fresh ICE servers for ${this.name(link.userId)} unavailable (${e.message}); using the grant's`);
    }
    return !link.closed && !this.ended;
  }

  // --- credential refresh -------------------------------------------------------------------

  scheduleRefresh(grant) {
    this.d.clearTimeout(this.refreshTimer);
    const delay = this.d.refreshDelayMs(grant.expiresAt, this.d.now(), grant.issuedAt);
    this.refreshAt = this.d.now() + delay;
    this.refreshTimer = this.d.setTimeout(() => this.refresh(grant.expiresAt), delay);
  }

  /**
   * The user is leaving: no refresh from now on. A refresh sent after the leave would be
   * refused anyway (`refresh: true` never joins), but it need not be sent at all.
   */
  stopRefreshing() {
    this.leaving = true;
    this.d.clearTimeout(this.refreshTimer);
  }

  async refresh(previousExpiry) {
    if (this.ended || this.leaving) return;
    try {
      this.grantEpoch = this.viewEpoch();
      // `refresh: true`: if the server handles this after our leave, it refuses instead of
      // joining us again (docs/protocol.md, getVoiceCredentials).
      const grant = await this.d.app().request('getVoiceCredentials', { voiceRoomId: this.voiceRoomId, refresh: true });
      if (this.ended) return;
      this.applyGrant(grant);
      if (this.transport) this.transport.updateGrant(grant);
      this.log(`Voice credentials refreshed (valid until ${new Date(grant.expiresAt).toLocaleTimeString()})`);
      // A room event overtook this reply: its peer list may name someone who has just left, so
      // no one is called from it (the events and the next refresh say who is there).
      const overtaken = this.grantEpoch !== this.viewEpoch();
      for (const peer of overtaken ? [] : grant.peers) {
        const link = this.peers.get(peer.userId);
        if (!link || ['failed', 'closed'].includes(link.pc.connectionState)) this.call(peer);
      }
      this.scheduleRefresh(grant);
    } catch (e) {
      if (this.ended) return;
      if (['VOICE_ROOM_ENDED', 'VOICE_ROOM_NOT_FOUND', 'NOT_PARTICIPANT', 'NOT_APPROVED', 'NOT_MEMBER'].includes(e.code)) {
        this.d.onEnded(e.code === 'VOICE_ROOM_ENDED' || e.code === 'VOICE_ROOM_NOT_FOUND' ? 'Voice room ended' : 'You can no longer take part in this voice chat.', 'info', e);
        return;
      }
      // Offline or slow: the reconnect path takes over; retry while the credentials last.
      const left = previousExpiry - this.d.now();
      this.warn(`credential refresh failed (${e.code || e.message}); ${Math.round(left / 1000)} s left`);
      this.refreshTimer = this.d.setTimeout(() => this.refresh(previousExpiry), Math.max(1000, Math.min(15000, left / 3)));
    }
  }

  // --- peer links ---------------------------------------------------------------------------

  newLink(userId, role) {
    const old = this.peers.get(userId);
    if (old) this.closeLink(old);
    const pc = new this.d.RTCPeerConnection(rtcConfig(this.iceServersFor(userId, role)));
    this.linksCreated += 1;
    const link = {
      userId,
      role, // our role on this link: 'viewer' = we offer, 'master' = we answer
      pc,
      pending: this.earlyCandidates.get(userId) || [],
      remoteFingerprint: null,
      remoteStream: null,
      audioEl: null,
      meter: null,
      peak: 0,
      lastLoudAt: 0,
      createdAt: this.d.now(),
      timer: null,
      answerTimer: null, // the answer deadline of the offer we wait on (ANSWER_WAIT_MS)
      awaiting: null, // which of our offers that is (a count per link), null once answered
      offerSeq: 0,
      offerIds: new Set(), // its offerId as sent (each copy), which the answer names
      offerResent: false,
      answering: false,
      restarting: false,
      closed: false,
      remoteVideo: { camera: null, screen: null }, // MediaStreamTrack the peer sends us, or null
      needsNegotiation: false,
      negotiating: false,
    };
    this.earlyCandidates.delete(userId);
    this.peers.set(userId, link);
    this.d.onLink(link);
    for (const track of this.stream.getAudioTracks()) {
      const sender = pc.addTrack(track, this.stream);
      // Opus only and the needed header extensions, on both sides (an answer keeps at most what
      // the offer had, and the answerer's own preferences trim it further).
      if (pc.getTransceivers) this.preferCodecs(pc.getTransceivers().find((t) => t.sender === sender), 'audio');
    }
    if (pc.createDataChannel) {
      // Negotiated (same id on both sides, no announcement): a master's "offer again, please".
      try {
        link.control = pc.createDataChannel('control', { negotiated: true, id: 0 });
        link.control.addEventListener('open', () => {
          if (link.askOnOpen) this.renegotiate(link);
        });
        link.control.addEventListener('message', (e) => {
          if (e.data !== 'renegotiate' || link.role !== 'viewer') return;
          // Bounded like offers: a peer cannot make us flood the signaling service.
          if (this.admitAsk(userId)) this.renegotiate(link);
          else this.warn(`ignored a renegotiation request from ${this.name(userId)}: more than ${OFFERS_PER_WINDOW} in ${OFFER_WINDOW_MS / 1000} s`);
        });
      } catch (e) {
        this.warn(`no control channel to ${this.name(userId)}: ${e.message}`);
      }
    }
    if (role === 'viewer' && pc.addTransceiver) {
      // The offering side creates the video m-lines (camera, then screen) for both sides.
      for (const slot of VIDEO_SLOTS) {
        const track = this.video[slot];
        this.preferCodecs(pc.addTransceiver(track || 'video', { direction: directionFor(!!track) }));
      }
    }
    pc.addEventListener('icecandidate', (e) => {
      if (!e.candidate || this.ended || link.closed || !this.transport) return;
      this.transport.sendCandidate(userId, e.candidate.toJSON ? e.candidate.toJSON() : e.candidate).then(
        () => this.log(`ICE candidate sent to ${this.name(userId)}`),
        (err) => this.warn(`ICE candidate to ${this.name(userId)} not sent: ${err.message}`),
      );
    });
    pc.addEventListener('connectionstatechange', () => this.onLinkState(link));
    pc.addEventListener('track', (e) => this.onTrack(link, e));
    return link;
  }

  onLinkState(link) {
    if (link.closed || this.ended) return;
    const st = link.pc.connectionState;
    this.log(`Peer connection state: ${st} (${this.name(link.userId)})`);
    if (st === 'connected') {
      this.d.clearTimeout(link.timer);
      link.timer = null;
      link.restarting = false;
      this.rebuilds.delete(link.userId);
      this.applyCaps();
    } else if (link.role === 'viewer' && st === 'disconnected') {
      this.d.clearTimeout(link.timer);
      link.timer = this.d.setTimeout(() => {
        if (!link.closed && link.pc.connectionState === 'disconnected') this.restartIce(link.userId);
      }, DISCONNECTED_GRACE_MS);
    } else if (link.role === 'viewer' && st === 'failed') {
      if (link.restarting) this.rebuild(link.userId);
      else this.restartIce(link.userId);
    }
    this.d.onChange();
  }

  /** The peer entry of the latest grant for a user we offer to, or null if we do not. */
  peerEntry(userId) {
    return (this.grant && this.grant.peers.find((p) => p.userId === userId)) || null;
  }

  /** We are the later joiner: create the connection and send the offer. */
  async call(peer) {
    const who = this.name(peer.userId);
    try {
      const link = this.newLink(peer.userId, 'viewer');
      if (!(await this.refreshIceServers(link))) return;
      const offer = await link.pc.createOffer();
      await link.pc.setLocalDescription(offer);
      if (this.ended || this.peers.get(peer.userId) !== link) return;
      await this.sendOffer(link, 'SDP offer');
    } catch (e) {
      this.warn(`calling ${who} failed: ${e.message}`);
    }
    this.d.onChange();
  }

  /**
   * ICE restart on the link to `userId`, by the side that offers on it (we must be its viewer):
   * fresh ICE servers, restartIce(), a new offer on the same RTCPeerConnection. If the link is
   * not connected again within ICE_RESTART_WAIT_MS it is rebuilt.
   */
  async restartIce(userId) {
    const link = this.peers.get(userId);
    if (!link || link.closed || this.ended || link.role !== 'viewer') return false;
    link.restarting = true;
    this.iceRestarts += 1;
    try {
      if (link.pc.setConfiguration) link.pc.setConfiguration(rtcConfig(this.iceServersFor(userId, 'viewer')));
      if (!(await this.refreshIceServers(link))) return false;
      if (link.pc.restartIce) link.pc.restartIce();
      const offer = await link.pc.createOffer({ iceRestart: true });
      await link.pc.setLocalDescription(offer);
      if (link.closed || this.ended) return false;
      await this.sendOffer(link, 'ICE restart offer');
    } catch (e) {
      this.warn(`ICE restart with ${this.name(userId)} failed: ${e.message}`);
      this.rebuild(userId);
      return false;
    }
    this.d.clearTimeout(link.timer);
    link.timer = this.d.setTimeout(() => {
      if (!link.closed && link.pc.connectionState !== 'connected') this.rebuild(userId);
    }, ICE_RESTART_WAIT_MS);
    return true;
  }

  /** A new RTCPeerConnection for `userId` (the old one closed), at most MAX_REBUILDS in a row. */
  rebuild(userId) {
    const peer = this.peerEntry(userId);
    if (!peer || this.ended) return;
    const n = (this.rebuilds.get(userId) || 0) + 1;
    if (n > MAX_REBUILDS) {
      this.warn(`giving up on ${this.name(userId)} after ${MAX_REBUILDS} rebuilds`);
      return;
    }
    this.rebuilds.set(userId, n);
    this.log(`Rebuilding the connection to ${this.name(userId)} (attempt ${n})`);
    this.d.clearTimeout(this.rebuildTimers.get(userId));
    this.rebuildTimers.set(
      userId,
      this.d.setTimeout(() => {
        this.rebuildTimers.delete(userId);
        if (!this.ended) this.call(peer);
      }, 500 * n),
    );
  }

  /**
   * Sends the link's current local offer (we are its viewer) and starts its answer deadline.
   * `again`: the same offer once more, after the deadline passed without an answer.
   */
  async sendOffer(link, what, again = false) {
    // The local description as it is now (a browser adds the candidates gathered so far to it).
    const desc = link.pc.localDescription;
    this.noteOffer(link.userId);
    if (!again) {
      link.offerSeq += 1;
      link.offerResent = false;
      link.offerIds = new Set();
    }
    const seq = link.offerSeq;
    link.awaiting = seq;
    const id = offerId(desc.sdp);
    if (id) link.offerIds.add(id);
    try {
      await this.transport.sendOffer(link.userId, desc);
      this.log(`${what} sent to ${this.name(link.userId)}`);
    } finally {
      // Also when the transport could not send it (e.g. KVS not connected): no answer can come,
      // and the deadline sends it again.
      if (!link.closed && !this.ended && link.awaiting === seq) this.armAnswerDeadline(link, ANSWER_WAIT_MS);
    }
  }

  /**
   * ANSWER_WAIT_MS passed since we sent the offer `link` still waits on: the first time, the same
   * offer again on the same link (an answer to either copy fits it); the second time, the link is
   * closed and called again from scratch (rebuild). Either waits while the peer's offer limit is
   * used up (offerWait), and nothing happens once the answer came or the link closed.
   */
  answerOverdue(link) {
    link.answerTimer = null;
    if (link.closed || this.ended || !this.transport || this.peers.get(link.userId) !== link) return;
    if (link.answering || link.awaiting === null || link.awaiting !== link.offerSeq || link.pc.signalingState !== 'have-local-offer') return;
    const wait = this.offerWait(link.userId);
    if (wait > 0) {
      this.armAnswerDeadline(link, wait);
      return;
    }
    const who = this.name(link.userId);
    if (!link.offerResent) {
      link.offerResent = true;
      this.warn(`no SDP answer from ${who} within ${ANSWER_WAIT_MS / 1000} s; sending the offer again`);
      this.sendOffer(link, 'SDP offer (again)', true).catch((e) => this.warn(`offer to ${who} not sent again: ${e.message}`));
      return;
    }
    this.warn(`no SDP answer from ${who} to the offer sent twice; rebuilding the connection`);
    this.closeLink(link);
    this.rebuild(link.userId);
  }

  /** (Re)starts `link`'s answer deadline: answerOverdue after `ms`. */
  armAnswerDeadline(link, ms) {
    this.d.clearTimeout(link.answerTimer);
    link.answerTimer = this.d.setTimeout(() => this.answerOverdue(link), ms);
  }

  /** Records an offer we send to `userId` (the peer counts every one, on any link). */
  noteOffer(userId) {
    this.offerWait(userId);
    this.offersSent.get(userId).push(this.d.now());
  }

  /**
   * How long before another offer to `userId` keeps within the peer's limit (OFFERS_PER_WINDOW
   * per OFFER_WINDOW_MS, counted on arrival, per sender): 0 if it may go now.
   */
  offerWait(userId) {
    const { recent, wait } = offerWindow(this.offersSent.get(userId), this.d.now(), OFFERS_PER_WINDOW);
    this.offersSent.set(userId, recent);
    return wait;
  }

  /** Whether another offer from `from` is within the per-peer limit (and records it). */
  admitOffer(from, book = this.offerTimes) {
    const now = this.d.now();
    const { recent, wait } = offerWindow(book.get(from), now, OFFERS_PER_WINDOW);
    if (wait === 0) recent.push(now);
    book.set(from, recent);
    return wait === 0;
  }

  /** Whether another "renegotiate" request from `from` is within the same per-peer limit. */
  admitAsk(from) {
    return this.admitOffer(from, this.askTimes);
  }

  /**
   * An offer from a later joiner (we are master of our channel). Same remote connection
   * (fingerprint) as the link we have: renegotiation or ICE restart, answered on that link.
   * Otherwise a new link replaces the old one (closed and released).
   */
  async onOffer(from, desc) {
    if (this.ended) return;
    if (!this.admitOffer(from)) {
      this.warn(`dropped an offer from ${this.name(from)}: more than ${OFFERS_PER_WINDOW} in ${OFFER_WINDOW_MS / 1000} s`);
      return;
    }
    this.log(`SDP offer received from ${this.name(from)}`);
    const fp = sdpFingerprint(desc && desc.sdp);
    let link = this.peers.get(from);
    const reuse = !!(link && !link.closed && link.role === 'master' && fp && link.remoteFingerprint === fp && link.pc.signalingState === 'stable');
    if (reuse) this.log(`Renegotiating the existing connection with ${this.name(from)}`);
    else {
      link = this.newLink(from, 'master');
      if (!(await this.refreshIceServers(link))) return;
    }
    link.remoteFingerprint = fp;
    await link.pc.setRemoteDescription(desc);
    await this.applyLocalVideo(link);
    await this.flushCandidates(link);
    const answer = await link.pc.createAnswer();
    await link.pc.setLocalDescription(answer);
    if (this.ended || this.peers.get(from) !== link) return;
    // Which offer this answers, so that the viewer can tell it from an answer to an earlier one.
    const local = link.pc.localDescription;
    const answers = offerId(desc && desc.sdp);
    await this.transport.sendAnswer(from, answers ? { type: local.type, sdp: local.sdp, offer: answers } : local);
    this.log(`SDP answer sent to ${this.name(from)}`);
    this.negotiated(link);
    this.d.onChange();
  }

  async onAnswer(from, desc) {
    if (this.ended) return;
    this.log(`SDP answer received from ${this.name(from)}`);
    const link = this.peers.get(from);
    // Not waiting for an answer (e.g. a late one, after the re-sent offer's was applied), or
    // already applying one: ignored, so setRemoteDescription never runs in the wrong state.
    if (!link || link.role !== 'viewer' || link.pc.signalingState !== 'have-local-offer' || link.answering) {
      this.warn(`ignored an unexpected answer from ${this.name(from)}`);
      return;
    }
    // An answer to an earlier offer or to the connection a rebuild replaced (a page that said
    // which offer it answers; one that does not is taken as before).
    if (desc && desc.offer && link.offerIds.size && !link.offerIds.has(desc.offer)) {
      this.warn(`ignored an answer from ${this.name(from)} to an earlier offer`);
      return;
    }
    link.answering = true;
    try {
      link.remoteFingerprint = sdpFingerprint(desc && desc.sdp);
      await link.pc.setRemoteDescription(desc);
    } catch (e) {
      // Still waiting: a fresh deadline (one that passed meanwhile saw us applying this answer).
      this.warn(`answer from ${this.name(from)} not applied: ${e.message}`);
      if (!link.closed && !this.ended && link.awaiting !== null) this.armAnswerDeadline(link, ANSWER_WAIT_MS);
      return;
    } finally {
      link.answering = false;
    }
    this.d.clearTimeout(link.answerTimer);
    link.answerTimer = null;
    link.awaiting = null;
    link.offerResent = false;
    if (link.closed || this.ended) return;
    await this.flushCandidates(link);
    this.negotiated(link);
    this.d.onChange();
  }

  // --- video: camera and screen share on the existing links ----------------------------------

  /**
   * Puts our current camera / screen tracks on the link's video transceivers and sets their
   * directions. Returns whether anything changed (then the link needs a renegotiation).
   */
  async applyLocalVideo(link) {
    if (!link.pc.getTransceivers) return false;
    const vts = videoTransceivers(link.pc.getTransceivers());
    let changed = false;
    for (let i = 0; i < vts.length; i++) {
      const t = vts[i];
      if (!t.codecsPreferred) {
        this.preferCodecs(t);
        t.codecsPreferred = true;
      }
      const track = this.video[VIDEO_SLOTS[i]];
      if (t.sender.track !== track) {
        await t.sender.replaceTrack(track);
        changed = true;
      }
      const dir = directionFor(!!track);
      if (t.direction !== dir) {
        t.direction = dir;
        changed = true;
      }
    }
    return changed;
  }

  /**
   * Keeps a transceiver's part of offers and answers small, so that they fit KVS's 10K base64
   * messagePayload with margin (docs/web-client.md, "Offer sizes"): VP8 + rtx on video, Opus on
   * audio (setCodecPreferences), and only the RTP header extensions the app needs
   * (setHeaderExtensionsToNegotiate, where the browser has it; media.js NEEDED_HEADER_EXTENSIONS).
   */
  preferCodecs(t, kind = 'video') {
    if (!t) return;
    const R = this.d.RTCRtpReceiver;
    if (t.setCodecPreferences && R && R.getCapabilities) {
      const caps = (R.getCapabilities(kind) || {}).codecs;
      const codecs = kind === 'audio' ? preferredAudioCodecs(caps) : preferredVideoCodecs(caps);
      try {
        if (codecs.length) t.setCodecPreferences(codecs);
      } catch (e) {
        this.warn(`${kind} codec preferences not applied: ${e.message}`);
      }
    }
    if (t.setHeaderExtensionsToNegotiate && t.getHeaderExtensionsToNegotiate) {
      try {
        t.setHeaderExtensionsToNegotiate(headerExtensionsToNegotiate(t.getHeaderExtensionsToNegotiate()));
      } catch (e) {
        this.warn(`${kind} header extensions not restricted: ${e.message}`);
      }
    }
  }

  /** A negotiation on `link` completed: what the peer sends us, our caps, and any queued change. */
  negotiated(link) {
    link.negotiating = false;
    this.refreshRemoteVideo(link);
    this.applyCaps();
    if (link.needsNegotiation && link.pc.signalingState === 'stable') {
      link.needsNegotiation = false;
      this.renegotiate(link);
    }
  }

  /** Which of the peer's video slots reach us, from the negotiated transceiver directions. */
  refreshRemoteVideo(link) {
    if (!link.pc.getTransceivers) return;
    const vts = videoTransceivers(link.pc.getTransceivers());
    VIDEO_SLOTS.forEach((slot, i) => {
      const t = vts[i];
      const on = !!t && receives(t.currentDirection) && !!t.receiver.track;
      const before = link.remoteVideo[slot];
      link.remoteVideo[slot] = on ? t.receiver.track : null;
      if (!!before !== on) this.log(`${this.name(link.userId)} ${on ? 'started' : 'stopped'} sending ${slot === 'camera' ? 'camera video' : 'a screen share'}`);
    });
  }

  /**
   * A new offer on the existing RTCPeerConnection, queued while one is out. As the link's master
   * we may not offer: we ask the viewer to (control channel), at once or when it opens.
   */
  async renegotiate(link) {
    if (link.closed || this.ended || !this.transport) return;
    if (link.role === 'master') {
      const open = link.control && link.control.readyState === 'open';
      link.askOnOpen = !open;
      if (open && this.paceRenegotiation(link)) {
        link.control.send('renegotiate');
        this.renegotiations += 1;
        this.log(`Asked ${this.name(link.userId)} to renegotiate`);
      }
      return;
    }
    if (link.negotiating || link.pc.signalingState !== 'stable') {
      link.needsNegotiation = true;
      return;
    }
    if (!this.paceRenegotiation(link)) return;
    link.negotiating = true;
    this.renegotiations += 1;
    try {
      const offer = await link.pc.createOffer();
      await link.pc.setLocalDescription(offer);
      if (link.closed || this.ended) return;
      await this.sendOffer(link, 'Renegotiation offer');
    } catch (e) {
      link.negotiating = false;
      this.warn(`renegotiation with ${this.name(link.userId)} failed: ${e.message}`);
    }
  }

  /**
   * Whether a renegotiation may go out on `link` now (and records it): at most
   * RENEGOTIATIONS_PER_WINDOW per OFFER_WINDOW_MS. Otherwise one retry is scheduled for when
   * the oldest leaves the window; every change made meanwhile goes out with it.
   */
  paceRenegotiation(link) {
    const now = this.d.now();
    const { recent, wait: own } = offerWindow(link.renegotiatedAt, now, RENEGOTIATIONS_PER_WINDOW);
    link.renegotiatedAt = recent;
    // As the viewer, also every other offer we sent them (first call, re-sent offers, ICE restarts).
    const sent = link.role === 'viewer' ? this.offerWait(link.userId) : 0;
    if (own === 0 && sent === 0) {
      link.renegotiatedAt.push(now);
      return true;
    }
    if (!link.paceTimer) {
      const wait = Math.max(own, sent);
      this.log(`Holding a renegotiation with ${this.name(link.userId)} for ${Math.ceil(wait / 1000)} s (at most ${RENEGOTIATIONS_PER_WINDOW} per ${OFFER_WINDOW_MS / 1000} s)`);
      link.paceTimer = this.d.setTimeout(() => {
        link.paceTimer = null;
        this.renegotiate(link);
      }, wait);
    }
    return false;
  }

  /**
   * Starts (a track) or stops (null) our camera or screen share on every link, by
   * renegotiating each existing RTCPeerConnection. A track we stop here is stopped for good.
   */
  async setVideo(slot, track) {
    if (!VIDEO_SLOTS.includes(slot) || this.ended) return;
    const old = this.video[slot];
    if (old === track) return;
    this.video[slot] = track;
    if (old && old !== track) old.stop();
    if (track && slot === 'screen') {
      // The browser's own "Stop sharing" ends the track.
      track.addEventListener('ended', () => {
        if (this.video.screen !== track) return;
        this.setVideo('screen', null).then(() => this.d.onChange());
        // The server must hear it too (stopScreenShare), so that receivers drop the large view.
        if (this.d.onScreenShareEnded) this.d.onScreenShareEnded();
      });
    }
    this.log(`${slot === 'camera' ? 'Camera' : 'Screen share'} ${track ? 'on' : 'off'}`);
    await Promise.all(
      [...this.peers.values()].map(async (link) => {
        try {
          if (await this.applyLocalVideo(link)) await this.renegotiate(link);
        } catch (e) {
          this.warn(`video change for ${this.name(link.userId)} failed: ${e.message}`);
        }
      }),
    );
    this.d.onChange();
  }

  /** Caps every video sender by the number of peers it sends to (media.js videoCaps). */
  applyCaps() {
    const n = [...this.peers.values()].filter((l) => !l.closed).length;
    for (const link of this.peers.values()) {
      if (link.closed || !link.pc.getTransceivers) continue;
      const vts = videoTransceivers(link.pc.getTransceivers());
      vts.forEach((t, i) => {
        if (!t.sender.track || !t.sender.getParameters) return;
        const params = t.sender.getParameters();
        if (!params.encodings || !params.encodings.length) return;
        const caps = videoCaps(VIDEO_SLOTS[i], n);
        const e = params.encodings[0];
        if (e.maxBitrate === caps.maxBitrate && e.scaleResolutionDownBy === caps.scaleResolutionDownBy && e.maxFramerate === caps.maxFramerate) return;
        Object.assign(e, caps);
        t.sender.setParameters(params).catch((err) => this.warn(`video caps for ${this.name(link.userId)} not applied: ${err.message}`));
      });
    }
  }

  /** What to show: every video a peer sends us. [{ userId, slot, track }] */
  remoteVideos() {
    const out = [];
    for (const link of this.peers.values()) {
      for (const slot of VIDEO_SLOTS) if (link.remoteVideo[slot]) out.push({ userId: link.userId, slot, track: link.remoteVideo[slot] });
    }
    return out;
  }

  async onCandidate(from, cand) {
    if (this.ended) return;
    this.log(`ICE candidate received from ${this.name(from)}`);
    const link = this.peers.get(from);
    if (!link) {
      const q = this.earlyCandidates.get(from) || [];
      if (q.length < 100) q.push(cand);
      this.earlyCandidates.set(from, q);
      return;
    }
    if (!link.pc.remoteDescription) {
      if (link.pending.length < 100) link.pending.push(cand);
      return;
    }
    try {
      await link.pc.addIceCandidate(cand);
    } catch (e) {
      this.warn(`bad ICE candidate from ${this.name(from)}: ${e.message}`);
    }
  }

  async flushCandidates(link) {
    const queued = link.pending.splice(0);
    for (const c of queued) {
      try {
        await link.pc.addIceCandidate(c);
      } catch (e) {
        this.warn(`bad ICE candidate from ${this.name(link.userId)}: ${e.message}`);
      }
    }
  }

  onTrack(link, e) {
    if (e.track.kind !== 'audio' || this.ended || link.closed) return;
    const stream = (e.streams && e.streams[0]) || new this.d.MediaStream([e.track]);
    this.log(`Received remote audio track from ${this.name(link.userId)}`);
    link.remoteStream = stream;
    if (!link.audioEl) link.audioEl = this.d.attachAudio(link.userId, stream);
    link.audioEl.srcObject = stream;
    link.audioEl.muted = this.silenced.has(link.userId);
    const played = link.audioEl.play && link.audioEl.play();
    if (played && played.catch) {
      played.catch((err) => {
        this.warn(`audio playback blocked: ${err.message}`);
        this.d.onAudioBlocked();
      });
    }
    if (this.audioCtx) {
      try {
        link.meter = this.makeMeter(stream);
      } catch (err) {
        this.warn(`no level meter for ${this.name(link.userId)}: ${err.message}`);
      }
    }
    this.d.onChange();
  }

  /** Closes and releases a link: its RTCPeerConnection, meter, <audio> and timers. */
  closeLink(link) {
    link.closed = true;
    this.d.clearTimeout(link.timer);
    if (link.paceTimer) this.d.clearTimeout(link.paceTimer);
    if (link.answerTimer) this.d.clearTimeout(link.answerTimer);
    link.answerTimer = null;
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
      this.d.detachAudio(link.audioEl);
      link.audioEl = null;
    }
    if (this.peers.get(link.userId) === link) this.peers.delete(link.userId);
    if (!this.ended) this.applyCaps();
  }

  dropPeer(userId) {
    const link = this.peers.get(userId);
    this.earlyCandidates.delete(userId);
    this.offerTimes.delete(userId);
    this.askTimes.delete(userId);
    this.offersSent.delete(userId);
    this.d.clearTimeout(this.rebuildTimers.get(userId));
    this.rebuildTimers.delete(userId);
    if (link) {
      this.closeLink(link);
      this.log(`Closed the connection to ${this.name(userId)}`);
    }
  }

  /**
   * Another participant came back on a new connection (participantResumed, or a rejoin):
   * rebuild our link to them. If we offer on it we call now; otherwise they call us and their
   * offer (from a new connection) replaces the old link.
   */
  peerReturned(userId) {
    const peer = this.peerEntry(userId);
    if (peer && this.transport) this.call(peer);
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
    if (!this.d.AudioContext) return;
    try {
      this.audioCtx = new this.d.AudioContext();
      if (this.audioCtx.state === 'suspended') this.audioCtx.resume().catch(() => {});
      this.localMeter = this.makeMeter(this.stream);
    } catch (e) {
      this.warn(`audio level meters unavailable: ${e.message}`);
      this.audioCtx = null;
      return;
    }
    this.levelTimer = this.d.setInterval(() => this.sampleLevels(), LEVEL_INTERVAL_MS);
  }

  sampleLevels() {
    const now = this.d.now();
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
    if (this.d.onLevels) this.d.onLevels();
  }

  isSpeaking(userId) {
    const now = this.d.now();
    if (this.grant && userId === this.grant.userId) return now - this.localLevel.lastLoudAt < SPEAKING_HOLD_MS;
    const link = this.peers.get(userId);
    return !!link && now - link.lastLoudAt < SPEAKING_HOLD_MS;
  }

  /** Plays `userId`'s audio or not (`on`: a moderator muted them); returns whether it changed. */
  silence(userId, on) {
    if (this.silenced.has(userId) === on) return false;
    if (on) this.silenced.add(userId);
    else this.silenced.delete(userId);
    const link = this.peers.get(userId);
    if (link && link.audioEl) link.audioEl.muted = on;
    this.log(`${this.name(userId)} ${on ? 'muted by a moderator: not playing their audio' : 'may speak again'}`);
    return true;
  }

  setMuted(muted) {
    this.muted = muted;
    for (const t of this.stream.getAudioTracks()) t.enabled = !muted;
    this.log(muted ? 'Microphone muted' : 'Microphone unmuted');
  }

  /** Closes everything this session holds; safe to call twice. */
  teardown(reason) {
    if (this.ended) return;
    this.ended = true;
    this.endReason = reason;
    this.d.clearTimeout(this.refreshTimer);
    this.d.clearInterval(this.levelTimer);
    for (const link of [...this.peers.values()]) this.closeLink(link);
    this.peers.clear();
    this.earlyCandidates.clear();
    for (const t of this.rebuildTimers.values()) this.d.clearTimeout(t);
    this.rebuildTimers.clear();
    if (this.transport) this.transport.close();
    for (const t of this.stream.getTracks()) t.stop();
    for (const slot of VIDEO_SLOTS) {
      if (this.video[slot]) this.video[slot].stop();
      this.video[slot] = null;
    }
    if (this.audioCtx) this.audioCtx.close().catch(() => {});
    this.log(`Voice session closed: ${reason}`);
  }
}
