// The app WebSocket: requests matched to replies (each with a deadline), pushed events, signal
// events buffered for the voice transport, and a heartbeat that notices a dead server.
//
// Liveness (docs/web-client.md, "Liveness and reconnect"): the client sends a `ping` request
// every `heartbeatMs` (10 s); any frame from the server counts as life (a reply, an event, even
// UNKNOWN_ACTION from a server without `ping`). No frame for `deadAfterMs` (20 s) and the
// connection is declared dead: closed at once, `onclose` called, and the app reconnects with
// `reconnectDelayMs`. Browsers answer the server's WebSocket pings by themselves.

import { ApiError } from './messages.js';

/** Defaults of the self-hosted server. */
const REQUEST_TIMEOUT_MS = 15000;
export const HEARTBEAT_MS = 10000;
export const DEAD_AFTER_MS = 20000;
/**
 * How often a keepalive with a changing period (startKeepalive) checks whether one is due: well
 * under the in-voice period (config.js VOICE_KEEPALIVE_MS, 5 s), and one is sent when at most
 * half a tick is missing, so a tick firing a little early (timer jitter) does not push a
 * keepalive to the next tick: the gaps stay within half a tick of the period.
 */
export const KEEPALIVE_TICK_MS = 1000;
const OPEN_TIMEOUT_MS = 10000;
const SIGNAL_BUFFER_MAX = 200;
const SIGNAL_BUFFER_AGE_MS = 30000;

/**
 * Delay before reconnect attempt `attempt` (1, 2, …): exponential from 500 ms, capped at 2 s
 * for the first FAST_ATTEMPTS (about 15 s: a blip or a restart is over within a couple of
 * seconds of the network coming back), then at 10 s; with ±30 % jitter so that every page of a
 * restarted server does not come back in the same millisecond. `rand` is injectable for tests.
 */
const FAST_ATTEMPTS = 8;
export function reconnectDelayMs(attempt, rand = Math.random) {
  const cap = attempt <= FAST_ATTEMPTS ? 2000 : 10000;
  const base = Math.min(cap, 500 * 2 ** Math.max(0, attempt - 1));
  return Math.round(base * (0.7 + 0.6 * rand()));
}

// Retries after a retryable refusal (docs/web-client.md, "Retries"): UNAVAILABLE (a dependency
// such as KVS or DynamoDB throttled or failed) and RATE_LIMITED were refused before anything was
// done, so the page sends the request again after a short random wait instead of showing the
// error. Only for actions whose refusal leaves nothing behind and whose repetition is harmless:
// the voice use cases undo a failed start/join (docs/protocol.md), the rest only read or set a
// state. sendMessage, createRoom and the moderation actions are not retried (a lost reply could
// mean they ran). TIMEOUT is never retried (the request may still run).
export const RETRIED_ACTIONS = new Set([
  'createVoiceRoom',
  'getVoiceCredentials',
  'leaveVoiceRoom',
  'setMute',
  'endVoiceRoom',
  'getVoiceRoom',
  'listRooms',
  'listMembers',
  'getMessages',
]);
export const RETRIED_CODES = new Set(['UNAVAILABLE', 'RATE_LIMITED']);
/** Attempts in all (the first send and up to three retries). */
export const REQUEST_ATTEMPTS = 4;

/** Wait before retry `attempt` (1, 2, …): full jitter over 250 ms · 2^(attempt-1), at most 2 s. */
export function retryDelayMs(attempt, rand = Math.random) {
  return Math.round(rand() * Math.min(2000, 250 * 2 ** (attempt - 1)));
}

