// Notifications: this browser's Web Push opt-in (the service worker at /sw.js), the
// browsers and devices that are notified, which event notifies on which channel, and the
// webhooks (the secret shown once, test, rotate, pause, delete, their deliveries).
import { api, ask, type Schemas } from "./api";
import { busy, clear, field, h, problemMessage, showProblem, type Problem } from "./dom";
import { date, lang, named, t } from "./i18n";

type Channel = Schemas["Channel"];
type NotifyEvent = Schemas["NotifyEvent"];
type Webhook = Schemas["WebhookView"];
type Delivery = Schemas["DeliveryView"];

const EVENTS = [
  "training.completed", "training.failed", "training.cancelled",
  "generation.completed", "generation.failed", "prompt.optimized",
] as const satisfies readonly NotifyEvent[];
const CHANNELS = ["web_push", "mobile_push", "webhook"] as const satisfies readonly Channel[];
// Deliveries still pending are looked at again this often (sooner when one is due).
const POLL_MIN_MS = 1_000;
const POLL_MAX_MS = 30_000;
// The service worker must be active before subscribing; a browser that never gets it
// there (a broken worker) is given up on after this long.
const WORKER_READY_MS = 10_000;
// A push service answers a subscription in a second or two; a browser without one (offline,
// headless) may never answer. One that answers later is registered at the next visit.
const SUBSCRIBE_MS = 10_000;

function when(iso: string): string {
  return new Date(iso).toLocaleString(lang, { dateStyle: "short", timeStyle: "medium" });
}

function status(text = ""): HTMLParagraphElement {
  return h("p", { class: "hint", role: "status" }, text);
}

export function notificationsView(): HTMLElement {
  const push = h("section", { class: "block", "aria-labelledby": "push-heading" },
    h("h2", { id: "push-heading" }, t("notify.browser")), status(t("common.loading")));
  const targets = h("section", { class: "block", "aria-labelledby": "targets-heading" },
    h("h2", { id: "targets-heading" }, t("notify.targets")), status(t("common.loading")));
  const preferences = h("section", { class: "block", "aria-labelledby": "prefs-heading" },
    h("h2", { id: "prefs-heading" }, t("notify.preferences")), status(t("common.loading")));
  const hooks = h("section", { class: "block", "aria-labelledby": "hooks-heading" },
    h("h2", { id: "hooks-heading" }, t("hooks.heading")), status(t("common.loading")));
  const root = h("section", { class: "panel notifications", "aria-labelledby": "notify-heading" },
    h("h1", { id: "notify-heading" }, t("notify.heading")),
    h("p", {}, t("notify.intro")), push, targets, preferences, hooks);

  let thisBrowser: string | null = null; // this browser's subscription id, when subscribed
  const drawTargets = async () => {
    const answer = await ask(() => api.GET("/api/notifications"));
    if (!answer.ok) {
      clear(targets, targets.firstChild, status(problemMessage(answer.problem)));
      clear(preferences, preferences.firstChild, status(problemMessage(answer.problem)));
      return;
    }
    clear(targets, targets.firstChild, targetList(answer.data, thisBrowser, drawTargets));
    clear(preferences, preferences.firstChild, preferencesForm(answer.data.preferences));
  };
  const drawPush = (said = "") => clear(push, push.firstChild,
    pushOptIn(thisBrowser, said, (id, message) => {
      thisBrowser = id;
      drawPush(message);
      void drawTargets();
    }));
  void currentSubscription().then((id) => {
    thisBrowser = id;
    drawPush();
    return drawTargets();
  });
  void webhooks(hooks);
  return root;
}

// --- this browser ---------------------------------------------------------------------------

