// A local stand-in for the deployed AWS stack, for driving the web client's AWS mode in a real
// browser (aws-mode.test.mjs) or by hand (`node tests/browser/aws-fake-stack.mjs`, then open the
// printed URL with ?user=alice in one browser profile and ?user=bob in another).
//
// One HTTPS server on 127.0.0.1 (self-signed certificate made with openssl; browsers must be told
// to accept it) plays three parts:
// - CloudFront + S3: voice-server/static/ and a config.json in AWS mode pointing at itself;
// - API Gateway + voice-lambda: a WebSocket at /production speaking the voice actions and events
//   of docs/protocol.md, with a tiny in-memory voice room model, in the stack's two chat modes:
//   - `chat: 'existing'` (ChatMode=existing): there is no chat app: a connection is "registered"
//     by the query parameter ?user=<id> (what the client passes through from its page URL);
//     without it every action answers NOT_IDENTIFIED, as the Lambda does for a connection the
//     chat app does not know. Chat room "room-1" has members alice, bob, carol, dave;
//   - `chat: 'builtin'` (ChatMode=builtin): the Lambda is the chat app: `hello` (resume tokens),
//     createRoom, listRooms, requestJoin, approveJoin/denyJoin, listMembers, sendMessage,
//     getMessages, signOutEverywhere and their events as docs/protocol.md ("Chat actions",
//     "Events") has them, in memory and without the limits; no room exists at start, ?user= is
//     ignored, and every action but `hello` and `ping` before `hello` answers NOT_IDENTIFIED;
// - Kinesis Video Streams signaling: WebSockets at /kvs as the real SDK opens them (SigV4-signed
//   URL with X-Amz-ChannelARN and, for viewers, X-Amz-ClientId), relaying the SDK's message format
//   (viewer → master with senderClientId, master → the viewer named by recipientClientId). It
//   checks what the real session policy would: the access key must be current and grant that
//   channel in that role, else the upgrade is refused with 403.
//
// What it does NOT check: SigV4 signatures, real STS/KVS behaviour, TURN. That needs a real AWS
// account (docs/web-client.md).

import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { accept, kvsSignaling, refuse, serveStatic, templateCsp } from './aws-stand-ins.mjs';

export { templateCsp };


// ---------------------------------------------------------------------------------------------
// The stack

/**
 * Starts the fake stack. `credentialTtlMs` is the lifetime of the "STS" credentials it hands out
 * (short, to see the client refresh them).
 * @returns {Promise<{url, port, stats, close}>}
 */
