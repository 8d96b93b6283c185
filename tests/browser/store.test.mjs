// The web client's pure reducer and selectors (voice-server/static/store.js): protocol events,
// replies and connection changes applied to the state, including offline and reconnecting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { displayName, initialState, MAX_TOASTS, reduce, viewIsStale, voiceEpoch, voicePanel } from '../../voice-server/static/store.js';

const ME = { userId: 'u-me-0001', name: 'Ann' };
const room = { roomId: 'c1', name: 'Team', adminUserId: 'u-admin', memberCount: 3, myState: 'approved', voiceRoomId: 'v1' };
const vr = { voiceRoomId: 'v1', chatRoomId: 'c1', status: 'active', masterUserId: 'u-host', participants: [{ userId: 'u-host', muted: false }, { userId: ME.userId, muted: false }] };

function online() {
  let s = reduce(initialState(), { type: 'connecting' });
  s = reduce(s, { type: 'online', me: ME });
  s = reduce(s, { type: 'rooms', rooms: [room] });
  s = reduce(s, { type: 'openRoom', roomId: 'c1' });
  s = reduce(s, { type: 'voiceRoom', chatRoomId: 'c1', view: vr });
  return s;
}

function frozen(s) {
  return JSON.parse(JSON.stringify(s));
}

test('the reducer never mutates the state it is given', () => {
  const s = online();
  const copy = frozen(s);
  reduce(s, { type: 'event', msg: { event: 'participantLeft', voiceRoomId: 'v1', chatRoomId: 'c1', user: 'u-host', reason: 'left' } });
  reduce(s, { type: 'offline', attempt: 1, retryInMs: 500 });
  reduce(s, { type: 'toast', id: 1, text: 'x' });
  assert.deepEqual(frozen(s), copy);
});

test('in voice and online: Leave for a participant, End only for master or admin', () => {
  let s = reduce(online(), { type: 'voice', voice: { chatRoomId: 'c1', voiceRoomId: 'v1', phase: 'connected', muted: false } });
  let p = voicePanel(s, 'c1');
  assert.equal(p.pill, 'In voice');
  assert.equal(p.leave, true);
  assert.equal(p.end, false, 'neither host nor admin: no End Voice');
  assert.equal(p.disabled, false);
  s = reduce(s, { type: 'event', msg: { event: 'masterChanged', voiceRoomId: 'v1', chatRoomId: 'c1', master: ME.userId } });
  assert.equal(voicePanel(s, 'c1').end, true, 'the master may end');
  const admin = reduce(online(), { type: 'rooms', rooms: [{ ...room, adminUserId: ME.userId }] });
  assert.equal(voicePanel(admin, 'c1').end, true, 'the chat admin may end without being in it');
  // AWS: admins unknown, participants get End and the server decides.
  const aws = reduce(online(), { type: 'voice', voice: { chatRoomId: 'c1', voiceRoomId: 'v1', phase: 'connected' } });
  assert.equal(voicePanel(aws, 'c1', { knowsAdmins: false }).end, true);
});

test('offline: voice shows as reconnecting, every server action disabled, nothing offered that cannot work', () => {
  let s = reduce(online(), { type: 'voice', voice: { chatRoomId: 'c1', voiceRoomId: 'v1', phase: 'connected', muted: false } });
  s = reduce(s, { type: 'offline', attempt: 2, retryInMs: 1000 });
  assert.equal(s.conn, 'reconnecting');
  assert.equal(s.voice.phase, 'reconnecting');
  const p = voicePanel(s, 'c1');
  assert.equal(p.pill, 'Reconnecting…');
  assert.equal(p.disabled, true);
  assert.equal(p.start, false);
  assert.equal(p.join, false);
  assert.equal(p.end, false);
  assert.equal(p.stale, true);
  // Not in voice, offline: no Start/Join either.
  const t = reduce(online(), { type: 'offline' });
  const q = voicePanel(t, 'c1');
  assert.equal(q.pill, 'Offline');
  assert.equal(q.join, false);
  assert.deepEqual({ chatRoomId: s.voice.chatRoomId, voiceRoomId: s.voice.voiceRoomId }, { chatRoomId: 'c1', voiceRoomId: 'v1' }, 'where to resume is kept');
});