function pushSupported(): boolean {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

function keyBytes(base64url: string): Uint8Array<ArrayBuffer> {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
  const raw = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

function sameKey(a: ArrayBuffer | null, b: Uint8Array): boolean {
  if (!a || a.byteLength !== b.byteLength) return false;
  const bytes = new Uint8Array(a);
  return bytes.every((value, i) => value === b[i]);
}

/** Registers the subscription with the gateway (the same endpoint again is the same
 * subscription: its keys and language are brought up to date); returns its id. */
async function registerSubscription(subscription: PushSubscription): Promise<
  { ok: true; id: string } | { ok: false; message: string }
> {
  const json = subscription.toJSON();
  const answer = await ask(() => api.POST("/api/notifications/webpush", { body: {
    endpoint: json.endpoint ?? "", expirationTime: json.expirationTime ?? null,
    keys: { p256dh: json.keys?.p256dh ?? "", auth: json.keys?.auth ?? "" }, language: lang,
  } }));
  if (!answer.ok) return { ok: false, message: problemMessage(answer.problem) };
  return { ok: true, id: answer.data.subscription.id };
}

/** This browser's subscription id when it is subscribed (registered again: the browser
 * may have renewed it since, and the console's language may have changed). */
const FORGET_MS = 3000;

async function currentSubscription(): Promise<string | null> {
  if (!pushSupported()) return null;
  try {
    const registration = await navigator.serviceWorker.getRegistration("/");
    const subscription = await registration?.pushManager.getSubscription();
    if (!subscription) return null;
    const registered = await registerSubscription(subscription);
    return registered.ok ? registered.id : null;
  } catch {
    return null;
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) =>
    setTimeout(() => reject(new Error(message)), ms))]);
}

/** Subscribes this browser; every way it can fail ends in a sentence, never a throw. */
async function subscribe(): Promise<{ ok: true; id: string } | { ok: false; message: string }> {
  if (!pushSupported()) return { ok: false, message: t("notify.unsupported") };
  const key = await ask(() => api.GET("/api/notifications/webpush/key"));
  if (!key.ok) return { ok: false, message: problemMessage(key.problem) };
  let registration: ServiceWorkerRegistration;
  try {
    registration = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
  } catch (error) {
    return { ok: false, message: t("notify.subscribe_failed", { reason: reason(error) }) };
  }
  const permission = await Notification.requestPermission();
  if (permission === "denied") return { ok: false, message: t("notify.denied") };
  if (permission !== "granted") return { ok: false, message: t("notify.dismissed") };
  try {
    await withTimeout(navigator.serviceWorker.ready, WORKER_READY_MS,
      t("notify.worker_not_ready"));
    const applicationServerKey = keyBytes(key.data.public_key);
    const existing = await registration.pushManager.getSubscription();
    // One made with another server key (the operator changed it) cannot be reused.
    if (existing && !sameKey(existing.options.applicationServerKey, applicationServerKey)) {
      await existing.unsubscribe();
    }
    const subscription = await withTimeout(registration.pushManager.subscribe({
      userVisibleOnly: true, applicationServerKey }), SUBSCRIBE_MS,
    t("notify.no_push_service", { s: SUBSCRIBE_MS / 1000 }));
    return await registerSubscription(subscription);
  } catch (error) {
    if (error instanceof DOMException && error.name === "NotAllowedError") {
      return { ok: false, message: t("notify.denied") };
    }
    return { ok: false, message: t("notify.subscribe_failed", { reason: reason(error) }) };
  }
}

function reason(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.replace(/[.\s]+$/, "") || "unknown error";
}

async function unsubscribe(id: string): Promise<string | null> {
  const answer = await ask(() => api.DELETE("/api/notifications/webpush/{subscription_id}", {
    params: { path: { subscription_id: id } } }));
  if (!answer.ok && answer.problem.status !== 404) return problemMessage(answer.problem);
  await dropLocalSubscription();
  return null;
}

/** The browser's side of an unsubscription, once the gateway has forgotten it. */
async function dropLocalSubscription(): Promise<void> {
  try {
    const registration = await navigator.serviceWorker.getRegistration("/");
    await (await registration?.pushManager.getSubscription())?.unsubscribe();
  } catch { /* the gateway forgot it already: nothing more is sent */ }
}

/** Signing out: this browser stops receiving the account's notifications, so whoever
 * signs in here next never sees them. Best effort, bounded: it never holds up the
 * sign-out (the server also hands a browser to the last account that registers it). */
export async function forgetThisBrowser(): Promise<void> {
  const forget = async () => {
    const id = await currentSubscription();
    if (id) await unsubscribe(id);
  };
  await withTimeout(forget(), FORGET_MS, "").catch(() => undefined);
}

