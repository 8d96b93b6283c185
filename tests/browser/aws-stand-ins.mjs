// Pieces shared by the local AWS stand-ins: ./aws-fake-stack.mjs (a hand-written model of the
// stack, for the web client's own tests) and ./aws-local-stack.mjs (the real voice-lambda
// bootstrap behind stand-ins of API Gateway, Lambda, STS and KVS, on moto's DynamoDB).
//
// - a minimal RFC 6455 WebSocket (server side, and a client side that masks its frames);
// - the web client's static files under the template's Content-Security-Policy;
// - a certificate authority + a 127.0.0.1 leaf certificate (openssl), so that the browser (with
//   --ignore-certificate-errors) and the Rust SDK in the bootstrap (SSL_CERT_FILE=the CA) both
//   speak HTTPS to the stand-ins, as they do to AWS;
// - SigV4: reading the credential scope of a signed request or presigned URL (presence and
//   scope only, not the signature);
// - IAM policy evaluation, enough for the session policies STS is given;
// - the KVS signaling WebSocket relay, with its per-connection message limits.

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { KVS_LIMITS } from './kvs-fakes.mjs';

export const STATIC_DIR = fileURLToPath(new URL('../../voice-server/static/', import.meta.url));
export const TEMPLATE = fileURLToPath(new URL('../../deploy/aws/template.yaml', import.meta.url));
export const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.json': 'application/json' };

/**
 * The Content-Security-Policy the deployed distribution sends (deploy/aws/template.yaml,
 * WebClientResponseHeadersPolicy), with its !Sub variables filled in for a made-up API in
 * `region`. Served on every static response, so the page is tested under the policy it really
 * gets; a stand-in is one origin, so its own wss:// URLs pass as 'self' and the AWS host
 * entries are only carried along (the template test checks those).
 */