test('back online after a loss: stale notices are cleared, voice stays until resumed', () => {
  let s = reduce(online(), { type: 'voice', voice: { chatRoomId: 'c1', voiceRoomId: 'v1', phase: 'connected' } });
  s = reduce(s, { type: 'notice', chatRoomId: 'c1', text: 'Could not join', kind: 'error' });
  s = reduce(s, { type: 'offline', attempt: 1 });
  s = reduce(s, { type: 'connecting' });
  assert.equal(s.conn, 'reconnecting', 'still reconnecting while the socket opens');
  s = reduce(s, { type: 'online', me: ME });
  assert.equal(s.conn, 'online');
  assert.deepEqual(s.notices, {});
  assert.equal(s.voice.phase, 'reconnecting', 'the voice phase changes only when the resume succeeds');
  s = reduce(s, { type: 'voice', voice: { ...s.voice, phase: 'connected' } });
  assert.equal(voicePanel(s, 'c1').pill, 'In voice');
});

test('participantReconnecting / participantResumed mark a participant; leave + join (no resume) also ends right', () => {
  let s = online();
  const ev = (event, extra = {}) => ({ type: 'event', msg: { event, voiceRoomId: 'v1', chatRoomId: 'c1', user: 'u-host', ...extra } });
  s = reduce(s, ev('participantReconnecting'));
  assert.equal(s.voiceRooms.c1.participants.find((p) => p.userId === 'u-host').reconnecting, true);
  s = reduce(s, ev('participantResumed'));
  assert.equal(s.voiceRooms.c1.participants.find((p) => p.userId === 'u-host').reconnecting, false);
  s = reduce(s, ev('participantLeft', { reason: 'disconnected' }));
  assert.deepEqual(s.voiceRooms.c1.participants.map((p) => p.userId), [ME.userId]);
  s = reduce(s, ev('participantJoined', { muted: false }));
  s = reduce(s, ev('participantJoined', { muted: false, clientId: 'cid-host' }));
  assert.deepEqual(s.voiceRooms.c1.participants.map((p) => p.userId), [ME.userId, 'u-host'], 'no duplicate on a repeated join');
  assert.equal(s.voiceRooms.c1.participants[1].clientId, 'cid-host', 'the event tells the joiner\'s client id');
  s = reduce(s, ev('participantResumed', { clientId: 'cid-host-2' }));
  assert.equal(s.voiceRooms.c1.participants[1].clientId, 'cid-host-2');
  // Events of another voice room change nothing.
  const t = reduce(s, { type: 'event', msg: { event: 'participantLeft', voiceRoomId: 'v-other', chatRoomId: 'c1', user: ME.userId } });
  assert.equal(t.voiceRooms, s.voiceRooms);
  assert.equal(t.voice, s.voice);
});

test('a voice room view that an event overtook is not applied: a participant who just left stays gone', () => {
  // Bob's page asks for the room (a keepalive, a credential refresh); Alice leaves; the
  // server read the room before her leave, sends the participantLeft event, then the reply.
  let s = reduce(online(), { type: 'voiceRoom', chatRoomId: 'c1', view: { ...vr, participants: [...vr.participants, { userId: 'u-alice', muted: false }] } });
  const epoch = voiceEpoch(s, 'c1');
  const stale = { ...vr, participants: [...vr.participants, { userId: 'u-alice', muted: false }] };
  s = reduce(s, { type: 'event', msg: { event: 'participantLeft', voiceRoomId: 'v1', chatRoomId: 'c1', user: 'u-alice', reason: 'left' } });
  assert.equal(viewIsStale(s, 'c1', epoch), true);
  s = reduce(s, { type: 'voiceRoom', chatRoomId: 'c1', view: stale, epoch });
  assert.deepEqual(s.voiceRooms.c1.participants.map((p) => p.userId), ['u-host', ME.userId], 'the stale view did not bring Alice back');
  // A view asked for after the event is applied; one without an epoch (no ordering known) too.
  const fresh = voiceEpoch(s, 'c1');
  assert.equal(viewIsStale(s, 'c1', fresh), false);
  s = reduce(s, { type: 'voiceRoom', chatRoomId: 'c1', view: { ...vr, masterUserId: ME.userId }, epoch: fresh });
  assert.equal(s.voiceRooms.c1.masterUserId, ME.userId);
  // Events of other chat rooms do not make this room's views stale.
  const t = reduce(s, { type: 'event', msg: { event: 'participantLeft', voiceRoomId: 'v9', chatRoomId: 'c9', user: 'u-x', reason: 'left' } });
  assert.equal(viewIsStale(t, 'c1', fresh), false);
});

