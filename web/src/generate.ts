// Generation: the form (prompt prefilled from an accepted optimisation, model, size,
// seed, count), then each job's live state: queue position, per-step progress, the
// images, cancel.
import { api, ask } from "./api";
import { busy, field, h, showProblem } from "./dom";
import { listImages, presignedImage, type Image } from "./gallery";
import { t } from "./i18n";
import { events } from "./socket";
import { store } from "./store";

// Jobs stay listed while the user looks at other sections (the form is rebuilt).
const jobs = h("div", { class: "jobs" });

export function resetJobs(): void {
  jobs.replaceChildren();
}

/** A reopened page finds the generations still queued or running, and follows them. */
export async function resumeJobs(): Promise<void> {
  // Listed once the socket is live, so a job that ends in between is either not listed
  // (done) or its ending reaches its card (live, or replayed by onJob).
  await events.whenLive();
  const answer = await ask(() => api.GET("/api/me/jobs", { params: { query: {
    kind: ["generation"], status: ["queued", "running"], limit: 20 } } }));
  if (!answer.ok) return;
  for (const job of answer.data.items) {
    if (!jobs.querySelector(`[data-job="${CSS.escape(job.job_id)}"]`)) {
      const card = jobCard(job.job_id, 0, "");
      card.querySelector("progress")!.value = job.progress;
      if (job.status === "running") card.querySelector(".status")!.textContent = t("gen.started");
      jobs.append(card);
    }
  }
}

const SIZES = ["256x256", "512x512", "768x768", "1024x1024", "768x1024", "1024x768"];

export function generateView(): HTMLElement {
  const prompt = h("textarea", { name: "prompt", rows: 3, maxlength: 2000, required: true });
  prompt.value = store.acceptedPrompt ?? "";
  const model = h("select", { name: "model" },
    h("option", { value: "auto" }, t("gen.model_auto")),
    h("option", { value: "schnell" }, "FLUX.1 schnell"),
    h("option", { value: "dev" }, "FLUX.1 dev"));
  const lora = h("select", { name: "lora_id" }, h("option", { value: "" }, t("gen.lora_none")));
  const loras = new Map<string, string>(); // model id → trigger word
  model.addEventListener("change", () => {
    if (model.value === "schnell") lora.value = ""; // a LoRA needs dev
  });
  const size = h("select", { name: "width" }, SIZES.map((s) => h("option", { value: s }, s.replace("x", " × "))));
  size.value = "1024x1024";
  const seed = h("input", { name: "seed", type: "number", min: 0, inputmode: "numeric" });
  const count = h("select", { name: "num_images" }, [1, 2, 3, 4].map((n) => h("option", { value: n }, String(n))));
  const submit = h("button", { type: "submit", class: "primary" }, t("gen.submit"));
  const form = h("form", { novalidate: true },
    field(t("gen.prompt"), prompt),
    h("div", { class: "row" }, field(t("gen.model"), model), field(t("gen.lora"), lora)),
    h("div", { class: "row" }, field(t("gen.size"), size), field(t("gen.seed"), seed),
      field(t("gen.count"), count)),
    submit);

  void ask(() => api.GET("/api/me/models", { params: { query: { status: ["ready"], limit: 100 } } }))
    .then((answer) => {
    if (!answer.ok) return;
    for (const m of answer.data.items) {
      loras.set(m.model_id, m.trigger_word);
      lora.append(h("option", { value: m.model_id }, m.trigger_word));
    }
    // What `auto` would take anyway (the newest), shown rather than implied.
    const newest = answer.data.items[0];
    if (newest && model.value === "auto") lora.value = newest.model_id;
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showProblem(form, null);
    const [width, height] = size.value.split("x").map(Number) as [number, number];
    busy(submit, true);
    const answer = await ask(() => api.POST("/api/generate/image", { body: {
      prompt: prompt.value,
      model: model.value as "auto" | "schnell" | "dev",
      lora_id: lora.value || null,
      width, height,
      seed: seed.value === "" ? null : Number(seed.value),
      num_images: Number(count.value),
    } }));
    busy(submit, false);
    if (!answer.ok) {
      showProblem(form, answer.problem);
      return;
    }
    const used = answer.data.model === "dev" ? "FLUX.1 dev" : "FLUX.1 schnell";
    const withLora = answer.data.lora_id ? loras.get(answer.data.lora_id) ?? answer.data.lora_id : null;
    jobs.prepend(jobCard(answer.data.job_id, answer.data.queue_position, prompt.value,
      withLora ? `${used} + ${withLora}` : used));
  });

  return h("section", { class: "panel", "aria-labelledby": "gen-heading" },
    h("h1", { id: "gen-heading" }, t("gen.heading")), form, jobs);
}

function jobCard(jobId: string, position: number, text: string, model = ""): HTMLElement {
  const status = h("p", { class: "status", role: "status" },
    position > 0 ? t("gen.queued", { n: position }) : t("gen.next"));
  const bar = h("progress", { max: 1, value: 0, "aria-label": text.slice(0, 60) || t("gen.heading") });
  const images = h("div", { class: "images" });
  const shown = new Map<string, HTMLElement>(); // image id → its figure: each shown once
  const cancel = h("button", { type: "button" }, t("gen.cancel"));
  const card = h("article", { class: "job", "data-job": jobId },
    h("p", { class: "prompt" }, text), model ? h("p", { class: "hint model" }, model) : null,
    status, bar, cancel, images);
  cancel.addEventListener("click", async () => {
    busy(cancel, true);
    const answer = await ask(() => api.POST("/api/generate/{job_id}/cancel", {
      params: { path: { job_id: jobId } } }));
    if (!answer.ok) {
      busy(cancel, false);
      status.textContent = answer.problem.detail ?? "";
    }
  });
  const stop = events.onJob(jobId, async (frame) => {
    const p = frame.payload as Record<string, unknown>;
    switch (frame.type) {
      case "generation.queued.v1":
      case "generation.position_changed.v1":
        status.textContent = Number(p.position) > 0 ? t("gen.queued", { n: Number(p.position) })
          : t("gen.next");
        break;
      case "generation.started.v1":
        status.textContent = t("gen.started");
        break;
      case "job.requeued.v1":
        status.textContent = t("gen.requeued");
        break;
      case "generation.progressed.v1":
        bar.value = Number(p.step) / Number(p.total_steps);
        status.textContent = t("gen.running", { step: Number(p.step), total: Number(p.total_steps) });
        break;
      case "generation.image_generated.v1": {
        stop();
        bar.value = 1;
        status.textContent = t("gen.done");
        card.dataset.done = "true";
        cancel.remove();
        const ids = new Set((p.images as { image_id: string }[]).map((i) => i.image_id));
        const listed = await listImages({ job_id: jobId });
        for (const image of listed.items.filter((i) => ids.has(i.image_id))) {
          if (!shown.has(image.image_id)) {
            const figure = imageFigure(image);
            shown.set(image.image_id, figure);
            images.append(figure);
          }
        }
        break;
      }
      case "generation.cancelled.v1":
        stop();
        status.textContent = t("gen.cancelled");
        cancel.remove();
        break;
      case "job.failed.v1":
        stop();
        status.textContent = t("gen.failed", { reason: String(p.reason ?? p.code ?? "") });
        cancel.remove();
        break;
    }
  });
  return card;
}

function imageFigure(image: Image): HTMLElement {
  return h("figure", { "data-image": image.image_id },
    presignedImage(image, { alt: image.prompt }),
    h("figcaption", {}, `${image.width} × ${image.height} · seed ${image.seed}`));
}
