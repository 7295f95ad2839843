// The service worker (served at /sw.js, scope /): it shows the notifications that
// notifier_service sends by Web Push, and a click brings the console to what it is about.
// The browser decrypts the message (RFC 8291); its body is JSON: title, body, event,
// deep_link, job_id, model_id, image_ids, delivery_id.
export {};

// The WebWorker library's types clash with the DOM's in one program: only what is used here.
interface ExtendableEvent extends Event {
  waitUntil(promise: Promise<unknown>): void;
}
interface PushEvent extends ExtendableEvent {
  readonly data: { json(): unknown; text(): string } | null;
}
interface NotificationClickEvent extends ExtendableEvent {
  readonly notification: Notification;
}
interface WindowClient {
  readonly url: string;
  focus(): Promise<WindowClient>;
  navigate(url: string): Promise<WindowClient | null>;
}
interface WorkerScope {
  readonly registration: ServiceWorkerRegistration;
  readonly location: Location;
  readonly clients: {
    matchAll(options: { type: "window"; includeUncontrolled: boolean }): Promise<WindowClient[]>;
    openWindow(url: string): Promise<WindowClient | null>;
    claim(): Promise<void>;
  };
  skipWaiting(): Promise<void>;
  addEventListener(type: "install" | "activate", listener: (event: ExtendableEvent) => void): void;
  addEventListener(type: "push", listener: (event: PushEvent) => void): void;
  addEventListener(type: "notificationclick", listener: (event: NotificationClickEvent) => void): void;
}
declare const self: WorkerScope;

interface Payload {
  title?: string;
  body?: string;
  event?: string;
  deep_link?: string;
  job_id?: string | null;
  delivery_id?: string;
}

/** The console's own place for a deep link: it is one page with a section per hash, so
 * `/models/…` opens Train, `/images/…` the gallery, a job its section. */
export function consoleUrl(payload: Payload, origin: string): string {
  const link = payload.deep_link ?? "/";
  const event = payload.event ?? "";
  let section = "";
  if (link.startsWith("/models/") || event.startsWith("training.")) section = "train";
  else if (link.startsWith("/images/")) section = "gallery";
  else if (event.startsWith("generation.")) section = "generate";
  else if (event.startsWith("prompt.")) section = "prompt";
  return new URL(section ? `/#${section}` : "/", origin).href;
}

function parse(event: PushEvent): Payload {
  if (!event.data) return {};
  try {
    const value = event.data.json();
    return value && typeof value === "object" ? (value as Payload) : {};
  } catch {
    return { body: event.data.text() };
  }
}

self.addEventListener("install", (event) => event.waitUntil(self.skipWaiting()));
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

self.addEventListener("push", (event) => {
  const payload = parse(event);
  const url = consoleUrl(payload, self.location.origin);
  event.waitUntil(self.registration.showNotification(payload.title || "Terra", {
    body: payload.body ?? "",
    icon: "/console/favicon.svg",
    // One per job: a repeat (a redelivery) replaces the notification instead of adding one.
    tag: payload.job_id ?? payload.delivery_id ?? "terra",
    data: { url },
  }));
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data as { url?: string } | null)?.url
    ?? new URL("/", self.location.origin).href;
  event.waitUntil((async () => {
    const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
    // A console already open is brought forward and moved there; else a new one opens.
    const open = windows.find((client) => new URL(client.url).origin === self.location.origin);
    if (open) {
      await open.focus();
      if (open.url !== url) await open.navigate(url).catch(() => null);
      return;
    }
    await self.clients.openWindow(url);
  })());
});