test('voiceEnded: the room and our session go, with a notice that a new voiceStarted clears', () => {
  let s = reduce(online(), { type: 'voice', voice: { chatRoomId: 'c1', voiceRoomId: 'v1', phase: 'connected' } });
  s = reduce(s, { type: 'event', msg: { event: 'voiceEnded', voiceRoomId: 'v1', chatRoomId: 'c1', reason: { kind: 'endedByMaster' } } });
  assert.equal(s.voiceRooms.c1, null);
  assert.equal(s.voice, null);
  assert.equal(s.notices.c1.text, 'Voice room ended');
  assert.equal(voicePanel(s, 'c1').start, true);
  s = reduce(s, { type: 'event', msg: { event: 'voiceStarted', voiceRoomId: 'v2', chatRoomId: 'c1', master: 'u-host' } });
  assert.equal(s.voiceRooms.c1.voiceRoomId, 'v2');
  assert.equal(s.notices.c1, undefined);
});

test('two users with the same name get a short id suffix; a unique name stays plain', () => {
  let s = online();
  s = reduce(s, { type: 'members', roomId: 'c1', members: [
    { userId: 'aaaa-1111', name: 'Kim', state: 'approved' },
    { userId: 'bbbb-2222', name: 'Kim', state: 'pending' },
    { userId: 'cccc-3333', name: 'Lee', state: 'approved' },
  ], admin: true });
  assert.equal(displayName(s, 'aaaa-1111'), 'Kim · 1111');
  assert.equal(displayName(s, 'bbbb-2222'), 'Kim · 2222');
  assert.equal(displayName(s, 'cccc-3333'), 'Lee');
  assert.deepEqual(s.requests.c1, { 'bbbb-2222': 'Kim' });
});

test('toasts: at most three, equal texts collapse with a count', () => {
  let s = initialState();
  for (let i = 1; i <= 10; i++) s = reduce(s, { type: 'toast', id: i, text: `t${i}` });
  assert.equal(s.toasts.length, MAX_TOASTS);
  assert.deepEqual(s.toasts.map((t) => t.text), ['t8', 't9', 't10']);
  s = reduce(s, { type: 'toast', id: 11, text: 't9' });
  s = reduce(s, { type: 'toast', id: 12, text: 't9' });
  assert.equal(s.toasts.length, 3);
  assert.equal(s.toasts.at(-1).count, 3);
  s = reduce(s, { type: 'toastGone', id: 12 });
  assert.deepEqual(s.toasts.map((t) => t.text), ['t8', 't10']);
});

test('memberJoined updates members, the count and pending requests; messages are capped', () => {
  let s = online();
  s = reduce(s, { type: 'event', msg: { event: 'joinRequested', roomId: 'c1', userId: 'u-new', name: 'Neo' } });
  assert.deepEqual(s.requests.c1, { 'u-new': 'Neo' });
  s = reduce(s, { type: 'event', msg: { event: 'memberJoined', roomId: 'c1', userId: 'u-new', name: 'Neo' } });
  assert.deepEqual(s.requests.c1, {});
  assert.equal(s.members.length, 1);
  assert.equal(s.rooms[0].memberCount, 1);
  for (let i = 0; i < 250; i++) s = reduce(s, { type: 'event', msg: { event: 'message', roomId: 'c1', userId: 'u-new', name: 'Neo', text: `m${i}` } });
  assert.equal(s.messages.length, 200);
  assert.equal(s.messages.at(-1).text, 'm249');
});

test('presenceChanged moves the online dot of that member only', () => {
  let s = online();
  s = reduce(s, { type: 'members', roomId: 'c1', members: [
    { userId: 'u1', name: 'Ann', state: 'approved', isAdmin: true, online: true },
    { userId: 'u2', name: 'Bo', state: 'approved', isAdmin: false, online: true },
  ] });
  s = reduce(s, { type: 'event', msg: { event: 'presenceChanged', userId: 'u2', online: false } });
  assert.deepEqual(s.members.map((m) => [m.userId, m.online]), [['u1', true], ['u2', false]]);
  s = reduce(s, { type: 'event', msg: { event: 'presenceChanged', userId: 'u2', online: true } });
  assert.equal(s.members[1].online, true);
});