export async function startFakeStack({ port = 0, credentialTtlMs = 3600e3, region = 'eu-west-1', chat = 'existing', log = () => {} } = {}) {
  if (chat !== 'existing' && chat !== 'builtin' && chat !== null) throw new Error(`chat must be "existing", "builtin" or null (no "chat" in config.json), not ${chat}`);
  const builtin = chat === 'builtin';
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'voice-fake-stack-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
  const tls = { key: fs.readFileSync(path.join(dir, 'key.pem')), cert: fs.readFileSync(path.join(dir, 'cert.pem')) };
  fs.rmSync(dir, { recursive: true, force: true });

  let origin = '';
  const stats = { kvsConnections: [], kvsRefused: [], actions: [], relayed: 0 };
  // chatRoomId -> { name, adminUserId, members (approved user ids), pending (user ids) }
  const chatRooms = new Map(builtin ? [] : [['room-1', { name: 'room-1', adminUserId: 'alice', members: new Set(['alice', 'bob', 'carol', 'dave']), pending: new Set() }]]);
  const users = new Map(); // builtin: userId -> { name, generation }
  const messages = new Map(); // builtin: chatRoomId -> [message]
  const connections = new Map(); // connectionId -> {user, socket}
  const voiceRooms = new Map(); // voiceRoomId -> room
  const activeByChat = new Map(); // chatRoomId -> voiceRoomId
  const keys = new Map(); // accessKeyId -> {grants: Map(channelArn -> role), expiresAt}
  let seq = 0;

  const arnOf = (name) => `arn:aws:kinesisvideo:${region}:123456789012:channel/${name}/1700000000000`;
  const clientIdOf = (connectionId) => connectionId.replace(/=/g, '.').replace(/\+/g, '-').replace(/\//g, '_');
  const view = (r) => ({
    voiceRoomId: r.voiceRoomId,
    chatRoomId: r.chatRoomId,
    status: r.status,
    masterUserId: r.masterUserId,
    participants: r.participants.map((p) => ({ userId: p.userId, muted: p.muted, joinedAt: p.joinedAt, channelArn: p.channelArn, clientId: clientIdOf(p.connectionId) })),
    capacity: 10,
    ...(r.endedReason ? { endedReason: r.endedReason } : {}),
  });
  const membersOf = (chatRoomId) => (chatRooms.get(chatRoomId) || { members: new Set() }).members;
  const notify = (chatRoomId, ev) => {
    const members = membersOf(chatRoomId);
    for (const c of connections.values()) if (members.has(c.user)) c.socket.send({ type: 'event', ...ev });
  };
  const notifyUser = (userId, ev) => {
    for (const c of connections.values()) if (c.user === userId) c.socket.send({ type: 'event', ...ev });
  };
  const deleteChannel = (arn) => relay.close(arn);

  class Refusal extends Error {
    constructor(code, message, status = 400) {
      super(message);
      this.code = code;
      this.status = status;
    }
  }

  function identified(conn) {
    if (!conn.user) throw new Refusal('NOT_IDENTIFIED', builtin ? 'send hello first' : 'this connection is not known to the chat app', 401);
  }

  function member(conn, chatRoomId) {
    identified(conn);
    const room = chatRooms.get(chatRoomId);
    if (!room) throw new Refusal('CHAT_ROOM_NOT_FOUND', `no chat room ${chatRoomId}`, 404);
    if (room.pending.has(conn.user)) throw new Refusal('NOT_APPROVED', 'your join request is waiting for the admin', 403);
    if (!room.members.has(conn.user)) throw new Refusal('NOT_MEMBER', 'not a member of this chat room', 403);
    return room;
  }

  function roomFor(conn, voiceRoomId) {
    if (!conn.user) throw new Refusal('NOT_IDENTIFIED', 'this connection is not known to the chat app', 401);
    const r = voiceRooms.get(voiceRoomId);
    if (!r) throw new Refusal('VOICE_ROOM_NOT_FOUND', 'no such voice room', 404);
    return r;
  }

  function leave(r, userId, reason) {
    const i = r.participants.findIndex((p) => p.userId === userId);
    if (i < 0) return;
    const [p] = r.participants.splice(i, 1);
    deleteChannel(p.channelArn);
    notify(r.chatRoomId, { event: 'participantLeft', voiceRoomId: r.voiceRoomId, chatRoomId: r.chatRoomId, user: userId, reason });
    if (!r.participants.length) end(r, { kind: 'lastParticipantLeft' });
    else if (r.masterUserId === userId) {
      r.masterUserId = r.participants[0].userId;
      notify(r.chatRoomId, { event: 'masterChanged', voiceRoomId: r.voiceRoomId, chatRoomId: r.chatRoomId, master: r.masterUserId });
    }
  }

  function end(r, reason) {
    for (const p of r.participants) deleteChannel(p.channelArn);
    r.participants = [];
    r.status = 'ended';
    r.endedReason = reason;
    activeByChat.delete(r.chatRoomId);
    notify(r.chatRoomId, { event: 'voiceEnded', voiceRoomId: r.voiceRoomId, chatRoomId: r.chatRoomId, reason });
  }

  function grantFor(conn, r) {
    const me = r.participants.find((p) => p.userId === conn.user);
    const idx = r.participants.indexOf(me);
    const access = (p, role) => ({ channelArn: p.channelArn, channelName: p.channelArn.split('/')[1], role, wssEndpoint: `${origin.replace('https:', 'wss:')}/kvs`, httpsEndpoint: `${origin}/kvs-https`, iceServers: [] });
    const accessKeyId = `ASIAFAKE${(seq += 1)}`;
    const expiresAt = Date.now() + credentialTtlMs;
    const grants = new Map([[me.channelArn, 'MASTER']]);
    const peers = r.participants.slice(0, idx).map((p) => {
      grants.set(p.channelArn, 'VIEWER');
      return { userId: p.userId, ...access(p, 'VIEWER') };
    });
    keys.set(accessKeyId, { grants, expiresAt, user: conn.user });
    return {
      voiceRoomId: r.voiceRoomId,
      chatRoomId: r.chatRoomId,
      userId: conn.user,
      clientId: clientIdOf(me.connectionId),
      signalingChannelARN: me.channelArn,
      role: 'MASTER',
      self: access(me, 'MASTER'),
      peers,
      credentials: { kind: 'aws', accessKeyId, secretAccessKey: `secret-${accessKeyId}`, sessionToken: `session-${accessKeyId}`, region },
      expiresAt,
      newlyJoined: false,
      room: view(r),
    };
  }

  const actions = {
    getVoiceRoom(conn, b) {
      member(conn, b.roomId);
      const id = activeByChat.get(b.roomId);
      return { voiceRoom: id ? view(voiceRooms.get(id)) : null };
    },
    createVoiceRoom(conn, b) {
      member(conn, b.roomId);
      if (activeByChat.has(b.roomId)) throw new Refusal('ALREADY_ACTIVE', `voice room ${activeByChat.get(b.roomId)} is active`, 409);
      const voiceRoomId = crypto.randomUUID();
      const r = { voiceRoomId, chatRoomId: b.roomId, status: 'active', masterUserId: conn.user, participants: [] };
      r.participants.push({ userId: conn.user, muted: false, joinedAt: Date.now(), channelArn: arnOf(`voice-${crypto.randomUUID()}`), connectionId: conn.id });
      voiceRooms.set(voiceRoomId, r);
      activeByChat.set(b.roomId, voiceRoomId);
      notify(b.roomId, { event: 'voiceStarted', voiceRoomId, chatRoomId: b.roomId, master: conn.user });
      notify(b.roomId, { event: 'participantJoined', voiceRoomId, chatRoomId: b.roomId, user: conn.user, muted: false });
      return view(r);
    },
    getVoiceCredentials(conn, b) {
      const r = roomFor(conn, b.voiceRoomId);
      member(conn, r.chatRoomId);
      if (r.status !== 'active') throw new Refusal('VOICE_ROOM_ENDED', 'the voice room has ended', 409);
      let me = r.participants.find((p) => p.userId === conn.user);
      const newlyJoined = !me;
      if (!me) {
        me = { userId: conn.user, muted: false, joinedAt: Date.now(), channelArn: arnOf(`voice-${crypto.randomUUID()}`), connectionId: conn.id };
        r.participants.push(me);
        notify(r.chatRoomId, { event: 'participantJoined', voiceRoomId: r.voiceRoomId, chatRoomId: r.chatRoomId, user: conn.user, muted: false });
      }
      me.connectionId = conn.id;
      return { ...grantFor(conn, r), newlyJoined };
    },
    setMute(conn, b) {
      const r = roomFor(conn, b.voiceRoomId);
      const me = r.participants.find((p) => p.userId === conn.user);
      if (!me) throw new Refusal('NOT_PARTICIPANT', 'not in this voice room', 409);
      if (me.muted !== !!b.muted) {
        me.muted = !!b.muted;
        notify(r.chatRoomId, { event: 'muteChanged', voiceRoomId: r.voiceRoomId, chatRoomId: r.chatRoomId, user: conn.user, muted: me.muted });
      }
      return view(r);
    },
    leaveVoiceRoom(conn, b) {
      const r = roomFor(conn, b.voiceRoomId);
      if (!r.participants.some((p) => p.userId === conn.user)) throw new Refusal('NOT_PARTICIPANT', 'not in this voice room', 409);
      leave(r, conn.user, 'left');
      return view(r);
    },
    endVoiceRoom(conn, b) {
      const r = roomFor(conn, b.voiceRoomId);
      if (r.status !== 'active') throw new Refusal('VOICE_ROOM_ENDED', 'the voice room has ended', 409);
      const admin = (chatRooms.get(r.chatRoomId) || {}).adminUserId === conn.user;
      if (r.masterUserId !== conn.user && !admin) throw new Refusal('NOT_ALLOWED', "only the voice room's master or the chat room's admin can end it; use leaveVoiceRoom to leave", 403);
      end(r, { kind: r.masterUserId === conn.user ? 'endedByMaster' : 'endedByAdmin', by: conn.user });
      return view(r);
    },
  };


  // --- the built-in chat (ChatMode=builtin), as docs/protocol.md "Chat actions" ----------------

  const nameOf = (userId) => (users.get(userId) || { name: userId }).name;
  const online = (userId) => [...connections.values()].some((c) => c.user === userId);
  const tokens = new Map(); // resume token -> { userId, generation }

  function checkName(raw, what) {
    const name = typeof raw === 'string' ? raw.trim() : '';
    if (!name) throw new Refusal('BAD_REQUEST', `${what} must not be empty`);
    if ([...name].length > 64) throw new Refusal('TOO_LARGE', `${what} is over 64 characters`);
    return name;
  }

  function adminOf(conn, b) {
    identified(conn);
    const room = chatRooms.get(b.roomId);
    if (!room) throw new Refusal('CHAT_ROOM_NOT_FOUND', `no chat room ${b.roomId}`, 404);
    if (room.adminUserId !== conn.user) throw new Refusal('NOT_ADMIN', "only the room's admin can do that", 403);
    return room;
  }

  const chatActions = {
    ping() {
      return {};
    },
    hello(conn, b) {
      const name = checkName(b.name, 'name');
      const saved = typeof b.resumeToken === 'string' ? tokens.get(b.resumeToken) : null;
      const resumed = !!(saved && users.has(saved.userId) && users.get(saved.userId).generation === saved.generation);
      const firstConnection = !conn.user;
      if (!conn.user) conn.user = resumed ? saved.userId : crypto.randomUUID();
      const user = users.get(conn.user) || { name, generation: 0 };
      user.name = name;
      users.set(conn.user, user);
      const resumeToken = `resume.${crypto.randomBytes(12).toString('hex')}`;
      tokens.set(resumeToken, { userId: conn.user, generation: user.generation });
      if (firstConnection && [...connections.values()].filter((c) => c.user === conn.user).length === 1) presence(conn.user, true);
      return { userId: conn.user, name, connectionId: conn.id, resumeToken, resumed };
    },
    signOutEverywhere(conn) {
      identified(conn);
      users.get(conn.user).generation += 1;
      return {};
    },
    createRoom(conn, b) {
      identified(conn);
      const name = checkName(b.name, 'room name');
      if ([...chatRooms.values()].some((r) => r.name.toLowerCase() === name.toLowerCase())) throw new Refusal('ROOM_EXISTS', 'a chat room with this name exists; pick another name or join that one', 409);
      const roomId = crypto.randomUUID();
      chatRooms.set(roomId, { name, adminUserId: conn.user, members: new Set([conn.user]), pending: new Set() });
      messages.set(roomId, []);
      for (const c of connections.values()) if (c.user) c.socket.send({ type: 'event', event: 'roomCreated', roomId, name, adminUserId: conn.user });
      return { roomId, name };
    },
    listRooms(conn) {
      identified(conn);
      return {
        rooms: [...chatRooms.entries()].map(([roomId, r]) => {
          const myState = r.members.has(conn.user) ? 'approved' : r.pending.has(conn.user) ? 'pending' : 'none';
          return { roomId, name: r.name, adminUserId: r.adminUserId, memberCount: r.members.size, myState, voiceRoomId: myState === 'approved' ? activeByChat.get(roomId) || null : null };
        }),
      };
    },
    requestJoin(conn, b) {
      identified(conn);
      const room = chatRooms.get(b.roomId);
      if (!room) throw new Refusal('CHAT_ROOM_NOT_FOUND', `no chat room ${b.roomId}`, 404);
      if (room.members.has(conn.user)) return { state: 'approved' };
      if (!room.pending.has(conn.user)) {
        room.pending.add(conn.user);
        notifyUser(room.adminUserId, { event: 'joinRequested', roomId: b.roomId, userId: conn.user, name: nameOf(conn.user) });
      }
      return { state: 'pending' };
    },
    approveJoin(conn, b) {
      const room = adminOf(conn, b);
      if (!room.pending.delete(b.userId)) throw new Refusal('NO_PENDING_REQUEST', 'no pending request from this user', 409);
      room.members.add(b.userId);
      notifyUser(b.userId, { event: 'joinApproved', roomId: b.roomId, userId: b.userId });
      notify(b.roomId, { event: 'memberJoined', roomId: b.roomId, userId: b.userId, name: nameOf(b.userId) });
      return { roomId: b.roomId, userId: b.userId, state: 'approved' };
    },
    denyJoin(conn, b) {
      const room = adminOf(conn, b);
      if (!room.pending.delete(b.userId)) throw new Refusal('NO_PENDING_REQUEST', 'no pending request from this user', 409);
      notifyUser(b.userId, { event: 'joinDenied', roomId: b.roomId, userId: b.userId });
      return { roomId: b.roomId, userId: b.userId, state: 'none' };
    },
    listMembers(conn, b) {
      const room = member(conn, b.roomId);
      const row = (userId, state) => ({ userId, name: nameOf(userId), state, isAdmin: userId === room.adminUserId, online: online(userId) });
      const approved = [...room.members].map((u) => row(u, 'approved'));
      approved.sort((x, y) => (y.isAdmin - x.isAdmin) || x.name.localeCompare(y.name));
      return { members: [...approved, ...[...room.pending].map((u) => row(u, 'pending'))] };
    },
    sendMessage(conn, b) {
      member(conn, b.roomId);
      const text = typeof b.text === 'string' ? b.text.trim() : '';
      if (!text) throw new Refusal('BAD_REQUEST', 'text must not be empty');
      if ([...text].length > 2000) throw new Refusal('TOO_LARGE', 'text is over 2 000 characters');
      const m = { roomId: b.roomId, userId: conn.user, name: nameOf(conn.user), text, at: Date.now() };
      messages.get(b.roomId).push(m);
      notify(b.roomId, { event: 'message', ...m });
      return m;
    },
    getMessages(conn, b) {
      member(conn, b.roomId);
      return { messages: messages.get(b.roomId).slice(-100) };
    },
  };

  /** presenceChanged to the approved members of every room the user belongs to. */
  function presence(userId, isOnline) {
    const told = new Set();
    for (const r of chatRooms.values()) if (r.members.has(userId)) for (const u of r.members) told.add(u);
    for (const u of told) notifyUser(u, { event: 'presenceChanged', userId, online: isOnline });
  }

  function apiGateway(socket, url) {
    const id = `${crypto.randomBytes(9).toString('base64').slice(0, 11)}=`;
    // Existing chat app: ?user= stands in for its $connect identifying the user. Builtin: hello.
    const conn = { id, user: builtin ? null : url.searchParams.get('user'), socket };
    connections.set(id, conn);
    socket.onclose = () => {
      connections.delete(id);
      if (builtin && conn.user && !online(conn.user)) presence(conn.user, false);
      // $disconnect: leave every voice room this connection is in.
      for (const r of voiceRooms.values()) {
        const p = r.participants.find((x) => x.connectionId === id);
        if (p && r.status === 'active') leave(r, p.userId, 'disconnected');
      }
    };
    socket.onmessage = (text) => {
      let body;
      try {
        body = JSON.parse(text);
      } catch {
        socket.send({ type: 'reply', action: '', ok: false, error: { code: 'BAD_REQUEST', message: 'not JSON', retryable: false } });
        return;
      }
      const { action, requestId } = body;
      stats.actions.push({ user: conn.user, action });
      // ping: the executor answers it in both modes; the chat actions only in builtin mode.
      const fn = actions[action] || (action === 'ping' || builtin ? chatActions[action] : null);
      try {
        if (!fn) throw new Refusal('UNKNOWN_ACTION', `unknown action ${action}`);
        if (builtin && !conn.user && action !== 'hello' && action !== 'ping') identified(conn);
        socket.send({ type: 'reply', requestId, action, ok: true, data: fn(conn, body) });
      } catch (e) {
        if (!(e instanceof Refusal)) throw e;
        socket.send({ type: 'reply', requestId, action, ok: false, error: { code: e.code, message: e.message, retryable: false } });
      }
    };
  }

  // The KVS signaling side (aws-stand-ins.mjs): what the real session policy would allow is
  // checked against the grants this model handed out with each access key.
  const relay = kvsSignaling({
    stats,
    log,
    // KVS's per-connection limits (rates and the base64 messagePayload size) are enforced as KVS
    // does: a refused offer is never delivered, so a page whose offers are too big, or whose
    // pacing has no margin, fails here and not first on real AWS.
    enforce: true,
    authorize({ arn, role, scope }) {
      const key = keys.get(scope.accessKeyId);
      if (!key) return { why: 'unknown access key' };
      if (key.expiresAt <= Date.now()) return { why: 'expired credentials' };
      if (key.grants.get(arn) !== role) return { why: `credentials do not grant ${role} on ${arn}` };
      if (!relay.has(arn) && ![...voiceRooms.values()].some((r) => r.participants.some((p) => p.channelArn === arn))) return { why: 'no such channel' };
      return { user: key.user };
    },
  });
  const kvs = relay.handle;

  const csp = templateCsp(region);
  const server = https.createServer(tls, (req, res) => {
    // config.json as the template's WebClientConfig output writes it; chat null: a config.json
    // from before the field.
    serveStatic(req, res, { csp, config: { mode: 'aws', webSocketUrl: `${origin.replace('https:', 'wss:')}/production`, region, ...(chat ? { chat } : {}) } });
  });
  server.on('upgrade', (req, raw) => {
    const url = new URL(req.url, 'https://127.0.0.1');
    if (url.pathname === '/production') apiGateway(accept(req, raw), url);
    else if (url.pathname === '/kvs') kvs(req, raw, url);
    else refuse(raw, 404, 'Not Found');
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actualPort = server.address().port;
  origin = `https://127.0.0.1:${actualPort}`;
  return {
    url: `${origin}/`,
    port: actualPort,
    stats,
    /** The next SDP answer KVS would deliver to `user` is lost (aws-stand-ins.mjs kvsSignaling). */
    dropNextAnswerTo: (user) => relay.dropNextAnswerTo(user),
    /** Closes every WebSocket of a user's connections to the fake API Gateway. */
    dropConnectionsOf(user) {
      for (const c of [...connections.values()]) if (c.user === user) c.socket.close();
    },
    close: () =>
      new Promise((resolve) => {
        for (const c of connections.values()) c.socket.close();
        relay.closeAll();
        server.close(() => resolve());
        server.closeAllConnections && server.closeAllConnections();
      }),
  };
}

// By hand: node tests/browser/aws-fake-stack.mjs [port] [existing|builtin]
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1])) {
  const chatMode = process.argv[3] || 'existing';
  const stack = await startFakeStack({ port: Number(process.argv[2] || 8443), chat: chatMode, log: (m) => console.log(m) });
  if (chatMode === 'builtin') console.log(`fake AWS stack (built-in chat) at ${stack.url} (self-signed certificate): open it in two browser profiles and sign in with a name in each`);
  else console.log(`fake AWS stack at ${stack.url} (self-signed certificate): open ${stack.url}?user=alice#room=room-1 and ${stack.url}?user=bob#room=room-1`);
}
