// One WebSocket for every event of the user. It authenticates with a short-lived,
// single-use ticket from the API (never the access token in the URL), and after any drop
// or token refresh reconnects with since=<the last seq seen>: the gateway replays what was
// missed, and a frame whose seq was already seen is dropped, so nothing is missed and
// nothing is handled twice.
import { api, ask, session } from "./api";

export interface EventFrame {
  seq: number;
  type: string;
  job_id: string | null;
  domain: string;
  payload: Record<string, unknown> & { job_id?: string };
}

export type SocketState = "connecting" | "live" | "reconnecting" | "offline";
type Handler = (frame: EventFrame) => void;

const CLOSE_UNAUTHORIZED = 4401;
const CLOSE_TOKEN_EXPIRED = 4440;
const CLOSE_BAD_REQUEST = 4400;

export class EventSocket {
  private socket: WebSocket | null = null;
  private lastSeq = 0;
  private retries = 0;
  private refused = 0;
  private timer: number | undefined;
  private wanted = false;
  private handlers: Handler[] = [];
  private recent: EventFrame[] = [];
  private stateHandlers: ((state: SocketState) => void)[] = [];
  state: SocketState = "offline";
  /** How many sockets went live (also `data-socket-opens` on <html>, for tests). */
  opens = 0;

  /** Frames of `jobId` already seen (a job's first events may come before its 202 is
   * read), then its live ones. */
  onJob(jobId: string, handler: Handler): () => void {
    const seen = this.recent.filter((f) => f.job_id === jobId);
    // After the caller holds its unsubscribe function, which a handler may call.
    queueMicrotask(() => seen.forEach((frame) => handler(frame)));
    return this.on((frame) => {
      if (frame.job_id === jobId) handler(frame);
    });
  }

  on(handler: Handler): () => void {
    this.handlers.push(handler);
    return () => {
      this.handlers = this.handlers.filter((h) => h !== handler);
    };
  }

  /** Resolves once a socket is live: what happens from then on reaches the handlers (and
   * `onJob` replays what came before its call). */
  whenLive(): Promise<void> {
    if (this.state === "live") return Promise.resolve();
    return new Promise((resolve) => this.onState((state) => {
      if (state === "live") resolve();
    }));
  }

  onState(handler: (state: SocketState) => void): void {
    this.stateHandlers.push(handler);
  }

  private setState(state: SocketState): void {
    this.state = state;
    document.documentElement.dataset.socket = state;
    for (const handler of this.stateHandlers) handler(state);
  }

  start(): void {
    this.wanted = true;
    void this.connect(false);
  }

  stop(): void {
    this.wanted = false;
    clearTimeout(this.timer);
    this.socket?.close(1000, "signed out");
    this.socket = null;
    this.lastSeq = 0;
    this.recent = [];
    this.setState("offline");
  }

  /** Before an action that revokes this socket's token (a password change): close it
   * quietly, keeping where it was; `renew()` goes on from there. */
  suspend(): void {
    const old = this.socket;
    this.socket = null;
    old?.close(1000, "renewing");
    if (this.wanted) this.setState("reconnecting");
  }

  /** After a token refresh: a new socket under the new token, from where this one was. */
  renew(): void {
    if (!this.wanted) return;
    const old = this.socket;
    this.socket = null;
    old?.close(1000, "token refreshed");
    void this.connect(true);
  }

  private async connect(again: boolean): Promise<void> {
    clearTimeout(this.timer);
    if (!this.wanted || !session.token) return;
    this.setState(again ? "reconnecting" : "connecting");
    const ticket = await ask(() => api.POST("/api/ws/ticket", {}));
    if (!this.wanted) return;
    if (!ticket.ok) {
      if (ticket.problem.status === 401) return; // the session ended; the app signs out
      this.later();
      return;
    }
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const query = new URLSearchParams({ ticket: ticket.data.ticket });
    // since=0 replays the whole history: the first socket of a page starts live instead.
    if (this.lastSeq > 0 || again) query.set("since", String(this.lastSeq));
    const socket = new WebSocket(`${scheme}://${location.host}/ws?${query}`);
    // A reconnect and a renewal may race: the one that opens last is the one kept.
    const previous = this.socket;
    this.socket = socket;
    previous?.close(1000, "replaced");
    socket.onmessage = (message) => this.receive(socket, message);
    socket.onclose = (event) => this.closed(socket, event);
  }

  private receive(socket: WebSocket, message: MessageEvent): void {
    if (socket !== this.socket) return;
    let frame: Record<string, unknown>;
    try {
      frame = JSON.parse(String(message.data));
    } catch {
      return;
    }
    if (frame.type === "ready") {
      this.retries = 0;
      this.refused = 0;
      if (typeof frame.last_seq === "number" && this.lastSeq === 0) this.lastSeq = frame.last_seq;
      this.opens += 1;
      document.documentElement.dataset.socketOpens = String(this.opens);
      this.setState("live");
      return;
    }
    if (typeof frame.seq !== "number") return; // pong and other control frames
    if (frame.seq <= this.lastSeq) return; // seen already (a replay after a reconnect)
    this.lastSeq = frame.seq;
    const event = frame as unknown as EventFrame;
    this.recent.push(event);
    if (this.recent.length > 500) this.recent.shift();
    for (const handler of [...this.handlers]) handler(event);
  }

  private closed(socket: WebSocket, event: CloseEvent): void {
    if (socket !== this.socket) return; // one we replaced on purpose
    this.socket = null;
    document.documentElement.dataset.socketClosed = String(event.code); // for tests
    if (!this.wanted) return;
    if (event.code === CLOSE_UNAUTHORIZED) {
      // A ticket that aged, or a token just replaced: one refresh tells. A session that
      // really ended fails it, and the refresh signs the page out.
      this.refused += 1;
      if (this.refused > 1) session.drop("ended");
      else {
        this.setState("reconnecting");
        void session.refresh().then((ok) => {
          if (!ok && session.user) this.later(); // not refused: the network
        });
      }
      return;
    }
    if (event.code === CLOSE_TOKEN_EXPIRED) {
      this.setState("reconnecting");
      // Its onRefreshed renews the socket; a refresh the network failed tries again here.
      void session.refresh().then((ok) => {
        if (!ok && session.user) this.later();
      });
      return;
    }
    if (event.code === CLOSE_BAD_REQUEST) this.lastSeq = 0;
    this.setState("reconnecting");
    this.later();
  }

  private later(): void {
    this.setState("reconnecting");
    const delay = Math.min(10_000, 500 * 2 ** this.retries) * (0.75 + Math.random() / 2);
    this.retries += 1;
    this.timer = window.setTimeout(() => void this.connect(true), delay);
  }
}

export const events = new EventSocket();
