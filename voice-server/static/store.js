// The client's state and the one pure function that changes it. Everything the page shows is
// derived from this state (views.js); every protocol event, reply and connection change becomes
// an action passed to `reduce`. No DOM, no sockets, no timers here, so node:test runs it as is
// (tests/browser/store.test.mjs).

/** Toasts visible at once; older ones are dropped, equal texts collapse into one with a count. */
export const MAX_TOASTS = 3;
/** Messages kept for the open room. */
export const MAX_MESSAGES = 200;
/** Messages kept once the user has paged back through older history ("Show older messages"). */
export const MAX_MESSAGES_PAGED = 1000;

/**
 * The state before anything happened. `conn`: 'idle' (login form), 'connecting', 'online',
 * 'reconnecting' (was online, lost the server, retrying). `voice`: the voice session we are in
 * (phase 'joining' | 'connected' | 'reconnecting'), or null.
 */
export function initialState() {
  return {
    conn: 'idle',
    attempt: 0,
    retryInMs: null,
    me: null,
    rooms: [],
    // Where the next page of each list starts (the server's `nextCursor`; null: nothing more),
    // and whether the user has loaded more than the first page (a refresh then keeps them).
    roomsCursor: null,
    roomsPaged: false,
    currentRoomId: null,
    members: [],
    membersCursor: null,
    membersPaged: false,
    messages: [],
    messagesCursor: null,
    messagesPaged: false,
    requests: {},
    names: {},
    voiceRooms: {},
    // Voice events received per chat room: a view read by a request sent before the latest
    // event (see viewIsStale) may predate it and is not applied.
    voiceEpochs: {},
    notices: {},
    voice: null,
    busy: false,
    toasts: [],
    audioBlocked: false,
  };
}

/**
 * The count of voice events received for `chatRoomId` so far. A page takes it when it sends a
 * request whose reply carries a voice room view (getVoiceRoom, getVoiceCredentials, …) and
 * hands it back with the view.
 */
export function voiceEpoch(state, chatRoomId) {
  return state.voiceEpochs[chatRoomId] || 0;
}

/**
 * Whether a view read with `epoch` may be older than what the page knows: an event about the
 * room arrived while the request was in flight. The server may have read the room before that
 * change and sent the reply after the event (self-hosted: another connection's change lands
 * between a read and its reply; AWS: a Lambda reply and an @connections event are not ordered
 * at all), so applying it would undo the event, e.g. list a participant who just left. Such a
 * view is not applied; the page asks again. `epoch` undefined: no ordering known, applied.
 */
export function viewIsStale(state, chatRoomId, epoch) {
  return epoch !== undefined && epoch !== voiceEpoch(state, chatRoomId);
}

function withVoiceRoom(state, chatRoomId, view) {
  return { ...state, voiceRooms: { ...state.voiceRooms, [chatRoomId]: view && view.status === 'active' ? view : null } };
}

function patchVoiceRoom(state, ev, fn) {
  const vr = state.voiceRooms[ev.chatRoomId];
  if (!vr || vr.voiceRoomId !== ev.voiceRoomId) return state;
  return { ...state, voiceRooms: { ...state.voiceRooms, [ev.chatRoomId]: fn(vr) } };
}

function setParticipant(vr, userId, patch) {
  return { ...vr, participants: vr.participants.map((p) => (p.userId === userId ? { ...p, ...patch } : p)) };
}

function withNotice(state, chatRoomId, notice) {
  const notices = { ...state.notices };
  if (notice && notice.text) notices[chatRoomId] = notice;
  else delete notices[chatRoomId];
  return { ...state, notices };
}

/** The events that change a voice room view (they count towards its epoch, voiceEpoch). */
const VOICE_EVENTS = new Set(['voiceStarted', 'participantJoined', 'participantLeft', 'participantReconnecting', 'participantResumed', 'muteChanged', 'masterChanged', 'voiceEnded', 'screenShareStarted', 'screenShareStopped', 'screenSharePolicyChanged']);