test('memberRemoved: a removed member drops out of the list; when it is me, the room view and its voice go', () => {
  let s = online();
  s = reduce(s, { type: 'members', roomId: 'c1', members: [
    { userId: 'u-admin', name: 'Ada', state: 'approved', isAdmin: true },
    { userId: 'u-bo', name: 'Bo', state: 'approved', isAdmin: false },
    { userId: ME.userId, name: 'Ann', state: 'approved', isAdmin: false },
  ] });
  s = reduce(s, { type: 'event', msg: { event: 'joinRequested', roomId: 'c1', userId: 'u-cy', name: 'Cy' } });
  s = reduce(s, { type: 'event', msg: { event: 'memberRemoved', roomId: 'c1', userId: 'u-bo', banned: false } });
  assert.deepEqual(s.members.map((m) => m.userId), ['u-admin', ME.userId]);
  assert.equal(s.rooms[0].memberCount, 2);
  assert.equal(s.currentRoomId, 'c1');
  s = reduce(s, { type: 'event', msg: { event: 'memberRemoved', roomId: 'c1', userId: 'u-cy', banned: true } });
  assert.deepEqual(s.requests.c1, {}, 'a banned requester leaves the pending list');

  s = reduce(s, { type: 'voice', voice: { chatRoomId: 'c1', voiceRoomId: 'v1', phase: 'connected' } });
  s = reduce(s, { type: 'event', msg: { event: 'memberRemoved', roomId: 'c1', userId: ME.userId, banned: false } });
  assert.equal(s.currentRoomId, null, 'the room view is dropped');
  assert.deepEqual(s.members, []);
  assert.deepEqual(s.messages, []);
  assert.equal(s.voice, null);
  assert.equal(s.rooms[0].myState, 'none');
  assert.equal(s.rooms[0].voiceRoomId, null);
  assert.equal(s.voiceRooms.c1, null);
});

test('sign out forgets everything', () => {
  const s = reduce(reduce(online(), { type: 'voice', voice: { chatRoomId: 'c1', voiceRoomId: 'v1', phase: 'connected' } }), { type: 'signedOut' });
  assert.deepEqual(s, initialState());
});

test('server mute: the muted see it and cannot unmute, moderators get the control, the master not over the admin', () => {
  const inVoice = (s) => reduce(s, { type: 'voice', voice: { chatRoomId: 'c1', voiceRoomId: 'v1', phase: 'connected', muted: false } });
  let s = inVoice(online());
  let p = voicePanel(s, 'c1');
  assert.equal(p.serverMuted, false);
  assert.equal(p.moderates('u-host'), false, 'a plain participant moderates nobody');
  s = reduce(s, { type: 'event', msg: { event: 'muteChanged', voiceRoomId: 'v1', chatRoomId: 'c1', user: ME.userId, muted: true, serverMuted: true } });
  p = voicePanel(s, 'c1');
  assert.equal(p.serverMuted, true);
  assert.equal(s.voice.muted, true, 'our own microphone state follows the moderator');
  assert.equal(s.voiceRooms.c1.participants.find((x) => x.userId === ME.userId).serverMuted, true);
  s = reduce(s, { type: 'event', msg: { event: 'muteChanged', voiceRoomId: 'v1', chatRoomId: 'c1', user: ME.userId, muted: true, serverMuted: false } });
  assert.equal(voicePanel(s, 'c1').serverMuted, false, 'lifted');
  assert.equal(s.voice.muted, true, 'lifting does not turn the microphone on');

  // The master moderates others, not themselves and not the chat room's admin.
  let host = inVoice(online());
  host = reduce(host, { type: 'event', msg: { event: 'masterChanged', voiceRoomId: 'v1', chatRoomId: 'c1', master: ME.userId } });
  host = reduce(host, { type: 'event', msg: { event: 'participantJoined', voiceRoomId: 'v1', chatRoomId: 'c1', user: 'u-admin', muted: false } });
  p = voicePanel(host, 'c1');
  assert.equal(p.moderates('u-host'), true);
  assert.equal(p.moderates(ME.userId), false);
  assert.equal(p.moderates('u-admin'), false, 'the master does not moderate the admin');
  // The admin moderates everyone else.
  const admin = inVoice(reduce(online(), { type: 'rooms', rooms: [{ ...room, adminUserId: ME.userId }] }));
  assert.equal(voicePanel(admin, 'c1').moderates('u-host'), true);
});

