// Every wire error code turned into plain words, in one place. The codes stay in the console and
// in the protocol (docs/protocol.md, "Error codes"); a person reads only the sentence.

/** What a person should read for a refusal `code` of `action` (null action = any). */
const PLAIN = {
  BAD_REQUEST: 'The server did not understand the request. Reload the page and try again.',
  UNKNOWN_ACTION: 'The server does not support this yet (the page may be newer than the server).',
  NOT_IDENTIFIED: 'You are not signed in on this connection. Reconnecting should fix it.',
  CHAT_ROOM_NOT_FOUND: 'That room no longer exists.',
  NOT_MEMBER: 'You are not a member of this room. Ask to join it first.',
  NOT_APPROVED: 'Your request to join this room is still waiting for the admin.',
  ALREADY_ACTIVE: 'A voice chat is already running in this room. Join it instead.',
  VOICE_ROOM_NOT_FOUND: 'That voice chat no longer exists.',
  VOICE_ROOM_ENDED: 'That voice chat has ended.',
  ROOM_FULL: 'The voice chat is full. Try again when someone leaves.',
  NOT_PARTICIPANT: 'You are no longer in this voice chat.',
  NOT_ALLOWED: 'Only the host of the voice chat or the room admin can end it for everyone. You can leave it instead.',
  UNAVAILABLE: 'The server is busy for a moment. Try again shortly.',
  INTERNAL: 'Something went wrong on the server. Try again later.',
  UNAUTHORIZED: 'Your voice connection needs to be renewed. Rejoining should fix it.',
  NOT_PEER: 'That person is not connected to this voice chat right now.',
  NOT_ADMIN: 'Only the room admin can do that.',
  ROOM_EXISTS: 'A room with that name already exists. Pick another name.',
  NO_PENDING_REQUEST: 'That request was already handled.',
  BANNED: 'The admin of this room has banned you, so you cannot ask to join it.',
  QUOTA_EXCEEDED: 'You have reached the limit the server sets for this. Wait for the admin to answer, or remove something first.',
  RATE_LIMITED: 'Too many actions at once. Wait a moment and try again.',
  TOO_LARGE: 'That is too long. Shorten it and try again.',
  DISCONNECTED: 'You are offline right now. The page reconnects by itself; try again in a moment.',
  TIMEOUT: 'The server did not answer in time. Try again in a moment.',
  SERVER_MUTED: 'The host or the room admin muted you. You can unmute once they allow it.',
  SCREEN_SHARE_BUSY: 'Someone else is sharing their screen. One screen at a time: ask them to stop first.',
  NOT_IN_VOICE: 'Join the voice chat first: your screen is shared with the people in it.',
  NOT_SHARING: 'Nobody is sharing a screen right now.',
};

/** Where one action's refusal needs other words than the code's usual ones. */
const PLAIN_BY_ACTION = {
  banMember: {
    QUOTA_EXCEEDED: 'This room already has as many bans as the server allows, so nobody else can be banned. You can still remove them (they may ask to join again).',
    BAD_REQUEST: 'That person has never signed in here, so they cannot be banned.',
  },
  serverMute: {
    NOT_ALLOWED: 'Only the host of the voice chat or the room admin can mute others, and only the admin can mute the admin.',
    NOT_PARTICIPANT: 'That person is no longer in this voice chat.',
  },
  startScreenShare: {
    NOT_ALLOWED: 'In this voice chat only the host and the room admin can share their screen.',
  },
  stopScreenShare: {
    NOT_ALLOWED: 'Only whoever shares, the host or the room admin can stop a screen share.',
  },
  setScreenSharePolicy: {
    NOT_ALLOWED: 'Only the host of the voice chat or the room admin can decide who may share a screen.',
  },
};

/** Plain words for a wire code (of `action`); a generic sentence for an unknown one. */
function plainMessage(code, action) {
  const special = PLAIN_BY_ACTION[action];
  return (special && special[code]) || PLAIN[code] || 'Something went wrong. Try again in a moment.';
}

/** A refusal from the server (or a lost connection), carrying the wire error code. */
export class ApiError extends Error {
  constructor(action, error) {
    super((error && error.message) || (error && error.code) || 'request failed');
    this.name = 'ApiError';
    this.action = action;
    this.code = (error && error.code) || 'UNKNOWN';
    this.retryable = !!(error && error.retryable);
  }
}

/**
 * The sentence to show for an error: plain words for an ApiError (its code and the server's own
 * message go to the console via `warn`), the message itself for anything else (those are already
 * written for people, e.g. the microphone errors). `hint(code)` adds a mode-specific next step.
 */
export function describeError(e, { hint = () => null, warn = () => {} } = {}) {
  if (e instanceof ApiError || (e && typeof e.code === 'string' && e.code in PLAIN)) {
    warn(`${e.action || 'request'} refused: ${e.code}: ${e.message}`);
    const extra = hint(e.code);
    const plain = plainMessage(e.code, e.action);
    return extra ? `${plain} ${extra}` : plain;
  }
  return e && e.message ? e.message : String(e);
}