/** One protocol event (docs/protocol.md, "Events") applied to the state. */
function applyEvent(state, ev) {
  const chat = ev.chatRoomId;
  switch (ev.event) {
    case 'voiceStarted': {
      const vr = state.voiceRooms[chat];
      let s = state;
      if (!vr || vr.voiceRoomId !== ev.voiceRoomId) {
        s = withVoiceRoom(s, chat, { voiceRoomId: ev.voiceRoomId, chatRoomId: chat, status: 'active', masterUserId: ev.master, participants: [{ userId: ev.master, muted: false }] });
      }
      const n = s.notices[chat];
      if (n && n.tag === 'ended') s = withNotice(s, chat, null);
      return s;
    }
    case 'participantJoined': {
      const known = ev.clientId ? { clientId: ev.clientId } : {};
      return patchVoiceRoom(state, ev, (vr) =>
        vr.participants.some((p) => p.userId === ev.user)
          ? setParticipant(vr, ev.user, { reconnecting: false, muted: !!ev.muted, ...known })
          : { ...vr, participants: [...vr.participants, { userId: ev.user, muted: !!ev.muted, serverMuted: false, ...known }] },
      );
    }
    case 'participantLeft':
      return patchVoiceRoom(state, ev, (vr) => ({ ...vr, participants: vr.participants.filter((p) => p.userId !== ev.user) }));
    case 'participantReconnecting':
      return patchVoiceRoom(state, ev, (vr) => setParticipant(vr, ev.user, { reconnecting: true }));
    case 'participantResumed':
      return patchVoiceRoom(state, ev, (vr) => setParticipant(vr, ev.user, { reconnecting: false, ...(ev.clientId ? { clientId: ev.clientId } : {}) }));
    case 'muteChanged': {
      const s = patchVoiceRoom(state, ev, (vr) => setParticipant(vr, ev.user, { muted: !!ev.muted, serverMuted: !!ev.serverMuted }));
      // A moderator's mute is ours too: our microphone state follows it (the page mutes the track).
      const mine = s.voice && s.voice.voiceRoomId === ev.voiceRoomId && s.me && ev.user === s.me.userId;
      return mine ? { ...s, voice: { ...s.voice, muted: !!ev.muted, serverMuted: !!ev.serverMuted } } : s;
    }
    case 'masterChanged':
      return patchVoiceRoom(state, ev, (vr) => ({ ...vr, masterUserId: ev.master }));
    // Screen sharing (docs/protocol.md, "Screen sharing"): the announced sharer and policy are
    // the truth; receivers show a screen track large only from the announced sharer.
    case 'screenShareStarted':
      return patchVoiceRoom(state, ev, (vr) => ({ ...vr, screenShare: { userId: ev.user } }));
    case 'screenShareStopped':
      return patchVoiceRoom(state, ev, (vr) => (vr.screenShare && vr.screenShare.userId === ev.user ? { ...vr, screenShare: null } : vr));
    case 'screenSharePolicyChanged':
      return patchVoiceRoom(state, ev, (vr) => ({ ...vr, screenSharePolicy: ev.policy }));
    case 'voiceEnded': {
      const vr = state.voiceRooms[chat];
      let s = state;
      if (!vr || vr.voiceRoomId === ev.voiceRoomId) s = withVoiceRoom(s, chat, null);
      if (s.voice && s.voice.voiceRoomId === ev.voiceRoomId) s = { ...s, voice: null, audioBlocked: false };
      return withNotice(s, chat, { text: 'Voice room ended', kind: 'info', tag: 'ended' });
    }
    case 'joinRequested': {
      const reqs = { ...(state.requests[ev.roomId] || {}), [ev.userId]: ev.name };
      return { ...state, names: { ...state.names, [ev.userId]: ev.name }, requests: { ...state.requests, [ev.roomId]: reqs } };
    }
    case 'memberJoined': {
      let s = { ...state, names: { ...state.names, [ev.userId]: ev.name } };
      if (s.requests[ev.roomId] && ev.userId in s.requests[ev.roomId]) {
        const reqs = { ...s.requests[ev.roomId] };
        delete reqs[ev.userId];
        s = { ...s, requests: { ...s.requests, [ev.roomId]: reqs } };
      }
      if (ev.roomId === s.currentRoomId) {
        const known = s.members.some((m) => m.userId === ev.userId);
        const members = known
          ? s.members.map((m) => (m.userId === ev.userId ? { ...m, state: 'approved' } : m))
          : [...s.members, { userId: ev.userId, name: ev.name, state: 'approved', isAdmin: false, online: true }];
        const count = members.filter((m) => m.state === 'approved').length;
        s = { ...s, members, rooms: s.rooms.map((r) => (r.roomId === ev.roomId ? { ...r, memberCount: count } : r)) };
      }
      return s;
    }
    case 'presenceChanged':
      // Someone's first connection opened or last one closed: the online dot follows at once.
      return { ...state, members: state.members.map((m) => (m.userId === ev.userId ? { ...m, online: !!ev.online } : m)) };
    case 'memberRemoved': {
      const reqs = { ...(state.requests[ev.roomId] || {}) };
      delete reqs[ev.userId];
      let s = { ...state, requests: { ...state.requests, [ev.roomId]: reqs } };
      if (s.me && ev.userId === s.me.userId) {
        // The admin removed me: the room is no longer mine to see, and its voice is gone for me.
        s = { ...s, rooms: s.rooms.map((r) => (r.roomId === ev.roomId ? { ...r, myState: 'none', voiceRoomId: null } : r)), voiceRooms: { ...s.voiceRooms, [ev.roomId]: null } };
        if (s.voice && s.voice.chatRoomId === ev.roomId) s = { ...s, voice: null, audioBlocked: false };
        if (s.currentRoomId === ev.roomId) s = { ...s, currentRoomId: null, members: [], messages: [] };
        return withNotice(s, ev.roomId, null);
      }
      if (ev.roomId === s.currentRoomId) {
        const members = s.members.filter((m) => m.userId !== ev.userId);
        const count = members.filter((m) => m.state === 'approved').length;
        s = { ...s, members, rooms: s.rooms.map((r) => (r.roomId === ev.roomId ? { ...r, memberCount: count } : r)) };
      }
      return s;
    }
    case 'message': {
      let s = ev.name ? { ...state, names: { ...state.names, [ev.userId]: ev.name } } : state;
      if (ev.roomId === s.currentRoomId) s = { ...s, messages: [...s.messages, ev].slice(-(s.messagesPaged ? MAX_MESSAGES_PAGED : MAX_MESSAGES)) };
      return s;
    }
    default:
      return state;
  }
}

