// The AWS deployment end to end in its deployed shape (./aws-local-stack.mjs): raw WebSocket
// clients talk to the API Gateway stand-in, which invokes the real voice-lambda bootstrap
// (several processes) through a local Lambda Runtime API; DynamoDB and Secrets Manager are moto
// with the template's tables and secret (ChatMode=builtin, the template's default); STS and KVS
// are stand-ins checking SigV4 scope and session policies. Two users sign in, create a room,
// request, approve, chat, start voice, get credentials that KVS accepts for exactly their
// channels and roles, leave, reconnect with their resume token, lose a connection without a
// $disconnect (GoneException clean-up), and end. Leave and end release channels into the pool
// (CHANNEL_POOL_TABLE) in quarantine, still ACTIVE on KVS; a later join gets a new channel or one
// whose quarantine is over, never a quarantined one; the sweep evicts only idle channels and
// deletes nothing another stack tagged.
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

// voice-domain/src/pool.rs: LeasePolicy::kvs(ttl).quarantine() = ttl + KVS_SESSION_CAP +
// QUARANTINE_MARGIN.
const KVS_SESSION_CAP_S = 3600;
const QUARANTINE_MARGIN_S = 60;

/** The credential lifetime the function asks STS for (every AssumeRole the same). */
function credentialTtlSeconds(stack) {
  const seconds = new Set(stack.stats.assumeRole.filter((a) => a.status === 200).map((a) => a.seconds));
  assert.equal(seconds.size, 1, `one credential TTL: ${[...seconds]}`);
  return [...seconds][0];
}
const quarantineMs = (stack) => (credentialTtlSeconds(stack) + KVS_SESSION_CAP_S + QUARANTINE_MARGIN_S) * 1000;

/** The channel pool table (the function's CHANNEL_POOL_TABLE) on moto: arn -> plain item. */
async function poolItems(stack) {
  const plain = (v) => (v.S !== undefined ? v.S : v.N !== undefined ? Number(v.N) : v);
  const items = await stack.scan(stack.env.CHANNEL_POOL_TABLE);
  return new Map(items.map((i) => [i.channelArn.S, Object.fromEntries(Object.entries(i).map(([k, v]) => [k, plain(v)]))]));
}

/** The channel ARNs CreateSignalingChannel answered. */
const createdChannels = (stack) => stack.stats.kvsCalls.filter((c) => c.path === '/createSignalingChannel' && c.status === 200).map((c) => c.arn);

/** A position in the stack's records, and the wall clock then. */
const mark = (stack) => ({ posts: stack.stats.posts.length, kvs: stack.stats.kvsCalls.length, dynamo: stack.stats.dynamoCalls.length, wall: Date.now() });

/**
 * `arns` were released into the pool after `event` was posted (since `since`): each pool item is
 * free, released between `since` and now, and in quarantine until exactly released + the
 * quarantine of LeasePolicy with the stack's credential TTL; KVS still lists each ACTIVE, and
 * nothing was deleted. Telling first matters: the room drops its links to a released channel
 * before anything else may happen to it (without a pool, the delete closes its connections).
 */
async function releasedIntoPool(stack, arns, since, event) {
  const items = await until(async () => {
    const pool = await poolItems(stack);
    return arns.every((a) => pool.get(a) && pool.get(a).state === 'free') ? pool : null;
  }, `${arns.length} channel(s) released into the pool`);
  const now = Date.now();
  const q = quarantineMs(stack);
  for (const arn of arns) {
    const it = items.get(arn);
    assert.ok(it.releasedAt >= since.wall && it.releasedAt <= now, `released during the step: ${JSON.stringify(it)}`);
    assert.equal(it.freeFrom - it.releasedAt, q, `quarantine = credential TTL + 1 h session cap + 60 s: ${JSON.stringify(it)}`);
    assert.ok(it.freeFrom >= since.wall + q && it.freeFrom <= now + q, 'free from about now + quarantine');
    assert.equal(it.freeKey, 'free', 'listed in the free-by-time index');
    assert.equal(it.holderVoiceRoomId, undefined, 'no holder any more');
  }
  const kvs = new Map(stack.channels().map((c) => [c.arn, c]));
  for (const arn of arns) assert.equal(kvs.get(arn) && kvs.get(arn).status, 'ACTIVE', `${arn} still ACTIVE on KVS, kept for reuse`);
  const deletes = stack.stats.kvsCalls.slice(since.kvs).filter((c) => c.path === '/deleteSignalingChannel');
  assert.deepEqual(deletes, [], 'a release deletes nothing');
  const posted = stack.stats.posts.slice(since.posts).filter((p) => p.event === event);
  const releases = stack.stats.dynamoCalls
    .slice(since.dynamo)
    .filter((c) => c.target === 'UpdateItem' && c.input && c.input.ExpressionAttributeValues && c.input.ExpressionAttributeValues[':freeFrom'] && arns.includes(c.input.Key.channelArn.S));
  assert.ok(posted.length && releases.length >= arns.length, `${event} posted (${posted.length}) and channels released (${releases.length})`);
  const lastPost = posted.reduce((m, p) => (p.at > m ? p.at : m), 0n);
  const firstRelease = releases.reduce((m, c) => (c.at < m ? c.at : m), releases[0].at);
  assert.ok(lastPost < firstRelease, `every ${event} was posted before the first release into the pool (${Number(firstRelease - lastPost) / 1e6} ms)`);
  return items;
}