export class AppConnection {
  /**
   * @param {string} url
   * @param {object} opts  requestTimeoutMs; heartbeatMs/deadAfterMs (null = no heartbeat, e.g.
   *   on AWS where every request is a Lambda invocation); probe (the heartbeat request, default
   *   `ping`); WebSocketImpl, now, log/warn, sleep, rand (injectable for tests).
   */
  constructor(url, opts = {}) {
    this.url = url;
    this.requestTimeoutMs = opts.requestTimeoutMs || REQUEST_TIMEOUT_MS;
    this.heartbeatMs = opts.heartbeatMs === undefined ? HEARTBEAT_MS : opts.heartbeatMs;
    this.deadAfterMs = opts.deadAfterMs === undefined ? DEAD_AFTER_MS : opts.deadAfterMs;
    this.openTimeoutMs = opts.openTimeoutMs || OPEN_TIMEOUT_MS;
    this.probe = opts.probe || (() => this.request('ping', {}, this.deadAfterMs).catch(() => {}));
    this.WebSocketImpl = opts.WebSocketImpl || globalThis.WebSocket;
    this.now = opts.now || (() => Date.now());
    this.warn = opts.warn || (() => {});
    this.sleep = opts.sleep || ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.rand = opts.rand || Math.random;
    this.apiGatewayErrorText = opts.apiGatewayErrorText || null;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map();
    this.listeners = new Map();
    this.signalSubs = new Map();
    this.signalBuffer = [];
    this.lastFrameAt = 0;
    this.closed = false;
    this.timers = [];
    this.onclose = () => {};
  }

  /** Opens the socket; rejects if it does not open within `openTimeoutMs` (a black hole). */
  open() {
    return new Promise((resolve, reject) => {
      const ws = new this.WebSocketImpl(this.url);
      this.ws = ws;
      let opened = false;
      const openTimer = setTimeout(() => {
        if (opened) return;
        this.closed = true;
        try {
          ws.close();
        } catch {
          /* not open */
        }
        reject(new Error('Could not connect to the server (no answer).'));
      }, this.openTimeoutMs);
      ws.addEventListener('open', () => {
        opened = true;
        clearTimeout(openTimer);
        this.lastFrameAt = this.now();
        this.startHeartbeat();
        resolve();
      });
      ws.addEventListener('message', (e) => {
        this.lastFrameAt = this.now();
        this.handle(e.data);
      });
      ws.addEventListener('close', (e) => {
        clearTimeout(openTimer);
        if (opened) this.lost(e && e.code ? `closed (${e.code})` : 'closed');
        else reject(new Error('Could not connect to the server.'));
      });
    });
  }

  startHeartbeat() {
    if (!this.heartbeatMs) return;
    this.timers.push(setInterval(() => this.probe(), this.heartbeatMs));
    this.timers.push(
      setInterval(() => {
        if (this.now() - this.lastFrameAt > this.deadAfterMs) this.lost(`no frame from the server for ${Math.round(this.deadAfterMs / 1000)} s`);
      }, Math.min(1000, this.deadAfterMs / 4)),
    );
  }

  /**
   * An application-level keepalive (AWS: API Gateway closes a WebSocket after 10 minutes without
   * a frame, and browsers cannot send WebSocket pings): every `everyMs` while open, `send()` (a
   * request, e.g. `ping`); one that times out means the connection is dead (closed, `onclose`,
   * the app reconnects). `send` may return null: nothing to send this time. Stopped with the
   * connection. `everyMs` may be a function, asked at every `tickMs`, for a period that changes
   * (AWS: every 5 s while in voice, 5 min otherwise; config.js keepaliveEveryMs): a keepalive
   * goes out once that long (less half a tick) has passed since the last one.
   */
  startKeepalive(everyMs, send, tickMs = KEEPALIVE_TICK_MS) {
    if (!everyMs) return;
    if (typeof everyMs === 'function') {
      let lastAt = this.now();
      this.timers.push(
        setInterval(() => {
          const period = everyMs();
          if (this.closed || !period || this.now() - lastAt < period - tickMs / 2) return;
          lastAt = this.now();
          this.keepaliveOnce(send);
        }, tickMs),
      );
      return;
    }
    this.timers.push(setInterval(() => this.keepaliveOnce(send), everyMs));
  }

  /** One keepalive (startKeepalive): a request whose timeout means the connection is dead. */
  keepaliveOnce(send) {
    if (this.closed) return;
    let p;
    try {
      p = send();
    } catch (e) {
      this.warn(`keepalive not sent: ${e.message}`);
      return;
    }
    if (p && typeof p.then === 'function') {
      p.then(
        () => {},
        (e) => {
          if (e && e.code === 'TIMEOUT') this.lost('keepalive unanswered');
          else this.warn(`keepalive refused: ${(e && e.code) || (e && e.message) || e}`);
        },
      );
    }
  }