/** The one way the state changes: returns a new state, never mutates `state`. */
export function reduce(state, action) {
  switch (action.type) {
    case 'connecting':
      return { ...state, conn: state.conn === 'reconnecting' ? 'reconnecting' : 'connecting' };
    case 'online': {
      // Back from a loss: notices from before are stale (they described the outage).
      const back = state.conn === 'reconnecting';
      let s = { ...state, conn: 'online', attempt: 0, retryInMs: null };
      if (action.me) s = { ...s, me: action.me, names: { ...s.names, [action.me.userId]: action.me.name } };
      if (back) s = { ...s, notices: {} };
      return s;
    }
    case 'offline':
      return {
        ...state,
        conn: state.conn === 'idle' || state.conn === 'connecting' ? (state.me ? 'reconnecting' : 'idle') : 'reconnecting',
        attempt: action.attempt || 0,
        retryInMs: action.retryInMs == null ? null : action.retryInMs,
        voice: state.voice ? { ...state.voice, phase: 'reconnecting' } : null,
        busy: false,
      };
    case 'signedOut':
      return { ...initialState() };
    case 'me':
      return { ...state, me: action.me, names: { ...state.names, [action.me.userId]: action.me.name } };
    case 'rooms': {
      let voiceRooms = { ...state.voiceRooms };
      for (const r of action.rooms) {
        const known = voiceRooms[r.roomId];
        if (!r.voiceRoomId) voiceRooms[r.roomId] = null;
        else if (!known || known.voiceRoomId !== r.voiceRoomId) delete voiceRooms[r.roomId];
      }
      // A further page ("Show more") appends; a first page (load or refresh) updates the rooms
      // it holds and keeps those of further pages already loaded.
      const fresh = new Map(action.rooms.map((r) => [r.roomId, r]));
      const rooms = action.more
        ? [...state.rooms.map((r) => fresh.get(r.roomId) || r), ...action.rooms.filter((r) => !state.rooms.some((o) => o.roomId === r.roomId))]
        : [...action.rooms, ...(state.roomsPaged ? state.rooms.filter((r) => !fresh.has(r.roomId)) : [])];
      const cursor = action.nextCursor || null;
      return {
        ...state,
        rooms,
        voiceRooms,
        roomsCursor: action.more || !state.roomsPaged ? cursor : state.roomsCursor,
        roomsPaged: state.roomsPaged || !!action.more,
      };
    }
    case 'addRoom':
      if (state.rooms.some((r) => r.roomId === action.room.roomId)) return state;
      return { ...state, rooms: [...state.rooms, action.room] };
    case 'openRoom':
      if (state.currentRoomId === action.roomId) return state;
      return { ...state, currentRoomId: action.roomId, members: [], messages: [], membersCursor: null, membersPaged: false, messagesCursor: null, messagesPaged: false };
    case 'members': {
      if (action.roomId !== state.currentRoomId) return state;
      const names = { ...state.names };
      for (const m of action.members) names[m.userId] = m.name;
      // As for rooms: a further page appends, a first page keeps further pages already loaded.
      const fresh = new Map(action.members.map((m) => [m.userId, m]));
      const keep = action.more || state.membersPaged;
      const members = keep
        ? [...state.members.map((m) => fresh.get(m.userId) || m), ...action.members.filter((m) => !state.members.some((o) => o.userId === m.userId))]
        : action.members;
      const cursor = action.nextCursor || null;
      let s = {
        ...state,
        members,
        names,
        membersCursor: action.more || !state.membersPaged ? cursor : state.membersCursor,
        membersPaged: state.membersPaged || !!action.more,
      };
      if (action.admin) {
        const pending = keep ? { ...(s.requests[action.roomId] || {}) } : {};
        for (const m of action.members) if (m.state === 'pending') pending[m.userId] = m.name;
        s = { ...s, requests: { ...s.requests, [action.roomId]: pending } };
      }
      return s;
    }
    case 'messages': {
      if (action.roomId !== state.currentRoomId) return state;
      const names = { ...state.names };
      for (const m of action.messages) if (m.name) names[m.userId] = m.name;
      const cursor = action.nextCursor || null;
      // Older history ("Show older messages") goes before what is shown.
      if (action.older) return { ...state, messages: [...action.messages, ...state.messages].slice(-MAX_MESSAGES_PAGED), names, messagesCursor: cursor, messagesPaged: true };
      return { ...state, messages: action.messages.slice(-MAX_MESSAGES), names, messagesCursor: cursor, messagesPaged: false };
    }
    case 'decided': {
      const reqs = { ...(state.requests[action.roomId] || {}) };
      delete reqs[action.userId];
      let s = { ...state, requests: { ...state.requests, [action.roomId]: reqs } };
      if (action.roomId === s.currentRoomId) {
        s = {
          ...s,
          members: action.approve ? s.members.map((m) => (m.userId === action.userId ? { ...m, state: 'approved' } : m)) : s.members.filter((m) => m.userId !== action.userId),
        };
      }
      return s;
    }
    case 'voiceRoom':
      if (viewIsStale(state, action.chatRoomId, action.epoch)) return state;
      return withVoiceRoom(state, action.chatRoomId, action.view);
    case 'event': {
      const s = applyEvent(state, action.msg);
      const chat = action.msg.chatRoomId;
      if (!VOICE_EVENTS.has(action.msg.event) || !chat) return s;
      return { ...s, voiceEpochs: { ...s.voiceEpochs, [chat]: voiceEpoch(s, chat) + 1 } };
    }
    case 'notice':
      return withNotice(state, action.chatRoomId, action.text ? { text: action.text, kind: action.kind || 'info', tag: action.tag || null } : null);
    case 'voice':
      return { ...state, voice: action.voice, audioBlocked: action.voice ? state.audioBlocked : false };
    case 'muted':
      if (!state.voice) return state;
      return { ...state, voice: { ...state.voice, muted: action.muted } };
    case 'busy':
      return { ...state, busy: !!action.busy };
    case 'audioBlocked':
      return { ...state, audioBlocked: !!action.blocked };
    case 'toast': {
      const same = state.toasts.find((t) => t.text === action.text);
      if (same) {
        return { ...state, toasts: [...state.toasts.filter((t) => t !== same), { ...same, id: action.id, count: same.count + 1 }] };
      }
      return { ...state, toasts: [...state.toasts, { id: action.id, text: action.text, kind: action.kind || 'info', count: 1 }].slice(-MAX_TOASTS) };
    }
    case 'toastGone':
      return { ...state, toasts: state.toasts.filter((t) => t.id !== action.id) };
    default:
      return state;
  }
}