/**
 * Puts a channel of this stack into KVS and into the pool as the function writes a release:
 * released `releasedAgoMs` ago, free from then + `quarantine`.
 */
async function seedPooled(stack, label, releasedAgoMs, quarantine = quarantineMs(stack)) {
  const ch = stack.addChannel({ name: `voice-seeded-${label}-${crypto.randomBytes(4).toString('hex')}`, tags: { app: 'voice-rooms', voiceStack: stack.env.VOICE_STACK_ID }, ageMs: releasedAgoMs + 60000 });
  const releasedAt = Date.now() - releasedAgoMs;
  const freeFrom = releasedAt + quarantine;
  await stack.putItem(stack.env.CHANNEL_POOL_TABLE, { channelArn: { S: ch.arn }, channelName: { S: ch.name }, state: { S: 'free' }, freeKey: { S: 'free' }, freeFrom: { N: String(freeFrom) }, releasedAt: { N: String(releasedAt) } });
  return { ...ch, releasedAt, freeFrom };
}

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
  // The table also holds the sign-up gate's counter per source address and hour (not a connection).
  const items = async () => (await stack.scan(stack.env.CONNECTIONS_TABLE)).map((i) => i.connectionId.S);
  const connectionItems = async () => (await items()).filter((id) => !id.startsWith('signup#')).sort();
  assert.deepEqual(await connectionItems(), [ada.id, bo.id].sort(), 'hello binds each connection in the template\'s connections table');
  const counters = (await stack.scan(stack.env.CONNECTIONS_TABLE)).filter((i) => i.connectionId.S.startsWith('signup#'));
  assert.deepEqual(counters.map((i) => i.signups.N), ['2'], 'two new users charged to the one source address API Gateway reported');

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
  // The pool was empty: both channels were created and recorded as held by their participant.
  const held = await poolItems(stack);
  assert.deepEqual([...held.keys()].sort(), [adaGrant.self.channelArn, boGrant.self.channelArn].sort());
  assert.deepEqual([...held.values()].map((i) => [i.state, i.holderVoiceRoomId, i.holderUserId]).sort(), [['held', voiceRoomId, adaHello.userId], ['held', voiceRoomId, boHello.userId]].sort());
  const peakParticipants = 2;
  const quarantined = new Set();
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

  // Bo leaves: Ada hears it; after she was told, his channel goes back into the pool, in
  // quarantine (his and Ada's credentials for it still work until they expire), not deleted.
  const beforeLeave = mark(stack);
  await bo.ok('leaveVoiceRoom', { voiceRoomId });
  assert.equal((await ada.event('participantLeft', (e) => e.user === boHello.userId)).reason, 'left');
  await releasedIntoPool(stack, [boGrant.self.channelArn], beforeLeave, 'participantLeft');
  quarantined.add(boGrant.self.channelArn);
  assert.equal((await poolItems(stack)).get(adaGrant.self.channelArn).state, 'held', 'Ada still holds hers');

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
  // His old channel is in quarantine: he gets a new one, not that one.
  assert.ok(!quarantined.has(bo2Grant.self.channelArn), 'a rejoin never gets a quarantined channel');
  assert.ok(createdChannels(stack).includes(bo2Grant.self.channelArn), 'Bo\'s new channel was created');

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

  // Ada (master) ends the room: every participant's channel goes back into the pool, in
  // quarantine, after everyone was told.
  const beforeEnd = mark(stack);
  const ended = await ada.ok('endVoiceRoom', { voiceRoomId });
  assert.equal(ended.status, 'ended');
  await ada.event('voiceEnded');
  await releasedIntoPool(stack, [adaGrant.self.channelArn, bo2Grant.self.channelArn], beforeEnd, 'voiceEnded');
  quarantined.add(adaGrant.self.channelArn).add(bo2Grant.self.channelArn);
  assert.equal(quarantined.size, 3);

  // A second voice room: the only pooled channels are in quarantine, so Ada's is a new one.
  const voice2 = await ada.ok('createVoiceRoom', { roomId });
  const ada2Grant = await ada.ok('getVoiceCredentials', { voiceRoomId: voice2.voiceRoomId });
  assert.ok(!quarantined.has(ada2Grant.self.channelArn), `a quarantined channel was handed out: ${ada2Grant.self.channelArn}`);
  assert.ok(createdChannels(stack).includes(ada2Grant.self.channelArn), 'Ada\'s second channel was created');
  const created = createdChannels(stack);
  assert.equal(new Set(created).size, created.length);
  assert.ok(created.length <= peakParticipants + quarantined.size, `${created.length} channels created for a peak of ${peakParticipants} participants and ${quarantined.size} in quarantine`);
  let pool = await poolItems(stack);
  assert.deepEqual([...pool.keys()].sort(), [...created].sort(), 'every channel created is kept in the pool, none deleted');
  for (const arn of quarantined) assert.equal(pool.get(arn).state, 'free');
  assert.equal(pool.get(ada2Grant.self.channelArn).holderVoiceRoomId, voice2.voiceRoomId);

  // A pooled channel whose quarantine is over is reused: Bo, back on a third connection,
  // claims it (already ACTIVE, no CreateSignalingChannel); the quarantined ones stay free.
  const reusable = await seedPooled(stack, 'reusable', quarantineMs(stack) + 60000);
  const bo3 = await client(stack, 'bo3');
  await bo3.ok('hello', { name: 'Bo', resumeToken: boHello.resumeToken });
  const bo3Grant = await bo3.ok('getVoiceCredentials', { voiceRoomId: voice2.voiceRoomId });
  assert.equal(bo3Grant.self.channelArn, reusable.arn, 'the channel past its quarantine was claimed');
  assert.equal(createdChannels(stack).length, created.length, 'no channel created for Bo');
  pool = await poolItems(stack);
  assert.deepEqual([pool.get(reusable.arn).state, pool.get(reusable.arn).holderUserId], ['held', boHello.userId]);
  for (const arn of quarantined) assert.equal(pool.get(arn).state, 'free', 'quarantined channels stay free');

  // The scheduled sweep through the real runtime, with three more channels around: another
  // stack's (old, untagged by us: never ours to delete), an orphan of ours (old, in no room
  // and not pooled: deleted), and a pooled one of ours idle past CHANNEL_POOL_IDLE_HOURS
  // (evicted and deleted). The quarantined channels are neither evicted nor deleted.
  const foreign = stack.addChannel({ name: `voice-other-stack-${crypto.randomBytes(4).toString('hex')}`, tags: { app: 'voice-rooms', voiceStack: 'another-stack-0000' }, ageMs: 3600000 });
  const orphan = stack.addChannel({ name: `voice-orphan-${crypto.randomBytes(4).toString('hex')}`, tags: { app: 'voice-rooms', voiceStack: stack.env.VOICE_STACK_ID }, ageMs: 3600000 });
  const idle = await seedPooled(stack, 'idle', (Number(stack.env.CHANNEL_POOL_IDLE_HOURS) + 1) * 3600000);
  const beforeSweep = mark(stack);
  const poolBefore = await poolItems(stack);
  const report = await stack.sweep();
  assert.deepEqual(report, { roomsEnded: [], participantsRemoved: 0, participantsReconnecting: 0, channelsDeleted: 1, leasesReclaimed: 0, channelsEvicted: 1, failures: 0 });
  const deleted = stack.stats.kvsCalls.slice(beforeSweep.kvs).filter((c) => c.path === '/deleteSignalingChannel');
  assert.deepEqual(deleted.map((c) => [c.arn, c.status]).sort(), [[orphan.arn, 200], [idle.arn, 200]].sort(), 'the sweep deleted exactly the orphan and the idle pooled channel');
  const after = new Map(stack.channels().map((c) => [c.arn, c]));
  assert.equal(after.get(foreign.arn) && after.get(foreign.arn).status, 'ACTIVE', 'another stack\'s channel untouched');
  pool = await poolItems(stack);
  assert.equal(pool.has(idle.arn), false, 'the idle channel left the pool');
  for (const arn of [...quarantined, ada2Grant.self.channelArn, reusable.arn]) {
    assert.deepEqual(pool.get(arn), poolBefore.get(arn), `pool item of ${arn} unchanged by the sweep`);
    assert.equal(after.get(arn) && after.get(arn).status, 'ACTIVE', `${arn} still ACTIVE`);
  }
  assert.equal(pool.size, poolBefore.size - 1);

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
  t.diagnostic(`${createdChannels(stack).length} channels created for ${peakParticipants} participants at most at once and ${quarantined.size} released into quarantine; one reused from the pool`);
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
  // The admin's channel is created with the room. Four channels of this stack wait in the pool,
  // their quarantine over: the nine joins race to claim them (a conditional claim: each goes to
  // one join only), and the rest create their own.
  const seeded = [];
  // (No credentials issued yet, so the longest quarantine: a TTL of at most one hour.)
  const longest = (3600 + KVS_SESSION_CAP_S + QUARANTINE_MARGIN_S) * 1000;
  for (let i = 0; i < 4; i += 1) seeded.push(await seedPooled(stack, `ready${i}`, longest + 60000 + i * 1000, longest));

  const started = Date.now();
  const grants = await Promise.all(users.map((u) => u.request('getVoiceCredentials', { voiceRoomId })));
  const joinMs = Date.now() - started;
  assert.deepEqual(grants.filter((g) => !g.ok).map((g) => g.error), [], 'every join succeeds (KVS throttles are retried)');
  // The mesh plan: in join order, the k-th participant views the k-1 earlier channels.
  assert.deepEqual(grants.map((g) => g.data.peers.length).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const { voiceRoom } = await admin.ok('getVoiceRoom', { roomId });
  assert.equal(voiceRoom.participants.length, 10);
  assert.equal(stack.channels().length, 10);
  const held = grants.map((g) => g.data.self.channelArn);
  assert.equal(new Set(held).size, 10, 'one channel each');
  // The pool holds exactly the ten channels the participants hold, each held by its own
  // participant: the four seeded ones claimed once each, six created.
  let pool = await poolItems(stack);
  assert.deepEqual([...pool.keys()].sort(), [...held].sort(), 'the pool is the participants\' channels');
  const holderOf = new Map(voiceRoom.participants.map((p) => [p.userId, p]));
  assert.equal(holderOf.size, 10);
  for (const [i, g] of grants.entries()) {
    const it = pool.get(g.data.self.channelArn);
    assert.deepEqual([it.state, it.holderVoiceRoomId, it.holderUserId], ['held', voiceRoomId, hellos[i].userId], `${users[i].label}'s channel held by them`);
  }
  assert.ok(seeded.every((s) => held.includes(s.arn)), 'every claimable pooled channel was claimed');
  const created = createdChannels(stack);
  assert.equal(created.length, 10 - seeded.length, 'a channel was created only for joins that found none to claim');

  // The scheduled sweep through the real runtime: nothing to remove in a live room.
  const report = await stack.sweep();
  assert.deepEqual(report, { roomsEnded: [], participantsRemoved: 0, participantsReconnecting: 0, channelsDeleted: 0, leasesReclaimed: 0, channelsEvicted: 0, failures: 0 });
  assert.deepEqual(await poolItems(stack), pool, 'the sweep left the pool as it was');

  const beforeEnd = mark(stack);
  await admin.ok('endVoiceRoom', { voiceRoomId });
  await admin.event('voiceEnded');
  await releasedIntoPool(stack, held, beforeEnd, 'voiceEnded');
  pool = await poolItems(stack);
  assert.equal(pool.size, 10, 'ten channels, all free in quarantine');
  assert.deepEqual(stack.stats.exits, []);
  assert.deepEqual(stack.stats.lambdaLog.filter((l) => l.level === 'ERROR' || l.raw), []);
  // Log lines inside a request's span (the runtime's "Lambda runtime invoke", then "route"):
  // every instance served some of the requests.
  const served = new Set(stack.stats.lambdaLog.filter((l) => (l.spans || []).some((s) => s.name === 'route')).map((l) => l.worker));
  assert.equal(served.size, 3, 'all three instances served requests');
  const by = (p) => stack.stats.kvsCalls.filter((c) => c.path === p);
  const lostClaims = stack.stats.dynamoCalls.filter((c) => c.target === 'UpdateItem' && c.input && c.input.ExpressionAttributeValues[':held'] && c.input.ExpressionAttributeValues[':now'] && c.status !== 200).length;
  t.diagnostic(`pool: ${seeded.length} ready channels claimed by ${seeded.length} of 9 concurrent joins (${lostClaims} conditional claims lost to another join), ${created.length} created`);
  t.diagnostic(`10 simultaneous joins: ${joinMs} ms; ${by('/v1/get-ice-server-config').length} GetIceServerConfig (${by('/v1/get-ice-server-config').filter((c) => c.error).length} throttled), ${by('/getSignalingChannelEndpoint').length} GetSignalingChannelEndpoint, ${stack.stats.assumeRole.length} AssumeRole`);
});
