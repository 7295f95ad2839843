// The typed client (openapi-fetch over types generated from the gateway's openapi.json)
// and the session: the access token lives in memory; the refresh token lives in an
// httpOnly cookie the gateway sets when asked (X-Terra-Refresh-Cookie), or, where it does
// not, in memory only — never in localStorage, never in a URL.
import createClient from "openapi-fetch";
import type { components, paths } from "./api.d";
import type { Problem } from "./dom";

export type Schemas = components["schemas"];
export type User = Schemas["User"];

export const api = createClient<paths>({ baseUrl: "", credentials: "same-origin" });

const COOKIE_MODE = { "X-Terra-Refresh-Cookie": "1" };
// A refresh the network failed is tried again this soon (the token may still be valid).
const RETRY_REFRESH_MS = 5_000;

interface TokenAnswer {
  access_token: string;
  expires_in: number;
  refresh_token?: string | null;
  user?: User;
}

type Listener = (user: User | null, reason?: "ended") => void;

class Session {
  private access: string | null = null;
  private memoryRefresh: string | null = null;
  private refreshTimer: number | undefined;
  private refreshing: Promise<boolean> | null = null;
  private listeners: Listener[] = [];
  user: User | null = null;
  /** Called after every new access token (the socket reconnects with since=). */
  onRefreshed: (() => void) | null = null;

  get token(): string | null {
    return this.access;
  }

  subscribe(listener: Listener): void {
    this.listeners.push(listener);
  }

  authHeaders(): Record<string, string> {
    return this.access ? { Authorization: `Bearer ${this.access}` } : {};
  }

  /** Took a token pair from sign-in, sign-up or refresh. */
  adopt(answer: TokenAnswer): void {
    this.access = answer.access_token;
    // A gateway that set the cookie leaves the body's refresh token empty; one that did
    // not gives it in the body, and it is kept in this page's memory only.
    this.memoryRefresh = answer.refresh_token || null;
    if (answer.user) this.user = answer.user;
    clearTimeout(this.refreshTimer);
    const inMs = Math.max(5, answer.expires_in - 60) * 1000;
    this.refreshTimer = window.setTimeout(() => void this.refresh(), inMs);
  }

  signedIn(user: User): void {
    this.user = user;
    for (const listener of this.listeners) listener(user);
  }

  /** Forget everything; `ended` says the gateway ended the session (not the user). */
  drop(reason?: "ended"): void {
    clearTimeout(this.refreshTimer);
    // The refresh cookie is httpOnly (the gateway clears it on sign-out); its readable
    // CSRF twin goes here, so a later visit does not ask with a cookie that is spent.
    document.cookie = "terra_csrf=; Max-Age=0; Path=/; SameSite=Strict";
    this.access = null;
    this.memoryRefresh = null;
    const had = this.user !== null;
    this.user = null;
    if (had || reason) for (const listener of this.listeners) listener(null, reason);
  }

  /** A silent refresh: one at a time, however many callers ask. */
  refresh(): Promise<boolean> {
    this.refreshing ??= this.doRefresh().finally(() => {
      this.refreshing = null;
    });
    return this.refreshing;
  }

  /** Whether a refresh cookie may be there (its CSRF twin is readable); asking without
   * one would only earn a 401. */
  canRefresh(): boolean {
    return this.memoryRefresh !== null || csrfToken() !== null;
  }

  private async doRefresh(): Promise<boolean> {
    if (!this.canRefresh()) {
      // Signed in with nothing to refresh with (another tab signed out): it is over.
      if (this.user) this.drop("ended");
      return false;
    }
    const { data, response } = await api.POST("/api/auth/refresh", {
      headers: refreshHeaders(),
      body: (this.memoryRefresh ? { refresh_token: this.memoryRefresh } : {}) as never,
    }).catch(() => ({ data: undefined, response: undefined }));
    if (!data) {
      // A network fault keeps the session for a later try; a refusal ends it.
      if (response && response.status < 500) this.drop(this.user ? "ended" : undefined);
      else if (this.user) {
        clearTimeout(this.refreshTimer);
        this.refreshTimer = window.setTimeout(() => void this.refresh(), RETRY_REFRESH_MS);
      }
      return false;
    }
    this.adopt(data as TokenAnswer);
    this.onRefreshed?.();
    return true;
  }

  async signOut(everywhere = false): Promise<void> {
    await api.POST("/api/auth/logout", {
      headers: { ...refreshHeaders(), ...this.authHeaders() },
      body: { ...(this.memoryRefresh ? { refresh_token: this.memoryRefresh } : {}),
              everywhere } as never,
    }).catch(() => undefined);
    this.drop();
  }
}

export const session = new Session();

export function csrfToken(): string | null {
  const found = document.cookie.split("; ").find((part) => part.startsWith("terra_csrf="));
  return found ? decodeURIComponent(found.slice("terra_csrf=".length)) : null;
}

export function refreshHeaders(): Record<string, string> {
  const csrf = csrfToken();
  return { ...COOKIE_MODE, ...(csrf ? { "X-CSRF-Token": csrf } : {}) };
}

export const cookieMode = COOKIE_MODE;

// Every API call carries the access token; a 401 is refreshed once and retried.
api.use({
  onRequest({ request }) {
    if (session.token && !request.headers.has("Authorization")) {
      request.headers.set("Authorization", `Bearer ${session.token}`);
    }
    return request;
  },
});

interface Answer<T> {
  data?: T;
  error?: unknown;
  response: Response;
}

/** Runs `call`; a 401 refreshes the session once and runs it again. Returns the data, or
 * a Problem (status 0: the gateway could not be reached). */
export async function ask<T>(call: () => Promise<Answer<T>>): Promise<
  { ok: true; data: T; status: number } | { ok: false; problem: Problem }
> {
  let answer: Answer<T>;
  try {
    answer = await call();
    if (answer.response.status === 401 && session.token) {
      if (await session.refresh()) answer = await call();
      // Still signed in: the refresh did not reach the gateway (a refusal signs out).
      // The session is not over: say "unreachable", as a network fault would.
      else if (session.user) return { ok: false, problem: { status: 0 } };
    }
  } catch {
    return { ok: false, problem: { status: 0 } };
  }
  const { response } = answer;
  if (response.ok) return { ok: true, data: answer.data as T, status: response.status };
  return { ok: false, problem: toProblem(response, answer.error) };
}

export function toProblem(response: { status: number; headers: Headers }, body: unknown): Problem {
  const problem: Problem = { status: response.status };
  if (body && typeof body === "object") Object.assign(problem, body);
  problem.status = response.status;
  const retry = response.headers.get("Retry-After");
  if (retry !== null && /^\d+$/.test(retry)) problem.retryAfter = Number(retry);
  if (response.status === 401 && session.user) session.drop("ended");
  return problem;
}
