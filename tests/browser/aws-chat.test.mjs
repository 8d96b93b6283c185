// The AWS deployment end to end in its deployed shape (./aws-local-stack.mjs): raw WebSocket
// clients talk to the API Gateway stand-in, which invokes the real voice-lambda bootstrap
// (several processes) through a local Lambda Runtime API; DynamoDB and Secrets Manager are moto
// with the template's tables and secret (ChatMode=builtin, the template's default); STS and KVS
// are stand-ins checking SigV4 scope and session policies. Two users sign in, create a room,
// request, approve, chat, start voice, get credentials that KVS accepts for exactly their
// channels and roles, leave, reconnect with their resume token, lose a connection without a
// $disconnect (GoneException clean-up), and end.
//
// Needs target/debug/voice-lambda (cargo build -p voice-lambda --locked), python3 with moto
// and boto3, and openssl. Without them the test is skipped, or fails under VOICE_TEST_STRICT=1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { BOOTSTRAP, startLocalStack, until } from './aws-local-stack.mjs';
import { connectWebSocket } from './aws-stand-ins.mjs';

const WAIT_MS = 15000;

function prerequisites() {
  const missing = [];
  if (!fs.existsSync(BOOTSTRAP)) missing.push(`no ${BOOTSTRAP} (cargo build -p voice-lambda --locked)`);
  for (const [cmd, args, what] of [
    ['python3', ['-c', 'import moto.server, boto3, yaml'], 'python3 with moto[server], boto3 and yaml (scripts/setup-test-deps)'],
    ['openssl', ['version'], 'openssl'],
  ]) {
    try {
      execFileSync(cmd, args, { stdio: 'ignore' });
    } catch {
      missing.push(`no ${what}`);
    }
  }
  return missing;
}
const missing = prerequisites();
if (missing.length && process.env.VOICE_TEST_STRICT === '1') throw new Error(`aws-chat.test.mjs prerequisites missing: ${missing.join('; ')}`);
const skip = missing.length ? `SKIPPED: ${missing.join('; ')}` : false;

/** A raw client of the WebSocket API: requests by requestId, events kept in order. */
async function client(stack, label) {
  const socket = await stack.connect();
  const c = { label, socket, id: stack.connectionIdOf(socket.localPort), events: [], replies: new Map(), other: [], seq: 0 };
  assert.ok(c.id, `${label}: the API Gateway stand-in knows the connection`);
  socket.onmessage = (text) => {
    const m = JSON.parse(text);
    if (m.type === 'reply' && m.requestId) c.replies.set(m.requestId, m);
    else if (m.type === 'event') c.events.push(m);
    else c.other.push(m);
  };
  c.request = async (action, body = {}) => {
    const requestId = `${label}-${(c.seq += 1)}`;
    socket.send({ action, requestId, ...body });
    const reply = await until(() => c.replies.get(requestId), `${label}'s reply to ${action}`, WAIT_MS);
    assert.equal(reply.action, action, `${label}: the reply names the action`);
    return reply;
  };
  c.ok = async (action, body) => {
    const r = await c.request(action, body);
    assert.equal(r.ok, true, `${label} ${action}: ${JSON.stringify(r.error)}`);
    return r.data;
  };
  /** The first event named `name` (matching `pred`) not yet taken; waits for it. */
  c.event = async (name, pred = () => true) => {
    const e = await until(() => c.events.find((x) => x.event === name && pred(x)), `${label} to hear ${name}`, WAIT_MS);
    c.events.splice(c.events.indexOf(e), 1);
    return e;
  };
  return c;
}

/** A SigV4-presigned KVS signaling URL as the browser SDK builds it (scope checked, not the signature). */
function presigned(grant, access, role) {
  const { accessKeyId, sessionToken, region } = grant.credentials;
  const date = new Date().toISOString().replace(/[-:]/g, '').slice(0, 8);
  const u = new URL(access.wssEndpoint);
  u.searchParams.set('X-Amz-ChannelARN', access.channelArn);
  if (role === 'VIEWER') u.searchParams.set('X-Amz-ClientId', grant.clientId);
  u.searchParams.set('X-Amz-Algorithm', 'AWS4-HMAC-SHA256');
  u.searchParams.set('X-Amz-Credential', `${accessKeyId}/${date}/${region}/kinesisvideo/aws4_request`);
  u.searchParams.set('X-Amz-Date', `${date}T000000Z`);
  u.searchParams.set('X-Amz-Expires', '299');
  u.searchParams.set('X-Amz-Security-Token', sessionToken);
  u.searchParams.set('X-Amz-SignedHeaders', 'host');
  u.searchParams.set('X-Amz-Signature', crypto.randomBytes(32).toString('hex'));
  return u.toString();
}