// ---------------------------------------------------------------------------------------------
// Selectors: pure questions about the state, used by the views and by app.js.

/** The room being shown, or null. */
export function currentRoom(state) {
  return state.rooms.find((r) => r.roomId === state.currentRoomId) || null;
}

/** A room's name, or its id while unknown. */
export function roomName(state, roomId) {
  const r = state.rooms.find((x) => x.roomId === roomId);
  return r ? r.name : roomId;
}

/** Whether we administer `roomId`. */
export function amAdmin(state, roomId) {
  return !!state.me && isAdminOf(state, roomId, state.me.userId);
}

/** Whether `userId` administers chat room `roomId` (as far as the room list says). */
export function isAdminOf(state, roomId, userId) {
  const r = state.rooms.find((x) => x.roomId === roomId);
  return !!(r && r.adminUserId === userId);
}

/**
 * A user's display name; when another known user has the same name, with the last 4 characters
 * of the user id after it ("Kim · 3f2a"), so two people called Kim can be told apart.
 */
export function displayName(state, userId) {
  const name = state.names[userId] || (state.me && state.me.userId === userId ? state.me.name : null);
  if (!name) return userId;
  const clash = Object.entries(state.names).some(([id, n]) => id !== userId && n === name);
  return clash ? `${name} · ${String(userId).replace(/-/g, '').slice(-4)}` : name;
}