test('screen sharing: the announced sharer and policy drive the Share button and the host control', () => {
  const inVoice = (s) => reduce(s, { type: 'voice', voice: { chatRoomId: 'c1', voiceRoomId: 'v1', phase: 'connected', muted: false } });
  const ev = (msg) => ({ type: 'event', msg: { voiceRoomId: 'v1', chatRoomId: 'c1', ...msg } });
  let s = inVoice(online());
  let p = voicePanel(s, 'c1');
  assert.deepEqual(p.share, { policy: 'anyone', sharer: null, show: true, busy: false, setsPolicy: false });
  s = reduce(s, ev({ event: 'screenShareStarted', user: 'u-host' }));
  p = voicePanel(s, 'c1');
  assert.equal(p.share.sharer, 'u-host');
  assert.equal(p.share.busy, true, 'one sharer at a time');
  // Only the announced sharer's stop clears it.
  s = reduce(s, ev({ event: 'screenShareStopped', user: ME.userId, reason: { kind: 'sharerLeft' } }));
  assert.equal(voicePanel(s, 'c1').share.sharer, 'u-host');
  s = reduce(s, ev({ event: 'screenShareStopped', user: 'u-host', reason: { kind: 'stopped', by: 'u-host' } }));
  assert.equal(voicePanel(s, 'c1').share.sharer, null);
  s = reduce(s, ev({ event: 'screenSharePolicyChanged', policy: 'hosts', by: 'u-host' }));
  p = voicePanel(s, 'c1');
  assert.equal(p.share.policy, 'hosts');
  assert.equal(p.share.show, false, 'no Share button for a guest under hosts');
  // The master sees the button and the policy control.
  s = reduce(s, ev({ event: 'masterChanged', master: ME.userId }));
  p = voicePanel(s, 'c1');
  assert.equal(p.share.show, true);
  assert.equal(p.share.setsPolicy, true);
  // Events of another voice room change nothing.
  const other = reduce(s, { type: 'event', msg: { event: 'screenShareStarted', voiceRoomId: 'v2', chatRoomId: 'c1', user: 'u-host' } });
  assert.equal(voicePanel(other, 'c1').share.sharer, null);
});

test('lists page: "Show more" appends, a refresh of the first page keeps what was loaded, older messages go first', () => {
  const r = (id) => ({ roomId: id, name: id, adminUserId: 'u-admin', memberCount: 1, myState: 'none', voiceRoomId: null });
  let s = reduce(initialState(), { type: 'online', me: ME });
  s = reduce(s, { type: 'rooms', rooms: [r('a'), r('b')], nextCursor: 'r.1' });
  assert.equal(s.roomsCursor, 'r.1');
  s = reduce(s, { type: 'rooms', rooms: [r('c')], nextCursor: null, more: true });
  assert.deepEqual(s.rooms.map((x) => x.roomId), ['a', 'b', 'c']);
  assert.equal(s.roomsCursor, null, 'the last page');
  // The periodic refresh reads the first page again: the third room stays, no "more" offered again.
  s = reduce(s, { type: 'rooms', rooms: [{ ...r('a'), memberCount: 2 }, r('b')], nextCursor: 'r.1' });
  assert.deepEqual(s.rooms.map((x) => [x.roomId, x.memberCount]), [['a', 2], ['b', 1], ['c', 1]]);
  assert.equal(s.roomsCursor, null);

  s = reduce(s, { type: 'openRoom', roomId: 'a' });
  const m = (id, state = 'approved') => ({ userId: id, name: id, state, isAdmin: false, online: true });
  s = reduce(s, { type: 'members', roomId: 'a', members: [m('u1'), m('u2')], admin: true, nextCursor: 'm.1' });
  assert.equal(s.membersCursor, 'm.1');
  s = reduce(s, { type: 'members', roomId: 'a', members: [m('u3', 'pending')], admin: true, nextCursor: null, more: true });
  assert.deepEqual(s.members.map((x) => x.userId), ['u1', 'u2', 'u3']);
  assert.deepEqual(Object.keys(s.requests.a), ['u3'], 'requests of later pages are kept');

  const msg = (t) => ({ roomId: 'a', userId: 'u1', name: 'u1', text: t, at: 1 });
  s = reduce(s, { type: 'messages', roomId: 'a', messages: [msg('3'), msg('4')], nextCursor: 'h.1' });
  assert.equal(s.messagesCursor, 'h.1');
  s = reduce(s, { type: 'messages', roomId: 'a', messages: [msg('1'), msg('2')], nextCursor: null, older: true });
  assert.deepEqual(s.messages.map((x) => x.text), ['1', '2', '3', '4']);
  assert.equal(s.messagesCursor, null);
  s = reduce(s, { type: 'openRoom', roomId: 'b' });
  assert.equal(s.messagesCursor, null);
  assert.equal(s.membersCursor, null);
});