test('AWS stack, locally in its deployed shape: sign in, rooms, approval, messages, voice, resume, lost disconnect', { skip, timeout: 180000 }, async (t) => {
  const started = Date.now();
  const stack = await startLocalStack({ workers: 3, params: { ChatMode: 'builtin' } });
  t.after(() => stack.close());
  const bootMs = Date.now() - started;

  // The template's API: the voice routes, $disconnect (one-way), $default; no $connect.
  const routeKeys = stack.routes.map((r) => r.routeKey);
  assert.ok(routeKeys.includes('$default') && routeKeys.includes('$disconnect') && !routeKeys.includes('$connect'), routeKeys.join(','));
  assert.equal(stack.env.CHAT_MODE, 'builtin');

  const ada = await client(stack, 'ada');
  const bo = await client(stack, 'bo');

  // Before hello every action but ping is NOT_IDENTIFIED (401).
  const early = await ada.request('createRoom', { name: 'General' });
  assert.equal(early.ok, false);
  assert.equal(early.error.code, 'NOT_IDENTIFIED');
  assert.deepEqual(await ada.ok('ping'), {});

  // Sign in: a user id and a resume token signed with the key from Secrets Manager.
  const adaHello = await ada.ok('hello', { name: 'Ada' });
  assert.equal(adaHello.resumed, false);
  assert.match(adaHello.resumeToken, /\./);
  const boHello = await bo.ok('hello', { name: 'Bo' });
  assert.notEqual(boHello.userId, adaHello.userId);
  const connectionItems = async () => (await stack.scan(stack.env.CONNECTIONS_TABLE)).map((i) => i.connectionId.S).sort();
  assert.deepEqual(await connectionItems(), [ada.id, bo.id].sort(), 'hello binds each connection in the template\'s connections table');

  // A room; both hear of it.
  const room = await ada.ok('createRoom', { name: 'General' });
  const roomId = room.roomId;
  assert.equal((await ada.event('roomCreated')).roomId, roomId);
  assert.equal((await bo.event('roomCreated')).roomId, roomId);

  // Bo asks, Ada (admin) hears it and approves; Bo hears the approval.
  const asked = await bo.ok('requestJoin', { roomId });
  assert.equal(asked.state, 'pending');
  const requested = await ada.event('joinRequested');
  assert.equal(requested.userId, boHello.userId);
  const refused = await bo.request('sendMessage', { roomId, text: 'too early' });
  assert.equal(refused.ok, false, 'a pending member cannot post');
  await ada.ok('approveJoin', { roomId, userId: boHello.userId });
  await bo.event('joinApproved');
  await ada.event('memberJoined', (e) => e.userId === boHello.userId);

  // Messages reach both, and the history keeps them.
  await bo.ok('sendMessage', { roomId, text: 'hi Ada' });
  assert.equal((await ada.event('message')).text, 'hi Ada');
  assert.equal((await bo.event('message')).text, 'hi Ada');
  const history = await ada.ok('getMessages', { roomId });
  assert.deepEqual(history.messages.map((m) => [m.userId, m.text]), [[boHello.userId, 'hi Ada']]);

  // Voice: Ada starts it (her channel is created, CREATING then ACTIVE), Bo hears it.
  const voice = await ada.ok('createVoiceRoom', { roomId });
  const voiceRoomId = voice.voiceRoomId;
  assert.equal(voice.masterUserId, adaHello.userId);
  assert.equal((await bo.event('voiceStarted')).voiceRoomId, voiceRoomId);
  const adaGrant = await ada.ok('getVoiceCredentials', { voiceRoomId });
  assert.equal(adaGrant.role, 'MASTER');
  assert.equal(adaGrant.credentials.kind, 'aws');
  assert.match(adaGrant.credentials.accessKeyId, /^ASIA/);
  assert.equal(adaGrant.self.wssEndpoint, stack.url.replace('https:', 'wss:').replace(/\/$/, ''), 'the endpoint KVS gave for her channel');
  const boGrant = await bo.ok('getVoiceCredentials', { voiceRoomId });
  assert.equal(boGrant.peers.length, 1);
  assert.equal(boGrant.peers[0].channelArn, adaGrant.self.channelArn, 'Bo views Ada\'s channel');
  await ada.event('participantJoined', (e) => e.user === boHello.userId);
  const channels = stack.channels();
  assert.equal(channels.length, 2, 'one channel per participant');
  assert.ok(channels.every((c) => c.tags.voiceStack === stack.env.VOICE_STACK_ID && c.status === 'ACTIVE'), JSON.stringify(channels));
  const assumed = stack.stats.assumeRole.filter((a) => a.status === 200);
  assert.ok(assumed.length >= 2 && assumed.every((a) => a.roleArn === stack.env.KVS_ROLE_ARN && a.seconds <= 3600), JSON.stringify(stack.stats.assumeRole));

  // The session policies STS was given allow exactly the plan: Bo views Ada's channel and
  // masters his own; he may not master Ada's.
  const kvs = async (url) => {
    try {
      const s = await connectWebSocket(url, { ca: stack.ca });
      s.close(1000);
      return 'open';
    } catch (e) {
      return e.status || e.message;
    }
  };
  assert.equal(await kvs(presigned(boGrant, boGrant.peers[0], 'VIEWER')), 'open', JSON.stringify(stack.stats.kvsRefused));
  assert.equal(await kvs(presigned(boGrant, boGrant.self, 'MASTER')), 'open', JSON.stringify(stack.stats.kvsRefused));
  assert.equal(await kvs(presigned(boGrant, { ...boGrant.peers[0] }, 'MASTER')), 403, 'Bo may not master Ada\'s channel');
  assert.equal(await kvs(presigned(adaGrant, boGrant.self, 'VIEWER')), 403, 'Ada (the earlier participant) has no grant on Bo\'s channel');

  // Bo leaves: Ada hears it; his channel is deleted, after she was told (deleting a channel
  // closes its signaling connections: told first, her page drops the link instead of
  // reconnecting to a closing channel).
  const tellsBeforeDeleting = (event, since) => {
    const posted = stack.stats.posts.slice(since.posts).filter((p) => p.event === event);
    const deletes = stack.stats.kvsCalls.slice(since.kvs).filter((c) => c.path === '/deleteSignalingChannel');
    assert.ok(posted.length && deletes.length, `${event} posted (${posted.length}) and channels deleted (${deletes.length})`);
    const lastPost = posted.reduce((m, p) => (p.at > m ? p.at : m), 0n);
    const firstDelete = deletes.reduce((m, c) => (c.at < m ? c.at : m), deletes[0].at);
    assert.ok(lastPost < firstDelete, `every ${event} was posted before the first DeleteSignalingChannel (${Number(firstDelete - lastPost) / 1e6} ms)`);
  };
  const mark = () => ({ posts: stack.stats.posts.length, kvs: stack.stats.kvsCalls.length });
  const beforeLeave = mark();
  await bo.ok('leaveVoiceRoom', { voiceRoomId });
  assert.equal((await ada.event('participantLeft', (e) => e.user === boHello.userId)).reason, 'left');
  await until(() => stack.channels().length === 1, 'Bo\'s channel deleted');
  tellsBeforeDeleting('participantLeft', beforeLeave);

  // Reconnect: Bo's socket closes ($disconnect reaches the function), a new connection resumes
  // with the token: the same user, still an approved member.
  bo.socket.close(1000);
  await until(async () => !(await connectionItems()).includes(bo.id), '$disconnect to unbind Bo\'s first connection');
  const bo2 = await client(stack, 'bo2');
  const resumed = await bo2.ok('hello', { name: 'Bo', resumeToken: boHello.resumeToken });
  assert.equal(resumed.userId, boHello.userId);
  assert.equal(resumed.resumed, true);
  assert.deepEqual((await bo2.ok('getMessages', { roomId })).messages.map((m) => m.text), ['hi Ada']);
  const bo2Grant = await bo2.ok('getVoiceCredentials', { voiceRoomId });
  assert.equal(bo2Grant.userId, boHello.userId);
  await ada.event('participantJoined', (e) => e.user === boHello.userId);

  // A lost $disconnect: Bo's second connection vanishes and API Gateway never tells the
  // function. The next events posted to it get GoneException (410): the chat unbinds it, and
  // voice treats its participant as disconnected (reconnecting).
  stack.vanish(bo2.id);
  await ada.ok('setMute', { voiceRoomId, muted: true });
  await ada.ok('sendMessage', { roomId, text: 'still there?' });
  await until(() => stack.stats.posts.some((p) => p.connectionId === bo2.id && p.status === 410), 'a PostToConnection to the vanished connection answered 410');
  await until(async () => !(await connectionItems()).includes(bo2.id), 'the gone connection unbound from the connections table');
  const seen = await until(async () => {
    const v = (await ada.ok('getVoiceRoom', { roomId })).voiceRoom;
    const p = v && v.participants.find((x) => x.userId === boHello.userId);
    return p && p.connection === 'reconnecting' ? v : null;
  }, 'Bo shown as reconnecting after GoneException');
  assert.equal(seen.participants.length, 2);

  // Ada (master) ends the room: every channel goes, after everyone was told.
  const beforeEnd = mark();
  const ended = await ada.ok('endVoiceRoom', { voiceRoomId });
  assert.equal(ended.status, 'ended');
  await ada.event('voiceEnded');
  await until(() => stack.channels().length === 0, 'every channel deleted');
  tellsBeforeDeleting('voiceEnded', beforeEnd);

  // Nothing failed underneath: every invocation answered, no bootstrap died, no ERROR logged.
  const failed = stack.stats.invocations.filter((i) => i.error || !i.status);
  assert.deepEqual(failed, [], 'invocations without a response');
  assert.deepEqual(stack.stats.exits, []);
  assert.deepEqual(stack.stats.initErrors, []);
  const errors = stack.stats.lambdaLog.filter((l) => l.level === 'ERROR' || l.raw);
  assert.deepEqual(errors, [], 'the function logged errors');
  const started3 = new Set(stack.stats.lambdaLog.filter((l) => l.fields && l.fields.message === 'voice-lambda ready').map((l) => l.worker));
  assert.equal(started3.size, 3, 'three execution environments started (cold start: config, clients, resume key)');
  const ms = stack.stats.invocations.map((i) => i.ms).sort((a, b) => a - b);
  t.diagnostic(`stack up in ${bootMs} ms; ${ms.length} invocations, median ${ms[Math.floor(ms.length / 2)]} ms, max ${ms.at(-1)} ms; ${stack.stats.posts.length} posts; ${stack.stats.kvsCalls.length} KVS calls (${stack.stats.kvsCalls.filter((c) => c.status !== 200).length} refused: ${[...new Set(stack.stats.kvsCalls.filter((c) => c.error).map((c) => c.error))].join(', ')})`);
});