function pushOptIn(subscribed: string | null, said: string,
                   changed: (id: string | null, message: string) => void): HTMLElement {
  const state = h("p", {}, subscribed ? t("notify.browser_on") : t("notify.browser_off"));
  const message = h("p", { class: "push-status", role: "status" }, said);
  const toggle = h("button", { type: "button", class: subscribed ? "" : "primary" },
    subscribed ? t("notify.turn_off") : t("notify.turn_on"));
  const failed = (text: string) => {
    busy(toggle, false);
    message.classList.add("warning");
    message.textContent = text;
  };
  toggle.addEventListener("click", async () => {
    busy(toggle, true);
    message.classList.remove("warning");
    if (subscribed) {
      const refused = await unsubscribe(subscribed);
      if (refused) failed(refused);
      else changed(null, t("notify.turned_off"));
      return;
    }
    message.textContent = t("notify.turning_on");
    const result = await subscribe();
    if (!result.ok) failed(result.message);
    else changed(result.id, t("notify.turned_on"));
  });
  if (!pushSupported()) {
    toggle.disabled = true;
    message.textContent = t("notify.unsupported");
  }
  return h("div", { class: "push" }, state, h("div", { class: "actions" }, toggle), message);
}

// --- browsers and devices -------------------------------------------------------------------

function targetList(targets: Schemas["NotificationTargets"], thisBrowser: string | null,
                    changed: () => Promise<void>): HTMLElement {
  const items: HTMLElement[] = [];
  const item = (name: string, extra: string, target: Schemas["WebPushView"] | Schemas["DeviceView"],
                remove: () => Promise<{ ok: boolean; problem?: Problem }>) => {
    const button = h("button", { type: "button", class: "danger",
      "aria-label": t("notify.remove_target", { name }) }, t("notify.remove"));
    const error = h("p", { class: "form-error", role: "alert" });
    button.addEventListener("click", async () => {
      if (!confirm(t("notify.confirm_remove", { name }))) return;
      busy(button, true);
      const answer = await remove();
      busy(button, false);
      if (!answer.ok && answer.problem) error.textContent = problemMessage(answer.problem);
      else await changed();
    });
    return h("li", { "data-target": target.id },
      h("span", {}, name, extra ? h("strong", {}, ` (${extra})`) : null),
      target.enabled ? null : h("span", { class: "warning" },
        t("notify.disabled", { reason: target.disabled_reason ?? "" })),
      button, error);
  };
  for (const sub of targets.web_push) {
    const name = t("notify.webpush_line", { origin: sub.endpoint_origin, date: date(sub.created_at) });
    items.push(item(name, sub.id === thisBrowser ? t("notify.this_browser") : "", sub, async () => {
      const answer = await ask(() => api.DELETE("/api/notifications/webpush/{subscription_id}", {
        params: { path: { subscription_id: sub.id } } }));
      if (answer.ok && sub.id === thisBrowser) await dropLocalSubscription();
      return answer;
    }));
  }
  for (const device of targets.devices) {
    const name = t("notify.device_line", { platform: device.platform, provider: device.provider,
      hint: device.token_hint, date: date(device.created_at) });
    items.push(item(name, "", device, () => ask(() => api.DELETE(
      "/api/notifications/devices/{device_id}", { params: { path: { device_id: device.id } } }))));
  }
  if (!items.length) return h("p", { class: "empty" }, t("notify.no_targets"));
  return h("ul", { class: "targets" }, items);
}

// --- preferences ----------------------------------------------------------------------------

