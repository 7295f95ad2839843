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
      const item = h("li", { "data-image": image.image_id },
        h("img", { src: image.download_url, alt: image.prompt, loading: "lazy",
          width: image.width, height: image.height }),
        h("p", { class: "prompt" }, image.prompt),
        h("p", { class: "hint" }, `${image.model} · ${image.width} × ${image.height} · seed ${image.seed}`),
        h("p", { class: "hint" }, t("gallery.expires", { date: date(image.expires_at) })),
        h("div", { class: "actions" },
          h("a", { href: image.download_url, download: `${image.image_id}.png`, target: "_blank",
            rel: "noopener", class: "button" }, t("gallery.download")),
          remove));
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
