// The AWS deployment in its deployed shape, on this machine: the real voice-lambda bootstrap
// (target/debug/voice-lambda, `cargo build -p voice-lambda --locked`) run by a local Lambda
// Runtime API, behind a local API Gateway WebSocket API, on moto's DynamoDB and Secrets Manager
// with the tables and secret of deploy/aws/template.yaml (deploy/aws/local/moto_stack.py), and
// local stand-ins of STS and Kinesis Video Streams. For the node tests (aws-chat.test.mjs), the
// browser tests, or by hand:
//
//   node tests/browser/aws-local-stack.mjs      # prints the URL to open in two browser profiles
//
// One HTTPS server on 127.0.0.1 (a throw-away CA: the browser is told to ignore certificate
// errors; the bootstrap trusts the CA through SSL_CERT_FILE) plays every AWS endpoint the page
// and the function reach, dispatched by the SigV4 signing service of each request:
// - CloudFront + S3: voice-server/static/ under the template's CSP, and config.json = the
//   template's WebClientConfig output;
// - API Gateway WebSocket API (the stage path, e.g. /production), and its @connections
//   management API (service execute-api);
// - STS AssumeRole (service sts);
// - KVS control plane and GetIceServerConfig (service kinesisvideo), and the KVS signaling
//   WebSocket (aws-stand-ins.mjs, kvsSignaling);
// - S3 (service s3, path-style): the recordings bucket on moto, for the function's calls and the
//   browsers' presigned URLs.
// The Lambda Runtime API is plain HTTP on its own loopback port (AWS_LAMBDA_RUNTIME_API is a
// host:port, http, as in Lambda). The function reaches moto through a recording pass-through
// (stats.dynamoCalls), so tests can see when it wrote what, e.g. a channel released into the
// pool after the room was told. Each rule below names the AWS document it follows.
//
// Verified only against these stand-ins (not real AWS): API Gateway's routing, framing and
// @connections behaviour, the Runtime API, STS and KVS; IAM is modelled only where noted
// (session policies and KvsClientRole's ceiling on KVS; the function policy's tag conditions on
// CreateSignalingChannel/DeleteSignalingChannel). DynamoDB and Secrets Manager are moto's.

import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { accept, connectWebSocket, kvsSignaling, makeCertificates, policyAllows, refuse, serveStatic, sigv4Scope, templateCsp } from './aws-stand-ins.mjs';
import { KVS_LIMITS } from './kvs-fakes.mjs';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
export const BOOTSTRAP = process.env.VOICE_LAMBDA_BOOTSTRAP || path.join(ROOT, 'target/debug/voice-lambda');
const MOTO_STACK = path.join(ROOT, 'deploy/aws/local/moto_stack.py');
const REGION = 'us-east-1';
const ACCOUNT = '123456789012';
// The function's own credentials, as Lambda puts its execution role's session in the
// environment. Test-only constants: nothing here is a secret, nothing reaches AWS.
const FUNCTION_KEY = { id: 'ASIALOCALFUNCTION', secret: 'local-function-not-a-secret', token: 'local-function-session' };

/**
 * Request rates KVS allows (per account and per channel, transactions per second), from "Amazon
 * Kinesis Video Streams with WebRTC service quotas", "Control plane API service quotas" and
 * "Signaling API service quotas"
 * (https://docs.aws.amazon.com/kinesisvideostreams-webrtc-dg/latest/devguide/kvswebrtc-limits.html):
 * the same table as the Rust FakeKvs (voice-adapters-aws/src/testing.rs, TPS_LIMITS).
 */
const KVS_TPS = {
  '/createSignalingChannel': [50, null],
  '/deleteSignalingChannel': [50, 5],
  '/describeSignalingChannel': [300, 5],
  '/getSignalingChannelEndpoint': [300, null],
  '/listSignalingChannels': [50, null],
  '/ListTagsForResource': [50, 5],
  '/v1/get-ice-server-config': [null, 5],
};

const lines = (stream, fn) => readline.createInterface({ input: stream }).on('line', fn);
const readBody = (req) =>
  new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (d) => parts.push(d));
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });

/** Waits for `fn()` to be truthy, checking every 20 ms, failing after `ms` with `what`. */
export async function until(fn, what, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * The connection cut-offs of the real services, which the stand-ins apply (each a default of
 * `startLocalStack`'s `limits` option; a test may shorten them to see a cut-off within its run):
 * - API Gateway WebSocket: "Connection duration for WebSocket API: 2 hours" and "Idle Connection
 *   Timeout: 10 minutes" ("Amazon API Gateway quotas for configuring and running a WebSocket
 *   API", https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-execution-service-websocket-limits-table.html);
 * - KVS signaling WebSocket: connection duration 1 hour, idle timeout 10 minutes ("Amazon Kinesis
 *   Video Streams with WebRTC service quotas", "Signaling API service quotas", kvs-fakes.mjs
 *   KVS_LIMITS);
 * - KVS TURN credentials: GetIceServerConfig's `Ttl`, 300 s ("GetIceServerConfig", IceServer.Ttl:
 *   "The period of time, in seconds, during which the username and password are valid"; KVS
 *   hands out 300, https://docs.aws.amazon.com/kinesisvideostreams/latest/dg/API_signaling_GetIceServerConfig.html).
 */
export const REAL_LIMITS = Object.freeze({
  apiGatewayMaxConnectionMs: 2 * 60 * 60 * 1000,
  apiGatewayIdleMs: 10 * 60 * 1000,
  kvsMaxConnectionMs: KVS_LIMITS.maxConnectionMs,
  kvsIdleMs: KVS_LIMITS.idleMs,
  turnTtlSeconds: 300,
});

/**
 * Starts the stack. `workers`: bootstrap processes (Lambda execution environments) serving
 * invocations concurrently. `params`: template parameters (e.g. {ChatMode: 'builtin'}).
 * `kvsActivationMs`: how long a new channel stays CREATING. `limits`: any of REAL_LIMITS'
 * fields, for tests only (the defaults are the real services' values); the returned
 * `stack.limits` holds them and is read when they are checked, so a test may change them
 * mid-run (`setTurnTtl` changes `turnTtlSeconds`).
 */
export async function startLocalStack({ workers = 3, params = {}, log = () => {}, kvsActivationMs = 300, stackName = 'voice-local', port: frontPort = 0, limits: limitOptions = {} } = {}) {
  if (!fs.existsSync(BOOTSTRAP)) throw new Error(`no bootstrap at ${BOOTSTRAP}: run cargo build -p voice-lambda --locked`);
  for (const k of Object.keys(limitOptions)) if (!(k in REAL_LIMITS)) throw new Error(`unknown limit ${k} (known: ${Object.keys(REAL_LIMITS).join(', ')})`);
  const limits = { ...REAL_LIMITS, ...limitOptions };
  const kvsLimits = {
    ...KVS_LIMITS,
    get maxConnectionMs() {
      return limits.kvsMaxConnectionMs;
    },
    get idleMs() {
      return limits.kvsIdleMs;
    },
  };
  const certs = makeCertificates();
  const children = [];
  const servers = [];
  const stats = {
    invocations: [], // {routeKey, connectionId, status, ms, error}
    posts: [], // {connectionId, status, bytes, event, at (hrtime ns)}
    deletes: [],
    assumeRole: [], // {roleArn, sessionName, seconds, policyChars, status}
    apiGatewayClosed: [], // connections API Gateway closed by itself: {connectionId, why ('maxDuration' | 'idle'), openMs}
    iceServerConfigs: [], // GetIceServerConfig answers: {arn, clientId, expiresAt (ms), at (ms)}
    kvsCalls: [], // {path, status, caller, error, arn, at (hrtime ns)}
    s3Calls: [], // {method, path, presigned, status, at (hrtime ns)}: the function's and the browsers' S3 requests
    dynamoCalls: [], // the function's DynamoDB requests: {target, table, input (pool table only), status, at (hrtime ns)}
    initErrors: [],
    lambdaLog: [], // parsed JSON log lines of every bootstrap
    exits: [],
  };
  const cleanups = [];
  let closed = false;
  const connections = new Map(); // API Gateway: connectionId -> {id, socket, connectedAt, lastActiveAt, ...}
  // The signaling WebSocket: the presigned URL's key must be a live session whose policy (and
  // KvsClientRole's) allows ConnectAsMaster/ConnectAsViewer on that channel, with its session
  // token, on an ACTIVE channel.
  const relay = kvsSignaling({
    stats,
    log,
    limits: kvsLimits,
    authorize({ url, arn, role, scope }) {
      refreshChannels();
      const session = sessions.get(scope.accessKeyId);
      if (!session) return { why: 'unknown access key' };
      if (session.expiresAt <= Date.now()) return { why: 'expired credentials' };
      if (url.searchParams.get('X-Amz-Security-Token') !== session.token) return { why: 'wrong session token' };
      const action = role === 'MASTER' ? 'kinesisvideo:ConnectAsMaster' : 'kinesisvideo:ConnectAsViewer';
      if (!sessionMay(session, action, arn)) return { why: `credentials do not allow ${action} on ${arn}` };
      const ch = kvsChannels.get(arn);
      if (!ch || ch.status !== 'ACTIVE') return { why: `channel ${ch ? ch.status : 'not found'}` };
      return { user: session.sessionName };
    },
  });


  async function close() {
    if (closed) return;
    closed = true;
    for (const c of [...connections.values()]) c.socket.destroy();
    connections.clear();
    relay.closeAll();
    for (const w of runtime.waiters.splice(0)) w.res.destroy();
    for (const child of children) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    for (const s of servers) {
      s.closeAllConnections && s.closeAllConnections();
      await new Promise((r) => s.close(() => r()));
    }
    for (const fn of cleanups) fn();
    fs.rmSync(certs.dir, { recursive: true, force: true });
  }

  // -------------------------------------------------------------------------------------------
  // Lambda Runtime API ("AWS Lambda runtime API",
  // https://docs.aws.amazon.com/lambda/latest/dg/runtimes-api.html): GET .../invocation/next
  // long-polls for the next event (one per environment at a time), with the request id,
  // deadline, function ARN and trace id in headers; POST .../invocation/{id}/response or
  // .../error ends it; POST .../init/error reports a failed initialisation. An invocation not
  // answered within the function's Timeout fails ("Task timed out").
  const runtime = { queue: [], waiters: [], pending: new Map(), timeoutMs: 30000 };
  const functionArn = `arn:aws:lambda:${REGION}:${ACCOUNT}:function:${stackName}-voice`;
  function handOut(res, inv) {
    res.writeHead(200, {
      'content-type': 'application/json',
      'lambda-runtime-aws-request-id': inv.id,
      'lambda-runtime-deadline-ms': String(inv.deadline),
      'lambda-runtime-invoked-function-arn': functionArn,
      'lambda-runtime-trace-id': `Root=1-${Math.floor(Date.now() / 1000).toString(16)}-${crypto.randomBytes(12).toString('hex')};Sampled=0`,
    });
    res.end(JSON.stringify(inv.event));
  }
  function invoke(event) {
    return new Promise((resolve, reject) => {
      const id = crypto.randomUUID();
      const deadline = Date.now() + runtime.timeoutMs;
      const timer = setTimeout(() => {
        runtime.pending.delete(id);
        reject(new Error(`Task timed out after ${runtime.timeoutMs / 1000} seconds`));
      }, runtime.timeoutMs + 1000);
      const inv = { id, event, deadline };
      runtime.pending.set(id, { resolve, reject, timer });
      const waiter = runtime.waiters.shift();
      if (waiter) handOut(waiter.res, inv);
      else runtime.queue.push(inv);
    });
  }
  const runtimeServer = http.createServer(async (req, res) => {
    const m = /^\/2018-06-01\/runtime\/(?:invocation\/(next|[^/]+\/(response|error))|init\/error)$/.exec(req.url);
    const body = await readBody(req);
    if (!m) {
      res.writeHead(404).end();
      return;
    }
    if (m[1] === 'next') {
      const inv = runtime.queue.shift();
      if (inv) handOut(res, inv);
      else {
        const waiter = { res };
        runtime.waiters.push(waiter);
        res.on('close', () => {
          const i = runtime.waiters.indexOf(waiter);
          if (i >= 0) runtime.waiters.splice(i, 1);
        });
      }
      return;
    }
    if (!m[1]) {
      stats.initErrors.push(body.toString());
      res.writeHead(202, { 'content-type': 'application/json' }).end('{"status":"OK"}');
      return;
    }
    const id = m[1].split('/')[0];
    const p = runtime.pending.get(id);
    res.writeHead(202, { 'content-type': 'application/json' }).end('{"status":"OK"}');
    if (!p) return;
    runtime.pending.delete(id);
    clearTimeout(p.timer);
    if (m[2] === 'response') {
      try {
        p.resolve(JSON.parse(body.toString()));
      } catch (e) {
        p.reject(new Error(`response is not JSON: ${e.message}`));
      }
    } else p.reject(new Error(`invocation error: ${body}`));
  });
  servers.push(runtimeServer);
  await new Promise((r) => runtimeServer.listen(0, '127.0.0.1', r));
  const runtimeAddr = `127.0.0.1:${runtimeServer.address().port}`;

  // -------------------------------------------------------------------------------------------
  // The HTTPS front: every AWS endpoint the page and the function reach.
  const front = https.createServer({ key: certs.key, cert: certs.cert });
  servers.push(front);
  await new Promise((r) => front.listen(frontPort, '127.0.0.1', r));
  const port = front.address().port;
  const origin = `https://127.0.0.1:${port}`;
  const domainName = `127.0.0.1:${port}`;

  // moto with the template's tables and secret, and the function's environment as the template
  // sets it (its API domain is ours).
  const paramArgs = Object.entries(params).flatMap(([k, v]) => ['--param', `${k}=${v}`]);
  const moto = spawn('python3', [MOTO_STACK, '--api-domain', domainName, '--stack', stackName, ...paramArgs], { stdio: ['pipe', 'pipe', 'pipe'] });
  children.push(moto);
  const motoErr = [];
  lines(moto.stderr, (l) => motoErr.push(l));
  let deployed;
  try {
    deployed = await new Promise((resolve, reject) => {
      const rl = readline.createInterface({ input: moto.stdout });
      rl.once('line', (l) => {
        try {
          resolve(JSON.parse(l));
        } catch (e) {
          reject(new Error(`moto_stack.py printed ${l}: ${e.message}`));
        }
      });
      moto.once('exit', (code) => reject(new Error(`moto_stack.py exited ${code}: ${motoErr.slice(-10).join('\n')}`)));
      setTimeout(() => reject(new Error(`moto_stack.py not ready in 60 s: ${motoErr.slice(-10).join('\n')}`)), 60000).unref();
    });
  } catch (e) {
    await close();
    throw e;
  }
  const stage = deployed.stage;
  const env = deployed.environment;

  // The function's DynamoDB endpoint: a pass-through to moto that records each request (its
  // X-Amz-Target, table, arrival time; the whole input for the channel pool table).
  const motoUrl = new URL(deployed.endpoint);
  const motoAgent = new http.Agent({ keepAlive: true });
  const dynamoProxy = http.createServer(async (req, res) => {
    const body = await readBody(req);
    const target = String(req.headers['x-amz-target'] || '').split('.').pop();
    let input = null;
    try {
      input = JSON.parse(body.toString());
    } catch {
      // not JSON: forwarded as is, moto answers
    }
    const record = { target, table: input && input.TableName, input: null, status: null, at: process.hrtime.bigint() };
    if (record.table && record.table === env.CHANNEL_POOL_TABLE) record.input = input;
    stats.dynamoCalls.push(record);
    const up = http.request({ host: motoUrl.hostname, port: motoUrl.port, method: req.method, path: req.url, headers: req.headers, agent: motoAgent }, (r) => {
      record.status = r.statusCode;
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', (e) => {
      record.status = 502;
      res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ message: e.message }));
    });
    up.end(body);
  });
  servers.push(dynamoProxy);
  cleanups.push(() => motoAgent.destroy());
  await new Promise((r) => dynamoProxy.listen(0, '127.0.0.1', r));
  const dynamoEndpoint = `http://127.0.0.1:${dynamoProxy.address().port}`;
  runtime.timeoutMs = deployed.function.timeout * 1000;
  const routes = new Map(deployed.routes.map((r) => [r.routeKey, r]));
  if (deployed.routeSelectionExpression !== '$request.body.action') throw new Error(`unsupported route selection ${deployed.routeSelectionExpression}`);
  const csp = templateCsp(REGION);
  const webClientConfig = deployed.outputs.WebClientConfig;

  // -------------------------------------------------------------------------------------------
  // API Gateway WebSocket API ("Working with WebSocket APIs",
  // https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-websocket-api.html):
  // - a route is chosen by the route selection expression $request.body.action: the body's
  //   `action` if it names a route, else $default ("Working with routes for WebSocket APIs");
  // - $connect is invoked only if the API has that route (the template has none: every
  //   connection is accepted); $disconnect after the connection closed, best effort;
  // - a route with a route response (two-way) sends the integration's response body back on
  //   the connection; a failed invocation answers {"message": "Internal server error", ...};
  // - the Lambda proxy event carries requestContext {routeKey, eventType, connectionId,
  //   domainName, stage, apiId, connectedAt, requestTimeEpoch, messageId, ...} and the body
  //   ("Setting up a WebSocket API integration request", proxy integration);
  // - frames of more than 32 KB close the connection with 1009 ("Amazon API Gateway quotas for
  //   configuring and running a WebSocket API": frame size 32 KB, message 128 KB); a connection
  //   idle for 10 minutes or open for 2 hours is closed (REAL_LIMITS; `limits` may shorten them).
  const apiId = 'local00api';
  const newConnectionId = () => `${crypto.randomBytes(11).toString('base64').replace(/\+/g, 'A').replace(/\//g, 'B')}`;

  function requestContext(conn, routeKey, eventType) {
    const now = Date.now();
    return {
      routeKey,
      eventType,
      messageId: eventType === 'MESSAGE' ? crypto.randomBytes(8).toString('base64') : undefined,
      extendedRequestId: crypto.randomBytes(8).toString('base64'),
      requestTime: new Date(now).toUTCString(),
      messageDirection: 'IN',
      stage,
      connectedAt: conn.connectedAt,
      requestTimeEpoch: now,
      identity: { sourceIp: '127.0.0.1', userAgent: conn.userAgent },
      requestId: crypto.randomBytes(8).toString('base64'),
      domainName,
      connectionId: conn.id,
      apiId,
    };
  }

  async function invokeRoute(conn, routeKey, event) {
    const started = Date.now();
    const record = { routeKey, connectionId: conn.id, status: null, ms: 0, error: null };
    stats.invocations.push(record);
    try {
      const out = await invoke(event);
      record.status = out && out.statusCode;
      return out;
    } catch (e) {
      record.error = e.message;
      throw e;
    } finally {
      record.ms = Date.now() - started;
    }
  }

  // The 2-hour and 10-minute cut-offs (REAL_LIMITS), checked every 200 ms against `limits`;
  // `capMs` is one connection's own cap (stack.capConnection).
  const cutOffs = setInterval(() => {
    const now = Date.now();
    for (const conn of [...connections.values()]) {
      const cap = conn.capMs ?? limits.apiGatewayMaxConnectionMs;
      const why = now - conn.connectedAt >= cap ? 'maxDuration' : now - conn.lastActiveAt >= limits.apiGatewayIdleMs ? 'idle' : null;
      if (!why || !conn.socket || conn.socket.closed) continue;
      stats.apiGatewayClosed.push({ connectionId: conn.id, why, openMs: now - conn.connectedAt });
      log(`API Gateway closes ${conn.id}: ${why}`);
      conn.socket.close(1001);
    }
  }, 200);
  cutOffs.unref();
  cleanups.push(() => clearInterval(cutOffs));

  function disconnected(conn, statusCode, reason) {
    if (conn.vanished || !connections.has(conn.id)) return;
    connections.delete(conn.id);
    if (closed || !routes.has('$disconnect')) return;
    const event = { requestContext: { ...requestContext(conn, '$disconnect', 'DISCONNECT'), disconnectStatusCode: statusCode, disconnectReason: reason }, isBase64Encoded: false };
    invokeRoute(conn, '$disconnect', event).catch((e) => log(`$disconnect failed: ${e.message}`));
  }

  async function onFrame(conn, text) {
    let routeKey = '$default';
    try {
      const body = JSON.parse(text);
      if (body && typeof body.action === 'string' && routes.has(body.action)) routeKey = body.action;
    } catch {
      // not JSON: the selection expression cannot be evaluated, so $default
    }
    const route = routes.get(routeKey);
    if (!route) {
      conn.socket.send({ message: 'Forbidden', connectionId: conn.id, requestId: crypto.randomBytes(8).toString('base64') });
      return;
    }
    const event = { requestContext: requestContext(conn, routeKey, 'MESSAGE'), body: text, isBase64Encoded: false };
    try {
      const out = await invokeRoute(conn, routeKey, event);
      if (route.twoWay && out && typeof out.body === 'string' && connections.get(conn.id) === conn) conn.socket.send(out.body);
    } catch (e) {
      log(`invocation failed: ${e.message}`);
      if (route.twoWay && connections.get(conn.id) === conn) conn.socket.send({ message: 'Internal server error', connectionId: conn.id, requestId: event.requestContext.requestId });
    }
  }

  async function apiGateway(req, raw) {
    const conn = { id: newConnectionId(), connectedAt: Date.now(), lastActiveAt: Date.now(), userAgent: req.headers['user-agent'] || '', remotePort: raw.remotePort, vanished: false };
    if (routes.has('$connect')) {
      const out = await invokeRoute(conn, '$connect', { requestContext: requestContext(conn, '$connect', 'CONNECT'), headers: req.headers, isBase64Encoded: false }).catch(() => null);
      if (!out || out.statusCode < 200 || out.statusCode > 299) {
        refuse(raw, 403, 'Forbidden');
        return;
      }
    }
    const socket = accept(req, raw);
    conn.socket = socket;
    connections.set(conn.id, conn);
    socket.onframe = (bytes) => {
      if (bytes > 32 * 1024) {
        socket.close(1009);
        return false;
      }
      return true;
    };
    socket.onmessage = (text) => {
      conn.lastActiveAt = Date.now();
      onFrame(conn, text);
    };
    socket.onclose = () => disconnected(conn, socket.closeCode || 1006, '');
  }

  // @connections ("Use @connections commands in your backend service",
  // https://docs.aws.amazon.com/apigateway/latest/developerguide/apigateway-how-to-call-websocket-api-connections.html):
  // POST sends the body to the client (410 GoneException when the connection is no longer
  // there), GET describes it, DELETE closes it; the data is at most 128 KB
  // (PayloadTooLargeException, 413).
  function management(req, res, url, body) {
    const m = new RegExp(`^/${stage}/@connections/([^/]+)$`).exec(url.pathname);
    const error = (status, type, message) => {
      res.writeHead(status, { 'content-type': 'application/json', 'x-amzn-errortype': type });
      res.end(JSON.stringify({ __type: type, message }));
    };
    if (!m) return error(404, 'NotFoundException', `no such path ${url.pathname}`);
    const id = decodeURIComponent(m[1]);
    const conn = connections.get(id);
    if (req.method === 'POST') {
      let event = null;
      try {
        event = JSON.parse(body.toString()).event || null;
      } catch {
        // not JSON: recorded without an event name
      }
      stats.posts.push({ connectionId: id, status: conn ? 200 : 410, bytes: body.length, event, at: process.hrtime.bigint() });
      if (!conn) return error(410, 'GoneException', null);
      if (body.length > 128 * 1024) return error(413, 'PayloadTooLargeException', 'data exceeds 128 KB');
      conn.socket.send(body.toString('utf8'));
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    if (!conn) return error(410, 'GoneException', null);
    if (req.method === 'GET') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ ConnectedAt: new Date(conn.connectedAt).toISOString(), LastActiveAt: new Date(conn.lastActiveAt).toISOString(), Identity: { SourceIp: '127.0.0.1', UserAgent: conn.userAgent } }));
      return;
    }
    if (req.method === 'DELETE') {
      stats.deletes.push(id);
      conn.socket.close(1000);
      res.writeHead(204).end();
      return;
    }
    return error(405, 'BadRequestException', `method ${req.method}`);
  }

  // -------------------------------------------------------------------------------------------
  // STS AssumeRole (https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html):
  // only the function may assume KvsClientRole (its trust policy names the function's role);
  // RoleSessionName 2–64 of [\w+=,.@-]; DurationSeconds 900–3600, and a role-chained session
  // (the function's credentials are a role session) at most 1 hour; the session policy's
  // plaintext at most 2,048 characters. The session's rights are the intersection of the
  // role's policy and the session policy (checked when the credentials are used, below).
  const sessions = new Map(); // accessKeyId -> {policy, token, secret, expiresAt, sessionName}
  const kvsRoleArn = env.KVS_ROLE_ARN;
  const rolePolicies = deployed.kvsClientRolePolicies;
  function sts(req, res, body, scope) {
    const q = new URLSearchParams(body.toString());
    const fail = (status, code, message) => {
      stats.assumeRole.push({ roleArn: q.get('RoleArn'), status, code });
      res.writeHead(status, { 'content-type': 'text/xml' });
      res.end(`<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>${code}</Code><Message>${message}</Message></Error><RequestId>${crypto.randomUUID()}</RequestId></ErrorResponse>`);
    };
    if (q.get('Action') !== 'AssumeRole') return fail(400, 'InvalidAction', `${q.get('Action')} is not served here`);
    if (scope.accessKeyId !== FUNCTION_KEY.id) return fail(403, 'AccessDenied', 'only the voice function may assume this role');
    if (q.get('RoleArn') !== kvsRoleArn) return fail(403, 'AccessDenied', `not authorized to perform sts:AssumeRole on ${q.get('RoleArn')}`);
    const name = q.get('RoleSessionName') || '';
    if (!/^[\w+=,.@-]{2,64}$/.test(name)) return fail(400, 'ValidationError', 'invalid RoleSessionName');
    const seconds = Number(q.get('DurationSeconds') || 3600);
    if (!(seconds >= 900 && seconds <= 3600)) return fail(400, 'ValidationError', 'The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.');
    const policy = q.get('Policy');
    if (policy && policy.length > 2048) return fail(400, 'ValidationError', 'Policy exceeds 2048 characters');
    const accessKeyId = `ASIA${crypto.randomBytes(8).toString('hex').toUpperCase()}`;
    const secret = crypto.randomBytes(20).toString('base64');
    const token = crypto.randomBytes(32).toString('base64');
    const expiresAt = Date.now() + seconds * 1000;
    sessions.set(accessKeyId, { policy: policy ? JSON.parse(policy) : null, token, secret, expiresAt, sessionName: name });
    stats.assumeRole.push({ roleArn: q.get('RoleArn'), sessionName: name, seconds, policyChars: policy ? policy.length : 0, status: 200 });
    const roleName = kvsRoleArn.split('/').pop();
    res.writeHead(200, { 'content-type': 'text/xml' });
    res.end(`<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><AssumedRoleUser><Arn>arn:aws:sts::${ACCOUNT}:assumed-role/${roleName}/${name}</Arn><AssumedRoleId>AROALOCAL:${name}</AssumedRoleId></AssumedRoleUser><Credentials><AccessKeyId>${accessKeyId}</AccessKeyId><SecretAccessKey>${secret}</SecretAccessKey><SessionToken>${token}</SessionToken><Expiration>${new Date(expiresAt).toISOString()}</Expiration></Credentials><PackedPolicySize>${Math.ceil(((policy || '').length / 2048) * 100)}</PackedPolicySize></AssumeRoleResult><ResponseMetadata><RequestId>${crypto.randomUUID()}</RequestId></ResponseMetadata></AssumeRoleResponse>`);
  }

  /** Whether a browser session (STS credentials) may `action` on `arn`: role ∩ session policy. */
  function sessionMay(session, action, arn) {
    return rolePolicies.some((p) => policyAllows(p, action, arn)) && (!session.policy || policyAllows(session.policy, action, arn));
  }

  // -------------------------------------------------------------------------------------------
  // Kinesis Video Streams, control plane and GetIceServerConfig (REST-JSON at the SDK's paths),
  // as the Rust FakeKvs models it (voice-adapters-aws/src/testing.rs, each rule from the KVS
  // API reference): CreateSignalingChannel is asynchronous (CREATING, then ACTIVE after
  // `kvsActivationMs`); GetSignalingChannelEndpoint and DeleteSignalingChannel answer
  // ResourceInUseException unless ACTIVE; Delete needs CurrentVersion and leaves the channel
  // DELETING for a while; TPS limits (KVS_TPS) answered with ClientLimitExceededException;
  // TURN credentials live `limits.turnTtlSeconds` (300 s, REAL_LIMITS). IAM: the function's policy allows CreateSignalingChannel only
  // with the tags app=voice-rooms and voiceStack=<this stack> in the request, and
  // DeleteSignalingChannel only on channels tagged voiceStack=<this stack> (template,
  // VoiceFunctionPolicy); browsers may only call what their session allows on their channels.
  const kvsChannels = new Map(); // arn -> {name, arn, version, tags, created, status, activeAt, goneAt}
  const windows = new Map();
  // A throttling burst (`throttleKvs`): from the next KVS API call on (or the next one `startOn`
  // picks), for its `ms`, every call is answered as over its TPS quota,
  // ClientLimitExceededException (HTTP 400), as KVS does (quotas page above). Each burst is
  // recorded in stats.kvsBursts {from, until} (ms).
  let throttledUntil = 0;
  let burst = null; // {ms, startOn}: armed, not started
  stats.kvsBursts = [];
  let version = 0;
  const refreshChannels = () => {
    const now = Date.now();
    for (const [arn, c] of kvsChannels) {
      if (c.goneAt && now >= c.goneAt) {
        kvsChannels.delete(arn);
        relay.close(arn);
      } else if (c.status === 'CREATING' && now >= c.activeAt) c.status = 'ACTIVE';
    }
  };
  const withinRate = (p, arn) => {
    const [account, perChannel] = KVS_TPS[p] || [null, null];
    const now = Date.now();
    const keys = [account && [`${p} account`, account], perChannel && arn && [`${p} ${arn}`, perChannel]].filter(Boolean);
    const win = (k) => {
      const w = (windows.get(k) || []).filter((t) => now - t < 1000);
      windows.set(k, w);
      return w;
    };
    if (keys.some(([k, limit]) => win(k).length >= limit)) return false;
    for (const [k] of keys) win(k).push(now);
    return true;
  };
  const info = (c) => ({ ChannelName: c.name, ChannelARN: c.arn, ChannelType: 'SINGLE_MASTER', ChannelStatus: c.status, CreationTime: c.created / 1000, SingleMasterConfiguration: { MessageTtlSeconds: 60 }, Version: c.version });
  function kvsControl(req, res, url, body, scope) {
    refreshChannels();
    const p = url.pathname;
    let input = {};
    try {
      input = body.length ? JSON.parse(body.toString()) : {};
    } catch {
      input = null;
    }
    const record = { path: p, status: 200, caller: scope.accessKeyId === FUNCTION_KEY.id ? 'function' : 'session', at: process.hrtime.bigint() };
    stats.kvsCalls.push(record);
    const error = (status, type, message) => {
      record.status = status;
      record.error = type;
      res.writeHead(status, { 'content-type': 'application/json', 'x-amzn-errortype': `${type}:http://internal.amazon.com/coral/com.amazonaws.kinesisvideo/` });
      res.end(JSON.stringify({ __type: type, message }));
    };
    const ok = (v) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(v));
    };
    if (!input) return error(400, 'InvalidArgumentException', 'bad JSON');
    const arn = input.ChannelARN || input.ResourceARN;
    record.arn = arn;
    const ch = arn ? kvsChannels.get(arn) : null;
    if (record.caller === 'session') {
      const session = sessions.get(scope.accessKeyId);
      const action = { '/v1/get-ice-server-config': 'GetIceServerConfig', '/getSignalingChannelEndpoint': 'GetSignalingChannelEndpoint', '/describeSignalingChannel': 'DescribeSignalingChannel' }[p];
      if (!session || session.expiresAt <= Date.now() || req.headers['x-amz-security-token'] !== session.token) return error(403, 'UnrecognizedClientException', 'The security token included in the request is invalid or expired');
      if (!action || !arn || !sessionMay(session, `kinesisvideo:${action}`, arn)) return error(403, 'AccessDeniedException', `not authorized to perform kinesisvideo:${action || p} on ${arn}`);
    } else if (scope.accessKeyId !== FUNCTION_KEY.id) return error(403, 'UnrecognizedClientException', 'unknown access key');
    if (burst && (!burst.startOn || burst.startOn({ path: p, caller: record.caller, arn }))) {
      throttledUntil = Date.now() + burst.ms;
      stats.kvsBursts.push({ from: Date.now(), until: throttledUntil });
      burst = null;
    }
    if (Date.now() < throttledUntil || !withinRate(p, arn)) return error(400, 'ClientLimitExceededException', 'Kinesis Video Streams has throttled the request because you have exceeded the limit of allowed client calls. Try making the call later.');
    const notActive = () => error(400, 'ResourceInUseException', `The channel is ${ch.status}, not ACTIVE`);
    switch (p) {
      case '/createSignalingChannel': {
        const name = input.ChannelName;
        if (!name) return error(400, 'InvalidArgumentException', 'ChannelName is required');
        const tags = Object.fromEntries((input.Tags || []).map((t) => [t.Key, t.Value]));
        if (!name.startsWith('voice-') || tags.app !== 'voice-rooms' || tags.voiceStack !== env.VOICE_STACK_ID) return error(403, 'AccessDeniedException', 'VoiceFunctionPolicy allows CreateSignalingChannel only on voice-* with tags app=voice-rooms and this stack\'s voiceStack');
        if ([...kvsChannels.values()].some((c) => c.name === name)) return error(400, 'ResourceInUseException', 'channel name exists');
        const created = Date.now();
        const c = { name, arn: `arn:aws:kinesisvideo:${REGION}:${ACCOUNT}:channel/${name}/${created}`, version: `v${String((version += 1)).padStart(12, '0')}`, tags, created, status: kvsActivationMs ? 'CREATING' : 'ACTIVE', activeAt: created + kvsActivationMs, goneAt: null };
        kvsChannels.set(c.arn, c);
        record.arn = c.arn;
        return ok({ ChannelARN: c.arn });
      }
      case '/describeSignalingChannel':
        return ch ? ok({ ChannelInfo: info(ch) }) : error(404, 'ResourceNotFoundException', 'no such channel');
      case '/deleteSignalingChannel':
        if (!ch) return error(404, 'ResourceNotFoundException', 'no such channel');
        if (ch.tags.voiceStack !== env.VOICE_STACK_ID) return error(403, 'AccessDeniedException', 'VoiceFunctionPolicy deletes only channels tagged with this stack');
        if (ch.status !== 'ACTIVE') return notActive();
        if (input.CurrentVersion !== ch.version) return error(400, 'VersionMismatchException', 'version mismatch');
        ch.status = 'DELETING';
        ch.goneAt = Date.now() + 300;
        relay.close(ch.arn);
        return ok({});
      case '/getSignalingChannelEndpoint': {
        if (!ch) return error(404, 'ResourceNotFoundException', 'no such channel');
        if (ch.status !== 'ACTIVE') return notActive();
        const protocols = (input.SingleMasterChannelEndpointConfiguration || {}).Protocols || [];
        return ok({ ResourceEndpointList: protocols.map((pr) => ({ Protocol: pr, ResourceEndpoint: pr === 'WSS' ? origin.replace('https:', 'wss:') : origin })) });
      }
      case '/listSignalingChannels': {
        const cond = input.ChannelNameCondition;
        const prefix = cond && cond.ComparisonOperator === 'BEGINS_WITH' ? cond.ComparisonValue : '';
        const all = [...kvsChannels.values()].filter((c) => c.name.startsWith(prefix)).map(info);
        const start = Number(input.NextToken || 0);
        const out = { ChannelInfoList: all.slice(start, start + 10) };
        if (start + 10 < all.length) out.NextToken = String(start + 10);
        return ok(out);
      }
      case '/ListTagsForResource':
        return ch ? ok({ Tags: ch.tags }) : error(404, 'ResourceNotFoundException', 'no such resource');
      case '/v1/get-ice-server-config': {
        if (!ch) return error(404, 'ResourceNotFoundException', 'no such channel');
        if (input.Service && input.Service !== 'TURN') return error(400, 'InvalidArgumentException', 'Service must be TURN');
        const ttl = limits.turnTtlSeconds;
        const expires = Math.floor(Date.now() / 1000) + ttl;
        stats.iceServerConfigs.push({ arn, clientId: input.ClientId || null, expiresAt: expires * 1000, at: Date.now() });
        // A TURN server on a closed loopback port: the browsers try it and fall back to their
        // host candidates at once (no DNS, nothing leaves the machine).
        return ok({ IceServerList: [{ Uris: ['turn:127.0.0.1:9?transport=udp'], Username: `${expires}:${ch.name}:${input.ClientId || ''}`, Password: 'local-turn-password', Ttl: ttl }] });
      }
      default:
        return error(404, 'UnknownOperationException', `unknown operation ${p}`);
    }
  }

  // S3 (the recordings bucket), path-style on this origin, passed to moto's S3: the function's
  // own calls (signed in the Authorization header) and the browsers' presigned PUTs and GETs.
  // What moto does not check is checked here ("Authenticating Requests: Using Query Parameters
  // (AWS Signature Version 4)",
  // https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-query-string-auth.html): a presigned
  // URL is refused once X-Amz-Date + X-Amz-Expires has passed, and every request must be made
  // with the function's credentials (its execution role; browsers hold no S3 credentials).
  // Same origin as the page here, so CORS does not come into play (the template's rule does).
  function s3(req, res, url, body, scope) {
    const record = { method: req.method, path: url.pathname, presigned: url.searchParams.has('X-Amz-Signature'), status: null, at: process.hrtime.bigint() };
    stats.s3Calls.push(record);
    const refuse403 = (code, message) => {
      record.status = 403;
      res.writeHead(403, { 'content-type': 'application/xml' }).end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${code}</Code><Message>${message}</Message></Error>`);
    };
    if (scope.accessKeyId !== FUNCTION_KEY.id) return refuse403('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
    if (record.presigned) {
      const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(url.searchParams.get('X-Amz-Date') || '');
      const expires = Number(url.searchParams.get('X-Amz-Expires'));
      if (!m || !(expires > 0 && expires <= 604800)) return refuse403('AuthorizationQueryParametersError', 'X-Amz-Date and X-Amz-Expires are required');
      const signedAt = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]);
      if (Date.now() > signedAt + expires * 1000) return refuse403('AccessDenied', 'Request has expired');
    }
    const headers = { ...req.headers, host: motoUrl.host };
    const up = http.request({ host: motoUrl.hostname, port: motoUrl.port, method: req.method, path: req.url, headers, agent: motoAgent }, (r) => {
      record.status = r.statusCode;
      res.writeHead(r.statusCode, r.headers);
      r.pipe(res);
    });
    up.on('error', (e) => {
      record.status = 502;
      res.writeHead(502, { 'content-type': 'text/plain' }).end(e.message);
    });
    up.end(body);
  }

  front.on('request', async (req, res) => {
    const url = new URL(req.url, origin);
    const body = await readBody(req);
    const scope = sigv4Scope({ headers: req.headers, url });
    if (!scope) {
      if (req.method === 'GET' || req.method === 'HEAD') serveStatic(req, res, { csp, config: webClientConfig });
      else res.writeHead(403, { 'content-type': 'application/json' }).end('{"message":"Missing Authentication Token"}');
      return;
    }
    if (scope.region !== REGION) {
      res.writeHead(403, { 'content-type': 'application/json', 'x-amzn-errortype': 'InvalidSignatureException' });
      res.end(JSON.stringify({ message: `Credential should be scoped to a valid region, not '${scope.region}'` }));
      return;
    }
    if (scope.service === 's3') s3(req, res, url, body, scope);
    else if (scope.service === 'execute-api') management(req, res, url, body);
    else if (scope.service === 'sts') sts(req, res, body, scope);
    else if (scope.service === 'kinesisvideo') kvsControl(req, res, url, body, scope);
    else res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ message: `no stand-in for ${scope.service}` }));
  });
  front.on('upgrade', (req, raw) => {
    const url = new URL(req.url, origin);
    if (url.pathname === `/${stage}`) apiGateway(req, raw);
    else if (url.searchParams.has('X-Amz-ChannelARN')) relay.handle(req, raw, url);
    else refuse(raw, 404, 'Not Found');
  });

  // -------------------------------------------------------------------------------------------
  // The function: `workers` bootstrap processes with the environment Lambda gives one
  // (its reserved variables and the execution role's credentials), the template's variables,
  // and the local-only endpoint settings (per-service AWS_ENDPOINT_URL_*, SSL_CERT_FILE).
  const lambdaEnv = {
    PATH: process.env.PATH,
    AWS_LAMBDA_RUNTIME_API: runtimeAddr,
    AWS_LAMBDA_FUNCTION_NAME: `${stackName}-voice`,
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE: String(deployed.function.memorySize),
    AWS_LAMBDA_FUNCTION_VERSION: '$LATEST',
    AWS_LAMBDA_LOG_GROUP_NAME: `/aws/lambda/${stackName}-voice`,
    _HANDLER: deployed.function.handler,
    AWS_REGION: REGION,
    AWS_DEFAULT_REGION: REGION,
    AWS_ACCESS_KEY_ID: FUNCTION_KEY.id,
    AWS_SECRET_ACCESS_KEY: FUNCTION_KEY.secret,
    AWS_SESSION_TOKEN: FUNCTION_KEY.token,
    ...env,
    AWS_ENDPOINT_URL_DYNAMODB: dynamoEndpoint,
    AWS_ENDPOINT_URL_SECRETS_MANAGER: deployed.endpoint,
    AWS_ENDPOINT_URL_STS: origin,
    AWS_ENDPOINT_URL_KINESIS_VIDEO: origin,
    AWS_ENDPOINT_URL_S3: origin,
    SSL_CERT_FILE: certs.caFile,
    AWS_EC2_METADATA_DISABLED: 'true',
    RUST_LOG: process.env.RUST_LOG || 'info',
  };
  for (let i = 0; i < workers; i += 1) {
    const child = spawn(BOOTSTRAP, [], { env: { ...lambdaEnv, AWS_LAMBDA_LOG_STREAM_NAME: `local-${i}` }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(child);
    const onLine = (l) => {
      let parsed;
      try {
        parsed = JSON.parse(l);
      } catch {
        parsed = { raw: l };
      }
      parsed.worker = i;
      stats.lambdaLog.push(parsed);
      log(`lambda[${i}] ${l}`);
    };
    lines(child.stdout, onLine);
    lines(child.stderr, onLine);
    child.on('exit', (code, signal) => {
      if (!closed) stats.exits.push({ worker: i, code, signal });
    });
  }
  try {
    await until(() => {
      if (stats.exits.length) throw new Error(`a bootstrap exited at start-up: ${JSON.stringify(stats.exits)}; log: ${JSON.stringify(stats.lambdaLog.slice(-5))}`);
      return runtime.waiters.length >= workers;
    }, `${workers} bootstrap(s) polling the Runtime API`, 60000);
  } catch (e) {
    await close();
    throw e;
  }

  /** Items of a DynamoDB table on moto (Scan through its JSON API; moto checks no signature). */
  async function scan(table) {
    const r = await fetch(deployed.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'DynamoDB_20120810.Scan', authorization: `AWS4-HMAC-SHA256 Credential=AKIDLOCALSTACK/20260101/${REGION}/dynamodb/aws4_request, SignedHeaders=host, Signature=${'0'.repeat(64)}` },
      body: JSON.stringify({ TableName: table }),
    });
    if (!r.ok) throw new Error(`scan ${table}: HTTP ${r.status} ${await r.text()}`);
    return (await r.json()).Items;
  }

  /** Writes one item (DynamoDB JSON) straight into a moto table, past the function. */
  async function putItem(table, item) {
    const r = await fetch(deployed.endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-amz-json-1.0', 'x-amz-target': 'DynamoDB_20120810.PutItem', authorization: `AWS4-HMAC-SHA256 Credential=AKIDLOCALSTACK/20260101/${REGION}/dynamodb/aws4_request, SignedHeaders=host, Signature=${'0'.repeat(64)}` },
      body: JSON.stringify({ TableName: table, Item: item }),
    });
    if (!r.ok) throw new Error(`put into ${table}: HTTP ${r.status} ${await r.text()}`);
  }

  return {
    url: `${origin}/`,
    webSocketUrl: deployed.outputs.WebSocketUrl,
    webClientConfig,
    ca: certs.ca,
    env,
    tables: deployed.tables,
    buckets: deployed.buckets,
    stats,
    routes: deployed.routes,
    scan,
    /** Open API Gateway connections, oldest first. */
    connections: () => [...connections.values()].map((c) => ({ id: c.id, remotePort: c.remotePort })),
    /** The cut-offs in force (REAL_LIMITS' fields), read when checked: a test may change them. */
    limits,
    /**
     * Gives one open API Gateway connection a duration cap of its own (closed with 1001 at the
     * next check once that old, as at the 2-hour cut-off): "two hours have passed" for it alone.
     */
    capConnection(connectionId, capMs) {
      const c = connections.get(connectionId);
      if (!c) throw new Error(`no connection ${connectionId}`);
      c.capMs = capMs;
    },
    /** KVS signaling connections open now matching `match({arn, role, clientId, user})` get a cap of their own (aws-stand-ins.mjs). */
    capKvsConnections: (match, capMs) => relay.capConnections(match, capMs),
    /** The connection id of the client whose local port is `port`. */
    connectionIdOf: (port) => {
      for (const c of connections.values()) if (c.remotePort === port) return c.id;
      return null;
    },
    /**
     * The connection vanishes without API Gateway telling the function (a lost $disconnect):
     * the TCP connection is reset, @connections answers GoneException from now on.
     */
    vanish(connectionId) {
      const c = connections.get(connectionId);
      if (!c) throw new Error(`no connection ${connectionId}`);
      c.vanished = true;
      connections.delete(connectionId);
      c.socket.destroy();
    },
    putItem,
    /**
     * Puts a channel into the KVS stand-in as if created earlier by someone: `tags` (e.g.
     * another stack's voiceStack), `ageMs` since its creation; ACTIVE. Returns {name, arn}.
     */
    addChannel({ name, tags, ageMs = 0 }) {
      if ([...kvsChannels.values()].some((c) => c.name === name)) throw new Error(`channel ${name} exists`);
      const created = Date.now() - ageMs;
      const c = { name, arn: `arn:aws:kinesisvideo:${REGION}:${ACCOUNT}:channel/${name}/${created}`, version: `v${String((version += 1)).padStart(12, '0')}`, tags: { ...tags }, created, status: 'ACTIVE', activeAt: created, goneAt: null };
      kvsChannels.set(c.arn, c);
      return { name: c.name, arn: c.arn };
    },
    /**
     * A throttling burst: from the next KVS API call on (the function's or a page's), for `ms`,
     * every KVS API call (control plane and GetIceServerConfig) is answered
     * ClientLimitExceededException. `startOn({path, caller ('function' | 'session'), arn})`, if
     * given, picks the call that starts it (e.g. the first one a page makes). Signaling
     * connections already open stay open. The burst is recorded in stats.kvsBursts.
     */
    throttleKvs(ms, { startOn = null } = {}) {
      burst = { ms, startOn };
    },
    /** From now on, GetIceServerConfig hands out TURN credentials that live `s` seconds. */
    setTurnTtl(s) {
      limits.turnTtlSeconds = s;
    },
    /** The KVS channels that exist now (CREATING or ACTIVE). */
    channels: () => {
      refreshChannels();
      return [...kvsChannels.values()].filter((c) => c.status !== 'DELETING').map((c) => ({ ...c }));
    },
    /** Invokes the function as EventBridge's schedule does (the sweep). */
    sweep: () => invoke({ version: '0', id: crypto.randomUUID(), 'detail-type': 'Scheduled Event', source: 'aws.events', account: ACCOUNT, time: new Date().toISOString(), region: REGION, resources: [], detail: {} }),
    /** A raw WebSocket client of the API (aws-stand-ins.mjs connectWebSocket). */
    connect: () => connectWebSocket(deployed.outputs.WebSocketUrl, { ca: certs.ca }),
    close,
  };
}

/**
 * A raw client of the stack's WebSocket API: `request(action, body)` → the reply frame,
 * `ok(action, body)` → its data (failing otherwise), `event(name, pred)` → the first such event
 * not yet taken. `label` names it in request ids and messages.
 */
export async function rawClient(stack, label, waitMs = 20000) {
  const socket = await stack.connect();
  const c = { label, socket, id: stack.connectionIdOf(socket.localPort), events: [], replies: new Map(), seq: 0 };
  socket.onmessage = (text) => {
    const m = JSON.parse(text);
    if (m.type === 'reply' && m.requestId) c.replies.set(m.requestId, m);
    else if (m.type === 'event') c.events.push(m);
  };
  c.request = async (action, body = {}) => {
    const requestId = `${label}-${(c.seq += 1)}`;
    socket.send({ action, requestId, ...body });
    return until(() => c.replies.get(requestId), `${label}'s reply to ${action}`, waitMs);
  };
  c.ok = async (action, body) => {
    const r = await c.request(action, body);
    if (r.ok !== true) throw new Error(`${label} ${action}: ${JSON.stringify(r.error)}`);
    return r.data;
  };
  c.event = async (name, pred = () => true) => {
    const e = await until(() => c.events.find((x) => x.event === name && pred(x)), `${label} to hear ${name}`, waitMs);
    c.events.splice(c.events.indexOf(e), 1);
    return e;
  };
  return c;
}

// By hand: node tests/browser/aws-local-stack.mjs [port]
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const stack = await startLocalStack({ port: Number(process.argv[2] || 0), log: process.env.VERBOSE ? (m) => console.log(m) : () => {} });
  console.log(`local AWS stack (real voice-lambda bootstrap, moto, stand-ins) at ${stack.url}`);
  console.log(`  API: ${stack.webSocketUrl}   tables: ${Object.values(stack.tables).join(', ')}`);
  console.log(`  function: ${BOOTSTRAP} x3, CHAT_MODE=${stack.env.CHAT_MODE}, stack id ${stack.env.VOICE_STACK_ID}`);
  console.log('  open the URL in two browser profiles (test certificate: accept the warning); Ctrl-C stops everything');
  const stop = async () => {
    await stack.close();
    process.exit(0);
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