/**
 * What the voice panel of `chatRoomId` shows and offers: the truth, from the state only.
 * `features.knowsAdmins` false (AWS): who administers the chat room is unknown, so End is
 * offered to participants too and the server decides.
 */
export function voicePanel(state, chatRoomId, features = { knowsAdmins: true }) {
  const vr = state.voiceRooms[chatRoomId] || null;
  const v = state.voice;
  const inHere = !!(v && v.chatRoomId === chatRoomId);
  const inElsewhere = !!(v && !inHere);
  const online = state.conn === 'online';
  const me = state.me && state.me.userId;
  const mayEnd = !!vr && (amAdmin(state, chatRoomId) || vr.masterUserId === me || (!features.knowsAdmins && inHere));
  // Who may mute others for everyone (docs/protocol.md, serverMute): the master and the admin;
  // the master not the admin. Where admins are unknown (AWS existing mode) the master only.
  const moderates = (userId) =>
    !!vr && inHere && online && userId !== me && (amAdmin(state, chatRoomId) || (vr.masterUserId === me && !(features.knowsAdmins && isAdminOf(state, chatRoomId, userId))));
  const mine = vr && me ? vr.participants.find((p) => p.userId === me) : null;
  // Screen sharing (docs/protocol.md): one sharer at a time; under `hosts` only the master and
  // the admin. The button follows the announced state; the server decides.
  const isHost = !!vr && (vr.masterUserId === me || amAdmin(state, chatRoomId));
  const sharePolicy = (vr && vr.screenSharePolicy) || 'anyone';
  const sharer = (vr && vr.screenShare && vr.screenShare.userId) || null;
  const share = {
    policy: sharePolicy,
    sharer,
    // Our Share button: shown while the policy lets us; disabled while someone else shares.
    show: inHere && (sharePolicy !== 'hosts' || isHost || sharer === me),
    busy: !!sharer && sharer !== me,
    // The master's (or admin's) control over who may share.
    setsPolicy: inHere && online && isHost,
  };
  const serverMuted = !!(inHere && ((v && v.serverMuted) || (mine && mine.serverMuted)));
  const count = vr ? vr.participants.length : 1;
  const plural = (n) => `${n} participant${n === 1 ? '' : 's'}`;
  let pill;
  let pillClass;
  let status;
  if (inHere && (v.phase === 'reconnecting' || !online)) {
    pill = 'Reconnecting…';
    pillClass = 'pill pill-warn';
    status = 'Connection lost. Getting you back into the voice chat…';
  } else if (!online) {
    pill = 'Offline';
    pillClass = 'pill pill-warn';
    status = 'Reconnecting to the server…';
  } else if (inHere) {
    pill = v.muted ? 'In voice · muted' : 'In voice';
    pillClass = 'pill pill-live';
    status = v.phase === 'joining' ? 'Joining…' : `You are in the voice chat (${plural(count)}).`;
  } else if (vr) {
    pill = 'Voice active';
    pillClass = 'pill pill-live';
    status = `${displayName(state, vr.masterUserId)} is hosting a voice chat with ${plural(count)}.`;
  } else {
    pill = 'No voice chat';
    pillClass = 'pill';
    status = 'Nobody is talking here. Start a voice chat and the others in this room can join.';
  }
  if (inElsewhere && online) status += ` You are in voice in ${roomName(state, v.chatRoomId)}.`;
  return {
    pill,
    pillClass,
    status,
    start: online && !vr && !v,
    join: online && !!vr && !v,
    mute: inHere,
    // Muted by a moderator: the mute button cannot unmute.
    serverMuted,
    moderates,
    share,
    leave: inHere,
    end: online && mayEnd && (inHere || !v),
    disabled: state.busy || !online,
    // While offline, the room's voice state may be stale: show it as such.
    participants: vr ? vr.participants : inHere && me ? [{ userId: me, muted: !!v.muted }] : [],
    stale: !online,
  };
}