function preferencesForm(preferences: Schemas["PreferencesView"]): HTMLElement {
  const boxes = new Map<string, HTMLInputElement>();
  const events = [...EVENTS, ...Object.keys(preferences.events)
    .filter((e) => !(EVENTS as readonly string[]).includes(e))] as NotifyEvent[];
  const save = h("button", { type: "submit", class: "primary" }, t("notify.save"));
  const saved = h("p", { class: "hint", role: "status" });
  const rows = events.map((event) => h("tr", {},
    h("th", { scope: "row" }, named("event", event)),
    CHANNELS.map((channel) => {
      const box = h("input", { type: "checkbox", name: `${event}:${channel}`,
        "aria-label": t("notify.cell", { event: named("event", event),
                                          channel: named("channel", channel) }) });
      box.checked = (preferences.events[event] ?? []).includes(channel);
      box.addEventListener("change", () => {
        saved.textContent = "";
      });
      boxes.set(`${event}:${channel}`, box);
      return h("td", {}, box);
    })));
  const form = h("form", { novalidate: true, class: "preferences", "aria-labelledby": "prefs-heading" },
    h("div", { class: "scroll" }, h("table", {},
      h("caption", {}, t("notify.preferences_caption")),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("notify.event")),
        CHANNELS.map((channel) => h("th", { scope: "col" }, named("channel", channel))))),
      h("tbody", {}, rows))),
    h("div", { class: "actions" }, save, saved));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(save, true);
    saved.textContent = "";
    const chosen = Object.fromEntries(events.map((e) => [e, CHANNELS.filter(
      (channel) => boxes.get(`${e}:${channel}`)?.checked)]));
    const answer = await ask(() => api.PUT("/api/notifications/preferences", {
      body: { events: chosen } }));
    busy(save, false);
    if (!answer.ok) {
      showProblem(form, answer.problem);
      return;
    }
    showProblem(form, null);
    for (const [name, box] of boxes) {
      const [e, channel] = name.split(":") as [NotifyEvent, Channel];
      box.checked = (answer.data.events[e] ?? []).includes(channel);
    }
    saved.textContent = t("notify.saved");
  });
  return form;
}

// --- webhooks -------------------------------------------------------------------------------

async function webhooks(block: HTMLElement): Promise<void> {
  const list = h("ul", { class: "webhooks" });
  const secretBox = h("div", { class: "secret-box" });
  const draw = async () => {
    const answer = await ask(() => api.GET("/api/webhooks"));
    if (!answer.ok) {
      clear(list, h("li", { class: "form-error" }, problemMessage(answer.problem)));
      return;
    }
    if (!answer.data.webhooks.length) {
      clear(list, h("li", { class: "empty" }, t("hooks.none")));
      return;
    }
    clear(list, answer.data.webhooks.map((hook) => webhookItem(hook, draw, (secret, until) =>
      clear(secretBox, secretShown(secret, until)))));
  };
  clear(block, block.firstChild, h("p", { class: "hint" }, t("hooks.intro")),
    createForm((secret) => {
      clear(secretBox, secretShown(secret, null));
      void draw();
    }), secretBox, list);
  await draw();
}

function createForm(created: (secret: string) => void): HTMLElement {
  const url = h("input", { name: "url", type: "url", inputmode: "url", autocomplete: "url",
    required: true, maxlength: 2048, placeholder: "https://example.com/terra/webhook" });
  const description = h("input", { name: "description", type: "text", maxlength: 200,
    autocomplete: "off" });
  const eventBoxes = EVENTS.map((event) => {
    const box = h("input", { type: "checkbox", name: "events", value: event });
    return { event, box, label: h("label", { class: "check" }, box, ` ${named("event", event)}`) };
  });
  const events = h("fieldset", { class: "field events", "aria-describedby": "hook-events-hint" },
    h("legend", {}, t("hooks.events")),
    h("p", { class: "hint", id: "hook-events-hint" }, t("hooks.events_hint")),
    h("div", { class: "checks" }, eventBoxes.map((e) => e.label)));
  const submit = h("button", { type: "submit", class: "primary" }, t("hooks.create"));
  const form = h("form", { novalidate: true, class: "webhook-form", "aria-labelledby": "hooks-heading" },
    field(t("hooks.url"), url, t("hooks.url_hint")), events,
    field(t("hooks.description"), description), submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(submit, true);
    const chosen = eventBoxes.filter((e) => e.box.checked).map((e) => e.event);
    const answer = await ask(() => api.POST("/api/webhooks", { body: {
      url: url.value.trim(), events: chosen.length ? chosen : null,
      description: description.value.trim() || null } }));
    busy(submit, false);
    if (!answer.ok) {
      showProblem(form, answer.problem);
      return;
    }
    showProblem(form, null);
    url.value = "";
    description.value = "";
    for (const e of eventBoxes) e.box.checked = false;
    created(answer.data.secret);
  });
  return form;
}