test('AWS stack, locally: ten people join one voice room at once through three function instances', { skip, timeout: 180000 }, async (t) => {
  const stack = await startLocalStack({ workers: 3, params: { ChatMode: 'builtin' } });
  t.after(() => stack.close());
  const users = await Promise.all([...Array(10)].map((_, i) => client(stack, `u${i}`)));
  const hellos = await Promise.all(users.map((u, i) => u.ok('hello', { name: `User ${i}` })));
  const [admin] = users;
  const { roomId } = await admin.ok('createRoom', { name: 'All hands' });
  await Promise.all(users.slice(1).map((u) => u.ok('requestJoin', { roomId })));
  await Promise.all(hellos.slice(1).map((h) => admin.ok('approveJoin', { roomId, userId: h.userId })));
  const { voiceRoomId } = await admin.ok('createVoiceRoom', { roomId });

  const started = Date.now();
  const grants = await Promise.all(users.map((u) => u.request('getVoiceCredentials', { voiceRoomId })));
  const joinMs = Date.now() - started;
  assert.deepEqual(grants.filter((g) => !g.ok).map((g) => g.error), [], 'every join succeeds (KVS throttles are retried)');
  // The mesh plan: in join order, the k-th participant views the k-1 earlier channels.
  assert.deepEqual(grants.map((g) => g.data.peers.length).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const { voiceRoom } = await admin.ok('getVoiceRoom', { roomId });
  assert.equal(voiceRoom.participants.length, 10);
  assert.equal(stack.channels().length, 10);
  assert.equal(new Set(grants.map((g) => g.data.self.channelArn)).size, 10, 'one channel each');

  // The scheduled sweep through the real runtime: nothing to remove in a live room.
  const report = await stack.sweep();
  assert.deepEqual(report, { roomsEnded: [], participantsRemoved: 0, participantsReconnecting: 0, channelsDeleted: 0, failures: 0 });

  await admin.ok('endVoiceRoom', { voiceRoomId });
  await until(() => stack.channels().length === 0, 'every channel deleted');
  assert.deepEqual(stack.stats.exits, []);
  assert.deepEqual(stack.stats.lambdaLog.filter((l) => l.level === 'ERROR' || l.raw), []);
  // Log lines inside a request's span (the runtime's "Lambda runtime invoke", then "route"):
  // every instance served some of the requests.
  const served = new Set(stack.stats.lambdaLog.filter((l) => (l.spans || []).some((s) => s.name === 'route')).map((l) => l.worker));
  assert.equal(served.size, 3, 'all three instances served requests');
  const by = (p) => stack.stats.kvsCalls.filter((c) => c.path === p);
  t.diagnostic(`10 simultaneous joins: ${joinMs} ms; ${by('/v1/get-ice-server-config').length} GetIceServerConfig (${by('/v1/get-ice-server-config').filter((c) => c.error).length} throttled), ${by('/getSignalingChannelEndpoint').length} GetSignalingChannelEndpoint, ${stack.stats.assumeRole.length} AssumeRole`);
});