export function templateCsp(region = 'us-east-1') {
  const lines = fs.readFileSync(TEMPLATE, 'utf8').split('\n');
  const at = lines.findIndex((l) => /^\s*ContentSecurityPolicy: !Sub\s*$/.test(l));
  if (at < 0 || !/^\s*- >-\s*$/.test(lines[at + 1] || '')) throw new Error(`no "ContentSecurityPolicy: !Sub" / "- >-" block in ${TEMPLATE}`);
  const body = [];
  const indent = (l) => l.length - l.trimStart().length;
  const first = at + 2;
  for (let i = first; i < lines.length && lines[i].trim() && indent(lines[i]) >= indent(lines[first]); i++) body.push(lines[i].trim());
  const csp = body.join(' ')
    .replaceAll('${ApiId}', 'fakeapi123')
    .replaceAll('${AWS::Region}', region)
    .replaceAll('${AWS::URLSuffix}', 'amazonaws.com');
  if (!/connect-src/.test(csp) || /\$\{/.test(csp)) throw new Error(`could not read the template's CSP: ${csp}`);
  return csp;
}

/**
 * CloudFront + S3 for the web client: `voice-server/static/` under `csp`, and `config` (an object)
 * as config.json, never cached. A missing object is a 403, as S3 behind CloudFront with Origin
 * Access Control answers. Returns true when it answered.
 */
export function serveStatic(req, res, { csp, config }) {
  const url = new URL(req.url, 'https://127.0.0.1');
  if (url.pathname === '/config.json') {
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-security-policy': csp });
    res.end(typeof config === 'string' ? config : JSON.stringify(config));
    return true;
  }
  const rel = url.pathname === '/' ? 'index.html' : decodeURIComponent(url.pathname.slice(1));
  const file = path.join(STATIC_DIR, rel);
  if (!file.startsWith(STATIC_DIR) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
    res.writeHead(403, { 'content-type': 'application/xml' });
    res.end('<Error><Code>AccessDenied</Code></Error>');
    return true;
  }
  res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store', 'content-security-policy': csp });
  res.end(fs.readFileSync(file));
  return true;
}

// ---------------------------------------------------------------------------------------------
// A minimal RFC 6455 WebSocket (text frames, ping, close), enough for a browser or a test client.

const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

export class Socket {
  /** `client`: mask outgoing frames (RFC 6455 5.3: a client masks every frame it sends). */
  constructor(raw, { client = false } = {}) {
    this.raw = raw;
    this.client = client;
    this.buf = Buffer.alloc(0);
    this.parts = [];
    this.onmessage = () => {};
    this.onclose = () => {};
    /** Called with each data frame's payload length before it is assembled (size limits). */
    this.onframe = () => true;
    this.closed = false;
    this.closeCode = null;
    raw.on('data', (d) => this.feed(d));
    raw.on('close', () => this.gone());
    raw.on('error', () => this.gone());
  }

  feed(data) {
    this.buf = Buffer.concat([this.buf, data]);
    for (;;) {
      if (this.buf.length < 2) return;
      const fin = (this.buf[0] & 0x80) !== 0;
      const op = this.buf[0] & 0x0f;
      const masked = (this.buf[1] & 0x80) !== 0;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      const maskLen = masked ? 4 : 0;
      if (this.buf.length < off + maskLen + len) return;
      const mask = masked ? this.buf.subarray(off, off + 4) : null;
      const payload = Buffer.from(this.buf.subarray(off + maskLen, off + maskLen + len));
      if (mask) for (let i = 0; i < payload.length; i += 1) payload[i] ^= mask[i % 4];
      this.buf = this.buf.subarray(off + maskLen + len);
      if (op === 0x8) {
        if (payload.length >= 2) this.closeCode = payload.readUInt16BE(0);
        this.close();
        return;
      }
      if (op === 0x9) this.frame(0xa, payload);
      else if (op === 0x1 || op === 0x0) {
        if (this.onframe(payload.length) === false) return;
        this.parts.push(payload);
        if (fin) {
          const text = Buffer.concat(this.parts).toString('utf8');
          this.parts = [];
          this.onmessage(text);
        }
      }
    }
  }

  frame(op, payload) {
    if (this.closed) return;
    const n = payload.length;
    const maskBit = this.client ? 0x80 : 0;
    let head;
    if (n < 126) head = Buffer.from([0x80 | op, maskBit | n]);
    else if (n < 65536) {
      head = Buffer.alloc(4);
      head[0] = 0x80 | op;
      head[1] = maskBit | 126;
      head.writeUInt16BE(n, 2);
    } else {
      head = Buffer.alloc(10);
      head[0] = 0x80 | op;
      head[1] = maskBit | 127;
      head.writeBigUInt64BE(BigInt(n), 2);
    }
    let body = payload;
    if (this.client) {
      const mask = crypto.randomBytes(4);
      body = Buffer.from(payload);
      for (let i = 0; i < body.length; i += 1) body[i] ^= mask[i % 4];
      head = Buffer.concat([head, mask]);
    }
    this.raw.write(Buffer.concat([head, body]));
  }

  send(obj) {
    this.frame(0x1, Buffer.from(typeof obj === 'string' ? obj : JSON.stringify(obj), 'utf8'));
  }

  /** A clean close (close frame with `code`, then the TCP end). */
  close(code) {
    if (this.closed) return;
    const payload = Buffer.alloc(code ? 2 : 0);
    if (code) payload.writeUInt16BE(code, 0);
    this.frame(0x8, payload);
    this.raw.end();
    this.gone();
  }

  /** The connection vanishes: no close frame, the TCP connection is reset. */
  destroy() {
    this.raw.destroy();
    this.gone();
  }

  gone() {
    if (this.closed) return;
    this.closed = true;
    this.onclose();
  }
}

export function accept(req, rawSocket) {
  const key = req.headers['sec-websocket-key'];
  const acceptKey = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
  rawSocket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptKey}\r\n\r\n`);
  return new Socket(rawSocket);
}

export function refuse(rawSocket, status, text) {
  rawSocket.end(`HTTP/1.1 ${status} ${text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
}

/**
 * A client WebSocket to `url` (ws: or wss:; wss trusts `ca`). Resolves to a Socket with
 * `localPort` once the server accepted the upgrade; rejects with the status otherwise.
 */
export function connectWebSocket(url, { ca, headers = {} } = {}) {
  const u = new URL(url);
  const key = crypto.randomBytes(16).toString('base64');
  const lib = u.protocol === 'wss:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = lib.request({
      host: u.hostname,
      port: u.port,
      path: `${u.pathname}${u.search}`,
      ca,
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': key, ...headers },
    });
    req.on('upgrade', (res, raw, head) => {
      const expected = crypto.createHash('sha1').update(key + WS_GUID).digest('base64');
      if (res.headers['sec-websocket-accept'] !== expected) {
        raw.destroy();
        reject(new Error('bad Sec-WebSocket-Accept'));
        return;
      }
      const socket = new Socket(raw, { client: true });
      socket.localPort = raw.localPort;
      if (head && head.length) socket.feed(head);
      resolve(socket);
    });
    req.on('response', (res) => {
      res.resume();
      reject(Object.assign(new Error(`upgrade refused: HTTP ${res.statusCode}`), { status: res.statusCode }));
    });
    req.on('error', reject);
    req.end();
  });
}