  /** The connection is over (closed, or declared dead): fail every pending request, tell the app once. */
  lost(why) {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    try {
      if (this.ws && this.ws.readyState <= 1) this.ws.close();
    } catch {
      /* already closing */
    }
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new ApiError(p.action, { code: 'DISCONNECTED', message: 'the connection to the server closed' }));
    }
    this.pending.clear();
    this.warn(`connection lost: ${why}`);
    this.onclose(why);
  }

  /** Closes on purpose (sign out): no reconnect. */
  close() {
    this.onclose = () => {};
    this.lost('closed by the page');
  }

  isOpen() {
    return !this.closed && !!this.ws && this.ws.readyState === 1;
  }

  /**
   * Sends one request; resolves with its `data`, rejects with ApiError (code, never thrown raw).
   * A retryable refusal of a RETRIED_ACTIONS action is retried (up to REQUEST_ATTEMPTS, with
   * jittered waits) while the connection is open and the overall deadline `timeoutMs` allows.
   */
  async request(action, fields = {}, timeoutMs = this.requestTimeoutMs) {
    const deadline = this.now() + timeoutMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.requestOnce(action, fields, Math.max(1, deadline - this.now()));
      } catch (e) {
        const wait = retryDelayMs(attempt, this.rand);
        const again =
          RETRIED_ACTIONS.has(action) &&
          RETRIED_CODES.has(e.code) &&
          attempt < REQUEST_ATTEMPTS &&
          this.now() + wait < deadline;
        if (!again) throw e;
        this.warn(`${action}: ${e.code}, retrying in ${wait} ms`);
        await this.sleep(wait);
        if (!this.isOpen()) throw e;
      }
    }
  }

  /** One send of a request, with its own reply deadline. */
  requestOnce(action, fields, timeoutMs) {
    return new Promise((resolve, reject) => {
      if (!this.isOpen()) {
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

  handle(text, apiGatewayErrorText = this.apiGatewayErrorText) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      this.warn('ignored a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg !== 'object') {
      this.warn('ignored a frame that is not a JSON object');
      return;
    }
    if (msg.type === 'reply') {
      const p = this.pending.get(msg.requestId);
      if (!p) {
        if (!msg.ok) this.warn(`server refused a request: ${msg.error && msg.error.code}`);
        return;
      }
      this.pending.delete(msg.requestId);
      clearTimeout(p.timer);
      if (msg.ok) p.resolve(msg.data || {});
      else p.reject(new ApiError(msg.action || p.action, msg.error));
    } else if (msg.type === 'event') {
      if (msg.event === 'signal') this.routeSignal(msg);
      else this.emit(msg.event, msg);
    } else {
      // API Gateway's own answer to a failed route: it names no request of ours.
      const t = apiGatewayErrorText ? apiGatewayErrorText(msg) : null;
      if (t) {
        this.warn(t);
        this.emit('apiError', { text: t, frame: msg });
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
        this.warn(`handler for ${event} failed: ${e.message}`);
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
    const now = this.now();
    this.signalBuffer = this.signalBuffer.filter((s) => now - s.at < SIGNAL_BUFFER_AGE_MS);
    if (this.signalBuffer.length >= SIGNAL_BUFFER_MAX) this.signalBuffer.shift();
    this.signalBuffer.push({ at: now, msg });
  }

  /** Subscribes a transport to one voice room's signals; returns the unsubscribe function. */
  onSignal(voiceRoomId, fn) {
    this.signalSubs.set(voiceRoomId, fn);
    const now = this.now();
    const early = this.signalBuffer.filter((s) => s.msg.voiceRoomId === voiceRoomId && now - s.at < SIGNAL_BUFFER_AGE_MS);
    this.signalBuffer = this.signalBuffer.filter((s) => s.msg.voiceRoomId !== voiceRoomId);
    for (const s of early) fn(s.msg);
    return () => {
      if (this.signalSubs.get(voiceRoomId) === fn) this.signalSubs.delete(voiceRoomId);
    };
  }
}
