// The baseline voice-bench compares voice-server's relay with: the signaling relay a team would
// hand-write on npm `ws`. Same JSON frames as docs/protocol.md for what it does:
//   hello {name}                      -> reply data {userId, name, connectionId}
//   joinRoom {roomId}                 -> reply data {roomId, members: [userId...]}
//   signal {voiceRoomId, to, kind, payload, token} -> reply data {}; the peer gets
//                                        event {type:"event", event:"signal", voiceRoomId, from, kind, payload}
// What it does NOT do, on purpose (that is what "minimal" means, and why it is cheaper):
// no auth (the token is ignored: no HMAC, no expiry), no mesh/role checks (any member may
// signal any member), no rate limit, no outgoing-queue bound, no payload size check beyond
// ws's maxPayload, no chat rooms/approval, no voice-room state. One process, one thread.
// Listens on 127.0.0.1:$PORT (0 = ephemeral) and prints "LISTENING 127.0.0.1:<port>".
'use strict';
const { WebSocketServer } = require('ws');
const crypto = require('crypto');

const rooms = new Map(); // roomId -> Map(userId -> ws)
const wss = new WebSocketServer({ host: '127.0.0.1', port: Number(process.env.PORT || 0), maxPayload: 64 * 1024 });

function reply(ws, req, ok, dataOrError) {
  const r = { type: 'reply' };
  if (typeof req.requestId === 'string') r.requestId = req.requestId;
  r.action = typeof req.action === 'string' ? req.action : '';
  r.ok = ok;
  if (ok) r.data = dataOrError; else r.error = dataOrError;
  ws.send(JSON.stringify(r));
}
const err = (code, message) => ({ code, message, retryable: false });

wss.on('connection', (ws) => {
  ws.userId = null;
  ws.rooms = new Set();
  ws.on('message', (data, isBinary) => {
    let req;
    try { req = JSON.parse(isBinary ? '' : data.toString()); } catch { req = null; }
    if (!req || typeof req !== 'object' || typeof req.action !== 'string') {
      return reply(ws, req || {}, false, err('BAD_REQUEST', 'send a JSON object with an action'));
    }
    switch (req.action) {
      case 'hello': {
        if (!ws.userId) ws.userId = crypto.randomUUID();
        return reply(ws, req, true, { userId: ws.userId, name: String(req.name || ''), connectionId: ws.userId });
      }
      case 'joinRoom': {
        if (!ws.userId) return reply(ws, req, false, err('NOT_IDENTIFIED', 'say hello first'));
        if (typeof req.roomId !== 'string') return reply(ws, req, false, err('BAD_REQUEST', 'roomId'));
        let room = rooms.get(req.roomId);
        if (!room) { room = new Map(); rooms.set(req.roomId, room); }
        room.set(ws.userId, ws);
        ws.rooms.add(req.roomId);
        return reply(ws, req, true, { roomId: req.roomId, members: [...room.keys()] });
      }
      case 'signal': {
        if (!ws.userId) return reply(ws, req, false, err('NOT_IDENTIFIED', 'say hello first'));
        const room = rooms.get(req.voiceRoomId);
        const peer = room && room.has(ws.userId) ? room.get(req.to) : undefined;
        if (!peer || peer === ws) return reply(ws, req, false, err('NOT_PEER', 'not in this room'));
        peer.send(JSON.stringify({ type: 'event', event: 'signal', voiceRoomId: req.voiceRoomId, from: ws.userId, kind: req.kind, payload: req.payload }));
        return reply(ws, req, true, {});
      }
      default:
        return reply(ws, req, false, err('UNKNOWN_ACTION', 'hello, joinRoom, signal'));
    }
  });
  ws.on('close', () => {
    for (const id of ws.rooms) {
      const room = rooms.get(id);
      if (room && room.get(ws.userId) === ws) room.delete(ws.userId);
      if (room && room.size === 0) rooms.delete(id);
    }
  });
});
wss.on('listening', () => {
  const a = wss.address();
  process.stdout.write(`LISTENING ${a.address}:${a.port}\n`);
});
process.on('SIGTERM', () => process.exit(0));