/** The secret, this once: a read-only field to copy from, and a warning. */
function secretShown(secret: string, oldUntil: string | null): HTMLElement {
  const input = h("input", { type: "text", readonly: true, value: secret, name: "secret",
    class: "secret", spellcheck: "false", autocomplete: "off" });
  const copy = h("button", { type: "button" }, t("hooks.copy"));
  const copied = h("span", { class: "hint", role: "status" });
  copy.addEventListener("click", async () => {
    input.select();
    try {
      await navigator.clipboard.writeText(secret);
      copied.textContent = t("hooks.copied");
    } catch {
      copied.textContent = t("hooks.copy_failed");
    }
  });
  input.addEventListener("focus", () => input.select());
  return h("div", { class: "secret-shown" },
    h("p", { class: "warning", role: "alert" },
      oldUntil ? t("hooks.secret_rotated", { date: date(oldUntil) }) : t("hooks.secret_once")),
    field(t("hooks.secret"), input), h("div", { class: "actions" }, copy, copied));
}

function webhookState(hook: Webhook): HTMLElement {
  if (hook.enabled) return h("p", { class: "state", "data-state": "enabled" }, t("hooks.enabled"));
  return h("p", { class: "state warning", "data-state": "disabled" },
    t("hooks.disabled", { date: date(hook.disabled_at ?? hook.created_at),
                          reason: hook.disabled_reason ?? "" }));
}

function webhookItem(hook: Webhook, changed: () => Promise<void>,
                     secret: (value: string, oldUntil: string | null) => void): HTMLElement {
  const headingId = `hook-${hook.id}`;
  const state = h("div", {}, webhookState(hook));
  const notice = h("p", { class: "hint", role: "status" });
  const actions = h("div", { class: "hook-actions" });
  const deliveries = h("div", { class: "deliveries" });
  let timer: number | undefined;

  const act = async (button: HTMLButtonElement, call: () => Promise<
    { ok: true; data: unknown } | { ok: false; problem: Problem }
  >, done: string): Promise<boolean> => {
    busy(button, true);
    notice.textContent = "";
    const answer = await call();
    busy(button, false);
    if (!answer.ok) {
      showProblem(actions, answer.problem);
      return false;
    }
    showProblem(actions, null);
    notice.textContent = done;
    return true;
  };

  const test = h("button", { type: "button", disabled: !hook.enabled }, t("hooks.test"));
  test.addEventListener("click", async () => {
    if (await act(test, () => ask(() => api.POST("/api/webhooks/{webhook_id}/test", {
      params: { path: { webhook_id: hook.id } } })), t("hooks.test_sent"))) void poll(0);
  });
  const rotate = h("button", { type: "button" }, t("hooks.rotate"));
  rotate.addEventListener("click", async () => {
    if (!confirm(t("hooks.confirm_rotate"))) return;
    busy(rotate, true);
    const answer = await ask(() => api.POST("/api/webhooks/{webhook_id}/rotate-secret", {
      params: { path: { webhook_id: hook.id } } }));
    busy(rotate, false);
    if (!answer.ok) {
      showProblem(actions, answer.problem);
      return;
    }
    showProblem(actions, null);
    secret(answer.data.secret, answer.data.webhook.previous_secret_expires_at ?? null);
  });
  const toggle = h("button", { type: "button" }, hook.enabled ? t("hooks.pause") : t("hooks.enable"));
  toggle.addEventListener("click", async () => {
    if (await act(toggle, () => ask(() => api.PATCH("/api/webhooks/{webhook_id}", {
      params: { path: { webhook_id: hook.id } }, body: { enabled: !hook.enabled } })), "")) {
      await changed();
    }
  });
  const remove = h("button", { type: "button", class: "danger" }, t("hooks.delete"));
  remove.addEventListener("click", async () => {
    if (!confirm(t("hooks.confirm_delete", { url: hook.url }))) return;
    if (await act(remove, () => ask(() => api.DELETE("/api/webhooks/{webhook_id}", {
      params: { path: { webhook_id: hook.id } } })), "")) await changed();
  });
  clear(actions, h("div", { class: "actions" }, test, rotate, toggle, remove), notice);

  const refresh = h("button", { type: "button", class: "link" }, t("hooks.refresh"));
  refresh.addEventListener("click", () => void poll(0));

  /** Reads the deliveries (and the webhook's state: retries spent disable it), and looks
   * again while any is pending, for as long as this webhook is on the page. */
  const poll = async (inMs: number) => {
    clearTimeout(timer);
    if (inMs) {
      timer = window.setTimeout(() => void poll(0), inMs);
      return;
    }
    // The first read comes right after the list that drew this webhook: its state is known.
    const [list, fresh] = await Promise.all([
      ask(() => api.GET("/api/webhooks/{webhook_id}/deliveries", {
        params: { path: { webhook_id: hook.id } } })),
      item.dataset.drawn ? ask(() => api.GET("/api/webhooks/{webhook_id}", {
        params: { path: { webhook_id: hook.id } } })) : null,
    ]);
    if (!item.isConnected && item.dataset.drawn) return;
    item.dataset.drawn = "true";
    if (fresh?.ok && fresh.data.enabled !== hook.enabled) return void changed();
    if (!list.ok) {
      clear(deliveries, h("p", { class: "form-error" }, problemMessage(list.problem)));
      return;
    }
    clear(deliveries, deliveryTable(hook, list.data.deliveries, () => void poll(POLL_MIN_MS)),
      refresh);
    const pending = list.data.deliveries.filter((d) => d.state === "pending");
    if (!pending.length) return;
    const due = Math.min(...pending.map((d) => (d.next_attempt_at
      ? Date.parse(d.next_attempt_at) - Date.now() : 0)));
    void poll(Math.min(POLL_MAX_MS, Math.max(POLL_MIN_MS, due)));
  };

  const item = h("li", { "data-webhook": hook.id, "aria-labelledby": headingId },
    h("h3", { id: headingId, class: "url" }, hook.url),
    hook.description ? h("p", {}, hook.description) : null,
    h("p", { class: "hint" }, hook.events?.length
      ? hook.events.map((e) => named("event", e)).join(", ") : t("hooks.all_events")),
    state, actions, deliveries);
  void poll(0);
  return item;
}

