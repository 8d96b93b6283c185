// The page, drawn from the state (store.js) and nothing else: app.js calls `render` once per
// batch of state changes. Text is only ever set with textContent; handlers come in `ctx`.

import { amAdmin, currentRoom, displayName, roomName, voicePanel } from './store.js';

export const $ = (sel) => document.querySelector(sel);

/** Creates an element; `props` are assigned (className, textContent, type, dataset, onclick). */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'onclick') node.addEventListener('click', v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function show(sel, visible) {
  $(sel).hidden = !visible;
}

/**
 * Draws everything. ctx: { features, session (the VoiceSession or null), signedIn (whether the
 * app part is shown), openRoom(roomId), requestJoin(roomId), decide(roomId, userId, approve) }.
 */
export function render(state, ctx) {
  renderTop(state, ctx);
  if (!ctx.signedIn) return;
  renderRooms(state, ctx);
  renderRoom(state, ctx);
  renderVoice(state, ctx);
  renderToasts(state);
}

function renderTop(state, ctx) {
  const el = $('#connection-status');
  const what = ctx.features.hello ? 'the server' : 'the voice API';
  let text;
  let on = false;
  if (state.conn === 'online') {
    text = state.me ? `Connected as ${state.me.name}` : 'Connected to the voice API';
    on = true;
  } else if (state.conn === 'reconnecting') {
    text = 'Reconnecting…';
  } else if (state.conn === 'connecting') {
    text = 'Connecting…';
  } else {
    text = ctx.configError ? 'Not configured' : 'Not connected';
  }
  el.textContent = text;
  el.className = `status ${on ? 'status-on' : 'status-off'}`;
  const b = $('#banner');
  if (state.conn === 'reconnecting') {
    const inVoice = state.voice ? ' You stay in the voice chat; it resumes when the connection is back.' : '';
    const when = state.retryInMs ? ` Next try in ${Math.max(1, Math.round(state.retryInMs / 1000))} s.` : '';
    b.textContent = `Connection to ${what} lost. Reconnecting…${when}${inVoice}`;
    b.hidden = false;
  } else {
    b.hidden = true;
  }
  const ind = $('#voice-indicator');
  if (state.voice) {
    ind.hidden = false;
    const where = roomName(state, state.voice.chatRoomId);
    ind.textContent = state.voice.phase === 'reconnecting' ? `Voice reconnecting: ${where}` : `In voice: ${where}${state.voice.muted ? ' (muted)' : ''}`;
  } else {
    ind.hidden = true;
  }
  const signOut = $('#sign-out');
  if (signOut) signOut.hidden = !ctx.signedIn || !ctx.features.hello;
  const everywhere = $('#sign-out-everywhere');
  if (everywhere) everywhere.hidden = !ctx.signedIn || !ctx.features.hello || !ctx.features.chat;
}

function renderRooms(state, ctx) {
  const online = state.conn === 'online';
  const list = $('#rooms');
  list.replaceChildren();
  $('#rooms-empty').hidden = state.rooms.length > 0;
  for (const r of state.rooms) {
    const mine = r.myState;
    const isAdmin = state.me && r.adminUserId === state.me.userId;
    const pendingCount = Object.keys(state.requests[r.roomId] || {}).length;
    const known = state.voiceRooms[r.roomId];
    const voiceActive = !!known || (r.voiceRoomId && known !== null);
    let action;
    if (mine === 'approved') {
      action = h('button', { type: 'button', className: 'small', textContent: 'Open', onclick: () => ctx.openRoom(r.roomId) });
    } else if (mine === 'pending') {
      action = h('button', { type: 'button', className: 'small', textContent: 'Requested', disabled: true });
    } else {
      action = h('button', { type: 'button', className: 'small primary', textContent: 'Request to join', disabled: !online, onclick: () => ctx.requestJoin(r.roomId) });
    }
    list.append(
      h(
        'li',
        { className: `room-item${r.roomId === state.currentRoomId ? ' active' : ''}`, dataset: { roomId: r.roomId } },
        h(
          'div',
          { className: 'room-main' },
          h('span', { className: 'room-name', textContent: r.name, title: r.name }),
          h(
            'span',
            { className: 'room-meta' },
            r.memberCount == null ? null : `${r.memberCount} member${r.memberCount === 1 ? '' : 's'}`,
            isAdmin ? h('span', { className: 'pill', textContent: 'admin' }) : null,
            mine === 'pending' ? h('span', { className: 'pill pill-warn', textContent: 'pending' }) : null,
            voiceActive ? h('span', { className: 'pill pill-live', textContent: 'voice' }) : null,
            isAdmin && pendingCount ? h('span', { className: 'pill pill-warn', textContent: `${pendingCount} request${pendingCount === 1 ? '' : 's'}` }) : null,
          ),
        ),
        action,
      ),
    );
  }
  if (state.roomsCursor && ctx.moreRooms) {
    list.append(h('li', { className: 'more' }, h('button', { type: 'button', className: 'small', textContent: 'Show more rooms', disabled: !online, onclick: () => ctx.moreRooms() })));
  }
  for (const sel of ['#refresh-rooms', '#create-room-form button[type="submit"]']) $(sel).disabled = !online && ctx.features.hello;
}

function renderRoom(state, ctx) {
  const room = currentRoom(state);
  $('#room').hidden = !room;
  $('#no-room').hidden = !!room;
  if (!room) return;
  const online = state.conn === 'online';
  $('#room-title').textContent = room.name;
  $('#room-title').title = room.name;
  const members = $('#members');
  members.replaceChildren();
  for (const m of state.members.filter((x) => x.state === 'approved')) {
    members.append(
      h(
        'li',
        { className: 'member', dataset: { userId: m.userId } },
        h('span', { className: `dot ${m.online === false ? 'dot-off' : 'dot-on'}`, title: m.online === false ? 'offline' : 'online' }),
        h('span', { className: 'member-name', textContent: displayName(state, m.userId) }),
        state.me && m.userId === state.me.userId ? h('span', { className: 'muted', textContent: ' (you)' }) : null,
        m.isAdmin || m.userId === room.adminUserId ? h('span', { className: 'pill', textContent: 'admin' }) : null,
        ctx.moderate && amAdmin(state, room.roomId) && !(m.isAdmin || m.userId === room.adminUserId)
          ? h(
              'span',
              { className: 'buttons' },
              h('button', { type: 'button', className: 'small', textContent: 'Remove', title: 'Remove from the room (they may ask to join again)', disabled: !online, onclick: () => ctx.moderate(room.roomId, m.userId, false) }),
              h('button', { type: 'button', className: 'small danger', textContent: 'Ban', title: 'Remove from the room and refuse their requests to join', disabled: !online, onclick: () => ctx.moderate(room.roomId, m.userId, true) }),
            )
          : null,
      ),
    );
  }
  if (state.membersCursor && ctx.moreMembers) {
    members.append(h('li', { className: 'more' }, h('button', { type: 'button', className: 'small', textContent: 'Show more members', disabled: !online, onclick: () => ctx.moreMembers() })));
  }
  const reqs = amAdmin(state, room.roomId) ? state.requests[room.roomId] || {} : {};
  const ids = Object.keys(reqs);
  $('#requests-section').hidden = ids.length === 0;
  const rl = $('#requests');
  rl.replaceChildren();
  for (const userId of ids) {
    rl.append(
      h(
        'li',
        { className: 'request', dataset: { userId } },
        h('span', { className: 'member-name', textContent: displayName(state, userId) }),
        h(
          'span',
          { className: 'buttons' },
          h('button', { type: 'button', className: 'small primary', textContent: 'Approve', disabled: !online, onclick: () => ctx.decide(room.roomId, userId, true) }),
          h('button', { type: 'button', className: 'small danger', textContent: 'Deny', disabled: !online, onclick: () => ctx.decide(room.roomId, userId, false) }),
        ),
      ),
    );
  }
  $('#message-form button[type="submit"]').disabled = !online;
  renderMessages(state, ctx);
}

function renderMessages(state, ctx) {
  const ul = $('#messages');
  const atBottom = ul.scrollHeight - ul.scrollTop - ul.clientHeight < 40;
  ul.replaceChildren();
  if (state.messagesCursor && ctx.olderMessages) {
    ul.append(h('li', { className: 'more' }, h('button', { type: 'button', className: 'small', textContent: 'Show older messages', disabled: state.conn !== 'online', onclick: () => ctx.olderMessages() })));
  }
  for (const m of state.messages) {
    const at = m.at ? new Date(m.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '';
    ul.append(
      h(
        'li',
        { className: `message${state.me && m.userId === state.me.userId ? ' own' : ''}` },
        h('span', { className: 'message-head' }, h('strong', { textContent: displayName(state, m.userId) }), h('time', { textContent: at })),
        h('span', { className: 'message-text', textContent: m.text }),
      ),
    );
  }
  if (atBottom) ul.scrollTop = ul.scrollHeight;
}

// --- video tiles (docs/web-client.md, "Video and screen sharing") ---------------------------

/**
 * The camera / screen buttons and the video tiles: our own camera preview and every peer's
 * camera beside the participant list; a screen share (ours or a peer's) shown large above.
 * <video> elements are kept by key (user:slot), so a re-render does not restart playback.
 */
function renderVideo(state, s, inVoice, share) {
  share = share || { show: true, busy: false, sharer: null, policy: 'anyone', setsPolicy: false };
  show('#camera-button', inVoice);
  const scrOn = !!(s && s.video.screen);
  // Shown while the room's policy lets us share (or while we share, to stop); disabled while
  // someone else shares (one at a time). The server decides either way.
  show('#screen-button', inVoice && (share.show || scrOn));
  $('#screen-button').disabled = !scrOn && share.busy;
  $('#screen-button').title = !scrOn && share.busy ? `${displayName(state, share.sharer)} is sharing their screen` : '';
  const pb = $('#share-policy-button');
  show('#share-policy-button', inVoice && share.setsPolicy);
  pb.textContent = share.policy === 'hosts' ? 'Screen sharing: hosts only' : 'Screen sharing: everyone';
  pb.title = share.policy === 'hosts' ? 'Let every participant share their screen' : 'Let only you and the room admin share a screen';
  pb.dataset.policy = share.policy === 'hosts' ? 'anyone' : 'hosts';
  pb.setAttribute('aria-pressed', String(share.policy === 'hosts'));
  const cam = !!(s && s.video.camera);
  const scr = !!(s && s.video.screen);
  const cb = $('#camera-button');
  cb.textContent = cam ? 'Camera off' : 'Camera on';
  cb.setAttribute('aria-pressed', String(cam));
  const sb = $('#screen-button');
  sb.textContent = scr ? 'Stop sharing' : 'Share screen';
  sb.setAttribute('aria-pressed', String(scr));
  const want = [];
  if (s) {
    if (s.video.camera) want.push({ key: 'me:camera', userId: null, slot: 'camera', track: s.video.camera, label: 'You' });
    if (s.video.screen) want.push({ key: 'me:screen', userId: null, slot: 'screen', track: s.video.screen, label: 'Your screen' });
    for (const r of s.remoteVideos()) {
      // Media is peer to peer: like a server mute, the receivers enforce the announced state. A
      // screen track is shown (large) only from the participant the server announced as sharer.
      if (r.slot === 'screen' && r.userId !== share.sharer) continue;
      const who = displayName(state, r.userId);
      want.push({ key: `${r.userId}:${r.slot}`, userId: r.userId, slot: r.slot, track: r.track, label: r.slot === 'screen' ? `${who}'s screen` : who });
    }
  }
  const stage = $('#video-stage');
  const tiles = $('#video-tiles');
  const have = new Map([...document.querySelectorAll('#video-stage figure, #video-tiles figure')].map((f) => [f.dataset.key, f]));
  for (const w of want) {
    let fig = have.get(w.key);
    have.delete(w.key);
    if (!fig) {
      const v = h('video', { autoplay: true, muted: true, playsInline: true });
      fig = h('figure', { className: `video-tile ${w.slot}`, dataset: { key: w.key, slot: w.slot, userId: w.userId || '' } }, v, h('figcaption', { textContent: w.label }));
    }
    const v = fig.querySelector('video');
    if (!v.srcObject || v.srcObject.getVideoTracks()[0] !== w.track) {
      v.srcObject = new MediaStream([w.track]);
      const played = v.play && v.play();
      if (played && played.catch) played.catch(() => {});
    }
    fig.querySelector('figcaption').textContent = w.label;
    const parent = w.slot === 'screen' ? stage : tiles;
    if (fig.parentNode !== parent) parent.append(fig);
  }
  for (const fig of have.values()) {
    const v = fig.querySelector('video');
    if (v) v.srcObject = null;
    fig.remove();
  }
  stage.hidden = !stage.children.length;
  tiles.hidden = !tiles.children.length;
}

function renderVoice(state, ctx) {
  const room = currentRoom(state);
  if (!room) return;
  const chat = room.roomId;
  const p = voicePanel(state, chat, ctx.features);
  const s = ctx.session && !ctx.session.ended && ctx.session.chatRoomId === chat ? ctx.session : null;
  const vr = state.voiceRooms[chat] || null;
  const pill = $('#voice-state');
  pill.textContent = p.pill;
  pill.className = p.pillClass;
  $('#voice-status').textContent = p.status;
  show('#start-voice', p.start);
  show('#join-voice', p.join);
  show('#mute-button', p.mute);
  show('#leave-voice', p.leave);
  show('#end-voice', p.end);
  for (const id of ['#start-voice', '#join-voice', '#leave-voice', '#end-voice', '#mute-button']) $(id).disabled = p.disabled;
  show('#enable-audio', !!state.audioBlocked && !!s);
  renderVideo(state, s, !!p.mute && !!s, p.share);
  if (p.mute) {
    const mb = $('#mute-button');
    const muted = !!(state.voice && state.voice.muted) || p.serverMuted;
    mb.textContent = p.serverMuted ? 'Muted by the host' : muted ? 'Unmute' : 'Mute';
    mb.title = p.serverMuted ? 'The host or the room admin muted you; you can unmute once they allow it' : '';
    mb.classList.toggle('active', muted);
    mb.setAttribute('aria-pressed', String(muted));
    if (p.serverMuted) mb.disabled = true;
  }
  const n = state.notices[chat];
  const msg = $('#voice-message');
  msg.hidden = !n;
  msg.textContent = n ? n.text : '';
  msg.className = `notice${n && n.kind === 'error' ? ' notice-error' : ''}`;

  const ul = $('#participants');
  ul.classList.toggle('stale', p.stale);
  ul.replaceChildren();
  const me = state.me && state.me.userId;
  for (const part of p.participants) {
    const isMe = part.userId === me;
    const link = s && !isMe ? s.peers.get(part.userId) : null;
    let conn = null;
    if (part.reconnecting) conn = h('span', { className: 'conn conn-disconnected', textContent: 'reconnecting', title: 'Their connection dropped; waiting for them to come back' });
    else if (s && !isMe) {
      const cs = !p.stale && link ? link.pc.connectionState : p.stale ? 'reconnecting' : 'waiting';
      conn = h('span', { className: `conn conn-${cs}`, textContent: cs, title: 'Peer connection state' });
    }
    const muted = isMe && state.voice && state.voice.chatRoomId === chat ? state.voice.muted : part.muted;
    const mod = p.moderates && p.moderates(part.userId)
      ? h('button', {
          className: 'small moderate',
          textContent: part.serverMuted ? 'Allow to speak' : 'Mute for everyone',
          title: part.serverMuted ? 'Lift the mute; they turn their microphone on themselves' : 'Mute them for everyone; they cannot unmute until you allow it',
          dataset: { moderate: part.userId, muted: String(!part.serverMuted) },
        })
      : null;
    ul.append(
      h(
        'li',
        { className: `participant${part.reconnecting ? ' reconnecting' : ''}`, dataset: { userId: part.userId } },
        h('span', { className: 'speaking-dot', title: 'Speaking' }),
        h('span', { className: 'member-name', textContent: displayName(state, part.userId) }),
        isMe ? h('span', { className: 'muted', textContent: ' (you)' }) : null,
        vr && part.userId === vr.masterUserId ? h('span', { className: 'pill', textContent: 'host' }) : null,
        h('span', { className: `mute-state${muted ? ' is-muted' : ''}`, textContent: part.serverMuted ? 'muted by the host' : muted ? 'muted' : 'mic on' }),
        conn,
        mod,
      ),
    );
  }
  updateSpeaking(ctx.session);
}

/** Only the speaking rings: called 20 times a second by the level meters, no full render. */
export function updateSpeaking(session) {
  for (const li of document.querySelectorAll('#participants .participant')) {
    li.classList.toggle('speaking', !!(session && !session.ended && session.isSpeaking(li.dataset.userId)));
  }
}

function renderToasts(state) {
  const box = $('#toasts');
  box.replaceChildren(
    ...state.toasts.map((t) => h('div', { className: `toast toast-${t.kind}`, dataset: { toastId: String(t.id) }, textContent: t.count > 1 ? `${t.text} (×${t.count})` : t.text })),
  );
}
