// The console's shell: signed out, the sign-in page; signed in, the sections (by the URL's
// hash: no token or id ever goes in it), the socket's state, sign out.
import { accountView } from "./account";
import { api, ask, session } from "./api";
import { authView, type ClientConfig } from "./auth";
import { clear, h } from "./dom";
import { galleryView } from "./gallery";
import { generateView, resetJobs, resumeJobs } from "./generate";
import { lang, t } from "./i18n";
import { forgetThisBrowser, notificationsView } from "./notifications";
import { promptView } from "./prompt";
import { events, type SocketState } from "./socket";
import { trainView } from "./train";

const SECTIONS = {
  prompt: ["nav.prompt", promptView],
  train: ["nav.train", trainView],
  generate: ["nav.generate", generateView],
  gallery: ["nav.gallery", galleryView],
  notifications: ["nav.notifications", notificationsView],
  account: ["nav.account", () => accountView(closed)],
} as const;
type Section = keyof typeof SECTIONS;

const app = document.getElementById("app")!;
let config: ClientConfig = { google_client_id: null, s3_origin: "" };
// Sections keep their state (a running job's card) while the user looks elsewhere.
const built = new Map<Section, HTMLElement>();
const main = h("main", { id: "main", tabindex: -1 });
const socketBadge = h("span", { class: "socket", role: "status", "aria-live": "polite" });
const nav = h("nav", { "aria-label": t("nav.label") });

function closed(): void {
  events.stop();
  session.drop();
  signedOut(t("account.deleted"));
}

function section(): Section {
  const name = location.hash.slice(1);
  return name in SECTIONS ? (name as Section) : "prompt";
}

function show(): void {
  if (!session.user) return;
  const name = section();
  if (name === "generate") built.delete("generate"); // picks up an accepted prompt
  if (name === "gallery" || name === "account" || name === "notifications") built.delete(name);
  let view = built.get(name);
  if (!view) {
    view = SECTIONS[name][1]();
    built.set(name, view);
  }
  clear(main, view);
  for (const link of nav.querySelectorAll("a")) {
    if (link.getAttribute("href") === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function socketState(state: SocketState): void {
  socketBadge.textContent = t(`socket.${state}`);
  socketBadge.dataset.state = state;
}

function signedIn(): void {
  built.clear();
  resetJobs();
  const signOut = h("button", { type: "button", class: "link" }, t("auth.signout"));
  signOut.addEventListener("click", async () => {
    events.stop();
    await forgetThisBrowser();
    await session.signOut();
  });
  clear(nav, (Object.keys(SECTIONS) as Section[]).map((name) =>
    h("a", { href: `#${name}` }, t(SECTIONS[name][0]))));
  clear(app,
    h("header", {}, h("span", { class: "brand" }, t("app.title")), nav, socketBadge, signOut),
    main);
  events.start();
  show();
  void resumeJobs();
}

function signedOut(notice?: string): void {
  built.clear();
  clear(app, h("header", {}, h("span", { class: "brand" }, t("app.title"))),
    h("main", { id: "main" }, authView(config, notice)));
}

async function boot(): Promise<void> {
  document.documentElement.lang = lang;
  const answer = await ask(() => api.GET("/api/config"));
  if (answer.ok) config = answer.data;
  events.onState(socketState);
  session.onRefreshed = () => events.renew();
  session.subscribe((user, reason) => {
    if (user) signedIn();
    else {
      events.stop();
      signedOut(reason === "ended" ? t("auth.session_ended") : undefined);
    }
  });
  window.addEventListener("hashchange", show);
  // A silent refresh from the cookie, when there is one: a reload keeps you signed in.
  if (session.canRefresh() && await session.refresh()) {
    const me = await ask(() => api.GET("/api/me"));
    if (me.ok) {
      session.signedIn(me.data);
      return;
    }
  }
  signedOut();
}

void boot();