/**
 * A throw-away certificate authority and a leaf certificate for 127.0.0.1 signed by it, in a
 * fresh temporary directory: `{ dir, key, cert, caFile, ca }`. A CA (not a self-signed leaf)
 * because rustls, which the bootstrap's SDK uses, refuses a CA certificate as a server's own.
 */
export function makeCertificates() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'voice-local-tls-'));
  const f = (n) => path.join(dir, n);
  const ossl = (args) => execFileSync('openssl', args, { stdio: 'ignore' });
  ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=voice local stack test CA']);
  ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', f('key.pem'), '-out', f('leaf.csr'), '-subj', '/CN=127.0.0.1']);
  fs.writeFileSync(f('leaf.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  ossl(['x509', '-req', '-in', f('leaf.csr'), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-out', f('cert.pem'), '-days', '1', '-extfile', f('leaf.ext')]);
  return { dir, key: fs.readFileSync(f('key.pem')), cert: fs.readFileSync(f('cert.pem')), caFile: f('ca.pem'), ca: fs.readFileSync(f('ca.pem')) };
}

// ---------------------------------------------------------------------------------------------
// SigV4 and IAM, as far as the stand-ins check them

/**
 * The credential scope of a SigV4-signed request ("Authorization: AWS4-HMAC-SHA256
 * Credential=AKID/20261203/us-east-1/sts/aws4_request, SignedHeaders=..., Signature=..."), or of a
 * presigned URL (X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature query parameters), per
 * "Authenticating Requests (AWS Signature Version 4)"
 * (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html).
 * `null` when the request is not signed. Only presence and scope: the signature is not verified.
 */
export function sigv4Scope({ headers = {}, url } = {}) {
  const auth = headers.authorization || '';
  let credential = null;
  let signed = false;
  const m = /^AWS4-HMAC-SHA256 Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*Signature=([0-9a-f]{64})$/.exec(auth);
  if (m) {
    credential = m[1];
    signed = m[2].split(';').includes('host');
  } else if (url && url.searchParams.get('X-Amz-Algorithm') === 'AWS4-HMAC-SHA256') {
    credential = url.searchParams.get('X-Amz-Credential');
    signed = /^[0-9a-f]{64}$/.test(url.searchParams.get('X-Amz-Signature') || '');
  }
  if (!credential || !signed) return null;
  const [accessKeyId, date, region, service, terminator] = credential.split('/');
  if (terminator !== 'aws4_request' || !/^\d{8}$/.test(date || '')) return null;
  return { accessKeyId, date, region, service };
}