function deliveryTable(hook: Webhook, deliveries: Delivery[], redelivered: () => void): HTMLElement {
  if (!deliveries.length) return h("p", { class: "empty" }, t("hooks.no_deliveries"));
  const rows = deliveries.map((delivery) => {
    const again = h("button", { type: "button", disabled: !hook.enabled || delivery.state === "pending" },
      t("hooks.redeliver"));
    const error = h("span", { class: "field-error", role: "alert" });
    again.addEventListener("click", async () => {
      busy(again, true);
      const answer = await ask(() => api.POST(
        "/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        { params: { path: { webhook_id: hook.id, delivery_id: delivery.id } } }));
      if (!answer.ok) {
        busy(again, false);
        error.textContent = problemMessage(answer.problem);
        return;
      }
      error.textContent = t("hooks.redelivered");
      redelivered();
    });
    const attempts = delivery.attempts.map((attempt) => h("li", {
      "data-status": attempt.status_code ?? "" },
      t("hooks.attempt", { code: attempt.status_code ?? attempt.error ?? t("hooks.no_answer"),
                           date: when(attempt.at), ms: attempt.duration_ms ?? 0 }),
      attempt.status_code && attempt.error ? ` (${attempt.error})` : ""));
    return h("tr", { "data-delivery": delivery.id, "data-state": delivery.state },
      h("td", {}, named("event", delivery.event), h("br"),
        h("code", { class: "hint" }, delivery.id)),
      h("td", { class: "state" }, named("delivery", delivery.state),
        delivery.state === "pending" && delivery.next_attempt_at
          ? h("p", { class: "hint" }, t("hooks.next_attempt", { date: when(delivery.next_attempt_at) }))
          : null),
      h("td", {}, attempts.length ? h("ol", { class: "attempts" }, attempts) : "–"),
      h("td", {}, again, error));
  });
  return h("div", { class: "scroll" }, h("table", { class: "deliveries" },
    h("caption", {}, t("hooks.deliveries", { url: hook.url })),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, t("notify.event")),
      h("th", { scope: "col" }, t("hooks.state")), h("th", { scope: "col" }, t("hooks.attempts")),
      h("th", { scope: "col" }, t("hooks.actions")))),
    h("tbody", {}, rows)));
}
