// The gallery: your images (presigned, short-lived URLs), download, delete, expiry.
import { api, ask, type Schemas } from "./api";
import { busy, clear, h } from "./dom";
import { date, t } from "./i18n";

export type Image = Schemas["ImageItem"];

/** A page of the caller's images, newest first (of one job, when given). */
export async function listImages(query: { job_id?: string; cursor?: string } = {}): Promise<
  { items: Image[]; next: string | null }
> {
  const answer = await ask(() => api.GET("/api/me/images", {
    params: { query: { limit: 24, ...query } } }));
  if (!answer.ok) return { items: [], next: null };
  return { items: answer.data.items, next: answer.data.next_cursor ?? null };
}

// A presigned URL is renewed this long before it expires (the API signs for 15 minutes).
const RENEW_BEFORE_MS = 60_000;
const LOAD_RETRIES = 3;

/** An image through its presigned URL, kept fresh: a minute before the URL expires, and
 * after a failed load (an expired URL after a sleep, a blip), it is signed anew from its
 * job's listing; the links given follow. `data-renewals` counts renewals (for tests). */
export function presignedImage(image: Image, attrs: { alt: string; loading?: "lazy" },
                               links: HTMLAnchorElement[] = []): HTMLImageElement {
  const img = h("img", { ...attrs, src: image.download_url, width: image.width,
    height: image.height });
  let timer: number | undefined;
  let failures = 0;
  const renew = async (): Promise<boolean> => {
    const listed = await listImages({ job_id: image.job_id });
    const fresh = listed.items.find((i) => i.image_id === image.image_id);
    if (!fresh) return false; // deleted or expired: nothing to renew
    img.src = fresh.download_url;
    for (const link of links) link.href = fresh.download_url;
    img.dataset.renewals = String(Number(img.dataset.renewals ?? 0) + 1);
    schedule(fresh.download_url_expires_at);
    return true;
  };
  const schedule = (expiresAt: string) => {
    clearTimeout(timer);
    const inMs = Math.max(1000, Date.parse(expiresAt) - Date.now() - RENEW_BEFORE_MS);
    // One that left the page stops here; shown again later, a failed load renews it.
    timer = window.setTimeout(() => {
      if (img.isConnected) void renew();
    }, inMs);
  };
  const retry = () => {
    if (failures >= LOAD_RETRIES) return;
    const wait = 1000 * 2 ** failures;
    failures += 1;
    window.setTimeout(async () => {
      if (!(await renew())) retry();
    }, wait);
  };
  img.addEventListener("error", retry);
  img.addEventListener("load", () => {
    failures = 0;
  });
  schedule(image.download_url_expires_at);
  return img;
}

export function galleryView(): HTMLElement {
  const grid = h("ul", { class: "gallery", "aria-live": "polite" },
    h("li", {}, t("common.loading")));
  const more = h("button", { type: "button", hidden: true }, t("gallery.more"));
  let cursor: string | null = null;
  const draw = async () => {
    const page = await listImages(cursor ? { cursor } : {});
    if (!cursor) grid.replaceChildren();
    cursor = page.next;
    more.hidden = cursor === null;
    if (!page.items.length && !grid.children.length) {
      clear(grid, h("li", { class: "empty" }, t("gallery.empty")));
      return;
    }
    grid.append(...page.items.map((image) => {
      const remove = h("button", { type: "button", class: "danger" }, t("gallery.delete"));
      const download = h("a", { href: image.download_url, download: `${image.image_id}.png`,
        target: "_blank", rel: "noopener", class: "button" }, t("gallery.download"));
      const item = h("li", { "data-image": image.image_id },
        presignedImage(image, { alt: image.prompt, loading: "lazy" }, [download]),
        h("p", { class: "prompt" }, image.prompt),
        h("p", { class: "hint" }, `${image.model} · ${image.width} × ${image.height} · seed ${image.seed}`),
        h("p", { class: "hint" }, t("gallery.expires", { date: date(image.expires_at) })),
        h("div", { class: "actions" },
          download, remove));
      remove.addEventListener("click", async () => {
        if (!confirm(t("gallery.confirm_delete"))) return;
        busy(remove, true);
        const answer = await ask(() => api.DELETE("/api/images/{image_id}", {
          params: { path: { image_id: image.image_id } } }));
        if (answer.ok) item.remove();
        else busy(remove, false);
        if (!grid.children.length) clear(grid, h("li", { class: "empty" }, t("gallery.empty")));
      });
      return item;
    }));
  };
  more.addEventListener("click", () => void draw());
  void draw();
  return h("section", { class: "panel", "aria-labelledby": "gallery-heading" },
    h("h1", { id: "gallery-heading" }, t("gallery.heading")), grid, more);
}