const matches = (pattern, value) => new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`).test(value);

/**
 * Whether an IAM policy document allows `action` on `resource`: an Allow statement whose Action
 * and Resource match (with `*` wildcards) and no matching Deny ("Policy evaluation logic",
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_evaluation-logic.html).
 * Conditions and NotAction/NotResource are not modelled: a statement with them never matches.
 */
export function policyAllows(policy, action, resource) {
  const doc = typeof policy === 'string' ? JSON.parse(policy) : policy;
  const list = (v) => (Array.isArray(v) ? v : v === undefined ? [] : [v]);
  let allowed = false;
  for (const s of list(doc.Statement)) {
    if (s.Condition || s.NotAction || s.NotResource) continue;
    const hit = list(s.Action).some((a) => matches(a.toLowerCase(), action.toLowerCase())) && list(s.Resource).some((r) => matches(r, resource));
    if (hit && s.Effect === 'Deny') return false;
    if (hit && s.Effect === 'Allow') allowed = true;
  }
  return allowed;
}

// ---------------------------------------------------------------------------------------------
// KVS signaling: the WebSocket side of a SINGLE_MASTER channel

/**
 * The KVS signaling WebSocket as the SDK opens it (ConnectAsMaster / ConnectAsViewer: a SigV4
 * presigned wss URL with X-Amz-ChannelARN and, for viewers, X-Amz-ClientId), relaying the
 * SDK's messages (viewer → master with senderClientId, master → the viewer named by
 * recipientClientId). Rules, from "Amazon Kinesis Video Streams with WebRTC service quotas"
 * (kvs-fakes.mjs, KVS_LIMITS): one master per channel (a new one replaces the old), at most 10
 * viewers, a viewer client id replaces its own earlier connection; per connection at most 5 SDP
 * offers/answers and 20 ICE candidates per second, measured on arrival; messagePayload (the
 * base64 text, as SendSdpOffer's reference gives its "Maximum length of 10K") at most 10 KB
 * (over them the message
 * is not delivered and the sender gets a status response naming the error; every such refusal
 * is counted in `stats.kvsOverLimit`).
 *
 * A viewer's message sent while the channel has no master is kept for the channel's
 * MessageTtlSeconds (SingleMasterConfiguration: "The period of time a signaling channel retains
 * undelivered messages before they are discarded", 60 s by default and as the stand-in's channels
 * describe themselves; `limits.messageTtlMs`) and delivered, in order, to the next master that
 * connects within it (as KVS's maintainers describe it: "when the master connects it should
 * receive any pending SDP message (offer/answer/candidate) if it is within TTL",
 * awslabs/amazon-kinesis-video-streams-webrtc-sdk-js issue 47). Counted in `stats.kvsRetained`
 * {arn, kind, delivered}.
 *
 * With `enforce: false` an over-limit message is still delivered (and still counted): for tests
 * that must observe the page without KVS's refusals changing its behaviour.
 *
 * `dropNextAnswerTo(user)` (tests only): the next SDP answer a master sends to a viewer
 * connection of `user` is accepted from the master and never delivered, as a message lost on
 * the way; counted in `stats.kvsDropped` {arn, kind, to}.
 *
 * Connection lifetime, from the same quotas page ("Signaling API service quotas"): a connection
 * is closed (1001) once it has been open for `limits.maxConnectionMs` ("Connection duration: 1
 * hour") or has carried no message either way for `limits.idleMs` ("Idle timeout: 10 minutes").
 * Both are read when checked (every 200 ms), so a test may shorten them (option `limits`), and
 * `capConnections(match, ms)` gives the connections open now a cap of their own: standing in for
 * an hour having passed on those sockets only. Every such close is counted in `stats.kvsExpired`.
 *
 * `authorize({url, arn, role, clientId, scope})` returns `{ user }` or `{ why }` (refused 403).
 * `stats` gets kvsConnections, kvsRefused, relayed, kvsOverLimit, the longest messagePayload
 * (base64) seen per kind (kvsPayloadMax) and, per connection, the most SDP and ICE messages it
 * sent within any one second (kvsPeakRates).
 */
export function kvsSignaling({ authorize, stats, log = () => {}, limits = KVS_LIMITS, enforce = true }) {
  const channels = new Map(); // channelArn -> {master: Socket|null, viewers: Map(clientId -> Socket)}
  // Open connections and their clocks: {socket, arn, role, clientId, user, openedAt, activeAt, capMs}
  const open = new Set();
  let ticker = null;
  function expire() {
    const now = Date.now();
    for (const c of [...open]) {
      const cap = c.capMs ?? limits.maxConnectionMs;
      const why = now - c.openedAt >= cap ? 'maxDuration' : now - c.activeAt >= limits.idleMs ? 'idle' : null;
      if (!why) continue;
      open.delete(c);
      stats.kvsExpired.push({ arn: c.arn, role: c.role, clientId: c.clientId, user: c.user, why, openMs: now - c.openedAt });
      log(`kvs closed ${c.role} ${c.arn}: ${why}`);
      c.socket.close(1001);
    }
  }
  stats.kvsExpired ||= [];
  stats.kvsConnections ||= [];
  stats.kvsRefused ||= [];
  stats.kvsOverLimit ||= [];
  stats.kvsPeakRates ||= [];
  stats.kvsPayloadMax ||= { offer: 0, answer: 0, candidate: 0 }; // longest messagePayload seen, by kind
  stats.relayed ||= 0;
  stats.kvsRetained ||= [];
  stats.kvsDropped ||= [];
  const dropAnswerTo = new Set(); // users whose next SDP answer is lost (dropNextAnswerTo)
  const messageTtlMs = limits.messageTtlMs ?? 60 * 1000;

  function handle(req, raw, url) {
    const arn = url.searchParams.get('X-Amz-ChannelARN');
    const clientId = url.searchParams.get('X-Amz-ClientId');
    const role = clientId ? 'VIEWER' : 'MASTER';
    const scope = sigv4Scope({ url });
    const verdict = !scope ? { why: 'unsigned' } : scope.service !== 'kinesisvideo' ? { why: `signed for ${scope.service}, not kinesisvideo` } : authorize({ url, arn, role, clientId, scope });
    if (verdict.why) {
      stats.kvsRefused.push({ arn, role, accessKeyId: scope && scope.accessKeyId, why: verdict.why });
      log(`kvs refused ${role} ${arn}: ${verdict.why}`);
      refuse(raw, 403, 'Forbidden');
      return;
    }
    if (!channels.has(arn)) channels.set(arn, { master: null, viewers: new Map(), retained: [] });
    const ch = channels.get(arn);
    if (role === 'VIEWER' && !ch.viewers.has(clientId) && ch.viewers.size >= limits.viewersPerChannel) {
      stats.kvsRefused.push({ arn, role, accessKeyId: scope.accessKeyId, why: 'too many viewers' });
      refuse(raw, 403, 'Forbidden');
      return;
    }
    const socket = accept(req, raw);
    const record = { arn, role, clientId, accessKeyId: scope.accessKeyId, user: verdict.user };
    stats.kvsConnections.push(record);
    const clock = { socket, arn, role, clientId, user: verdict.user, openedAt: Date.now(), activeAt: Date.now(), capMs: null };
    open.add(clock);
    if (!ticker) {
      ticker = setInterval(expire, 200);
      ticker.unref();
    }
    const peak = { arn, role, user: verdict.user, sdp: 0, ice: 0 };
    stats.kvsPeakRates.push(peak);
    const sent = { sdp: [], ice: [] };
    // A new connection with the same role (and client id) replaces the old one, as KVS does.
    if (role === 'MASTER') {
      if (ch.master) ch.master.close();
      ch.master = socket;
      // What viewers sent while there was no master, still within MessageTtlSeconds.
      const now = Date.now();
      for (const r of ch.retained.splice(0)) {
        if (now - r.at >= messageTtlMs) continue;
        r.record.delivered = true;
        clock.activeAt = now;
        socket.send(r.message);
      }
    } else {
      if (ch.viewers.get(clientId)) ch.viewers.get(clientId).close();
      ch.viewers.set(clientId, socket);
    }
    socket.onclose = () => {
      open.delete(clock);
      if (role === 'MASTER' && ch.master === socket) ch.master = null;
      if (role === 'VIEWER' && ch.viewers.get(clientId) === socket) ch.viewers.delete(clientId);
    };
    socket.onmessage = (text) => {
      clock.activeAt = Date.now();
      let m;
      try {
        m = JSON.parse(text);
      } catch {
        return;
      }
      const kind = m.action === 'ICE_CANDIDATE' ? 'ice' : 'sdp';
      const now = Date.now();
      const times = sent[kind];
      while (times.length && now - times[0] >= 1000) times.shift();
      const limit = kind === 'ice' ? limits.icePerSecond : limits.sdpPerSecond;
      const size = Buffer.byteLength(m.messagePayload || '', 'utf8');
      const which = m.action === 'SDP_OFFER' ? 'offer' : m.action === 'SDP_ANSWER' ? 'answer' : 'candidate';
      stats.kvsPayloadMax[which] = Math.max(stats.kvsPayloadMax[which], size);
      if (times.length >= limit || size > limits.payloadBytes) {
        const errorType = size > limits.payloadBytes ? 'InvalidArgumentException' : 'ClientLimitExceededException';
        stats.kvsOverLimit.push({ arn, role, user: verdict.user, kind, errorType, size, inLastSecond: times.length + 1 });
        if (enforce) {
          socket.send({ messageType: 'STATUS_RESPONSE', statusResponse: { correlationId: m.correlationId || '', errorType, statusCode: '400', description: `${m.action} refused` } });
          return;
        }
      }
      times.push(now);
      peak[kind] = Math.max(peak[kind], times.length);
      stats.relayed += 1;
      const to = role === 'VIEWER' ? ch.master : ch.viewers.get(m.recipientClientId);
      if (!to && role === 'VIEWER') {
        const record = { arn, kind: which, delivered: false };
        stats.kvsRetained.push(record);
        ch.retained.push({ at: now, record, message: { messageType: m.action, messagePayload: m.messagePayload, senderClientId: clientId } });
        return;
      }
      if (!to) return;
      const toUser = [...open].find((c) => c.socket === to)?.user;
      if (which === 'answer' && dropAnswerTo.delete(toUser)) {
        stats.kvsDropped.push({ arn, kind: which, to: toUser });
        log(`kvs dropped an answer to ${toUser} on ${arn}`);
        return;
      }
      for (const c of open) if (c.socket === to) c.activeAt = Date.now();
      if (role === 'VIEWER') to.send({ messageType: m.action, messagePayload: m.messagePayload, senderClientId: clientId });
      else to.send({ messageType: m.action, messagePayload: m.messagePayload });
    };
  }

  return {
    handle,
    /** Closes every connection to the channel (it was deleted). */
    close(arn) {
      const ch = channels.get(arn);
      if (!ch) return;
      if (ch.master) ch.master.close();
      for (const v of ch.viewers.values()) v.close();
      channels.delete(arn);
    },
    closeAll() {
      for (const arn of [...channels.keys()]) this.close(arn);
      clearInterval(ticker);
      ticker = null;
    },
    /**
     * Gives the connections open now for which `match({arn, role, clientId, user})` holds a
     * duration cap of `capMs` (closed at the next check once that old, as at KVS's 1-hour cap);
     * later connections keep `limits.maxConnectionMs`. Returns how many were capped.
     */
    capConnections(match, capMs) {
      let n = 0;
      for (const c of open) {
        if (!match({ arn: c.arn, role: c.role, clientId: c.clientId, user: c.user })) continue;
        c.capMs = capMs;
        n += 1;
      }
      return n;
    },
    has: (arn) => channels.has(arn),
    /** The next SDP answer to a viewer connection of `user` is lost (see above). */
    dropNextAnswerTo(user) {
      dropAnswerTo.add(user);
    },
  };
}
