// Photos (10 to 20, thumbnails, per-file refusals from the API), the upload with a
// progress bar, a training's live state (step, loss, ETA, samples, cancel), the models.
import { api, ask, session, toProblem, type Schemas } from "./api";
import { busy, clear, field, h, showProblem, type Problem } from "./dom";
import { date, status as statusWord, t } from "./i18n";
import { events } from "./socket";

const MIN_PHOTOS = 10;
const MAX_PHOTOS = 20;

/** A multipart upload through XHR: fetch reports no upload progress. */
function upload(files: File[], progress: (fraction: number) => void): Promise<
  { ok: true; data: Schemas["Uploaded"] } | { ok: false; problem: Problem }
> {
  return new Promise((resolve) => {
    const body = new FormData();
    for (const file of files) body.append("files", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/training/upload");
    for (const [name, value] of Object.entries(session.authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) progress(event.loaded / event.total);
    });
    xhr.addEventListener("load", () => {
      let parsed: unknown = null;
      try {
        parsed = JSON.parse(xhr.responseText);
      } catch { /* not JSON */ }
      if (xhr.status === 201) resolve({ ok: true, data: parsed as Schemas["Uploaded"] });
      else resolve({ ok: false, problem: toProblem(
        { status: xhr.status, headers: new Headers({ "Retry-After": xhr.getResponseHeader("Retry-After") ?? "" }) },
        parsed) });
    });
    xhr.addEventListener("error", () => resolve({ ok: false, problem: { status: 0 } }));
    xhr.send(body);
  });
}

export function trainView(): HTMLElement {
  let chosen: File[] = [];
  const urls = new Map<File, string>();
  const input = h("input", { type: "file", name: "files", multiple: true,
    accept: "image/jpeg,image/png,image/webp,image/heic" });
  const count = h("p", { class: "hint", "aria-live": "polite" });
  const thumbs = h("ul", { class: "thumbs" });
  const bar = h("progress", { max: 1, value: 0, hidden: true, "aria-label": t("train.upload") });
  const barText = h("span", { class: "hint", "aria-live": "polite" });
  const send = h("button", { type: "submit", class: "primary" }, t("train.upload"));
  const photos = h("form", { novalidate: true },
    field(t("train.choose"), input), count, thumbs, h("div", { class: "actions" }, send, bar, barText));
  const startArea = h("div");
  const live = h("div", { class: "job", "aria-live": "polite" });
  const models = h("div", { class: "models" });
  const sets = h("div", { class: "sets" });

  const drawThumbs = (rejected: Map<string, string> = new Map()) => {
    count.textContent = t("train.selected", { n: chosen.length });
    send.disabled = chosen.length < MIN_PHOTOS || chosen.length > MAX_PHOTOS;
    clear(thumbs, chosen.map((file) => {
      if (!urls.has(file)) urls.set(file, URL.createObjectURL(file));
      const remove = h("button", { type: "button", class: "remove",
        "aria-label": t("train.remove", { name: file.name }) }, "×");
      remove.addEventListener("click", () => {
        URL.revokeObjectURL(urls.get(file)!);
        urls.delete(file);
        chosen = chosen.filter((f) => f !== file);
        drawThumbs(rejected);
      });
      const reason = rejected.get(file.name);
      return h("li", { class: reason ? "rejected" : "" },
        h("img", { src: urls.get(file)!, alt: file.name }), remove,
        reason ? h("p", { class: "file-error" }, `${file.name}: ${reason}`) : null);
    }));
  };
  input.addEventListener("change", () => {
    const names = new Set(chosen.map((f) => f.name));
    chosen = [...chosen, ...Array.from(input.files ?? []).filter((f) => !names.has(f.name))];
    input.value = "";
    drawThumbs();
  });
  drawThumbs();

  photos.addEventListener("submit", async (event) => {
    event.preventDefault();
    showProblem(photos, null);
    busy(send, true);
    bar.hidden = false;
    const answer = await upload(chosen, (fraction) => {
      bar.value = fraction;
      barText.textContent = t("train.uploading", { pct: Math.round(fraction * 100) });
    });
    busy(send, false);
    bar.hidden = true;
    barText.textContent = "";
    if (!answer.ok) {
      const rejected = new Map((answer.problem.rejected ?? []).map((r) => [r.filename, r.reason]));
      drawThumbs(rejected);
      showProblem(photos, answer.problem);
      return;
    }
    barText.textContent = t("train.uploaded", { n: answer.data.images.length });
    void drawSets();
    startForm(answer.data.dataset_id);
  });

  function startForm(datasetId: string): void {
    const steps = h("input", { name: "steps", type: "number", min: 1, max: 20000, value: 1000 });
    const trigger = h("input", { name: "trigger_word", type: "text", maxlength: 32 });
    const go = h("button", { type: "submit", class: "primary" }, t("train.start"));
    const form = h("form", { novalidate: true },
      field(t("train.steps"), steps), field(t("train.trigger"), trigger), go);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      busy(go, true);
      const answer = await ask(() => api.POST("/api/training/start", { body: {
        dataset_id: datasetId, steps: Number(steps.value), trigger_word: trigger.value.trim() || null,
      } }));
      busy(go, false);
      if (!answer.ok) {
        showProblem(form, answer.problem);
        return;
      }
      follow(answer.data.job_id, answer.data.trigger_word);
    });
    clear(startArea, form);
  }

  let unfollow: (() => void) | null = null;
  function follow(jobId: string, trigger: string): void {
    const status = h("p", { class: "status" }, t("train.status", { status: statusWord("queued") }));
    const step = h("p", {});
    let stepText = "";
    const bar = h("progress", { max: 1, value: 0, "aria-label": t("train.status", { status: "" }) });
    const samples = h("div", { class: "samples" });
    const cancel = h("button", { type: "button" }, t("train.cancel"));
    cancel.addEventListener("click", async () => {
      busy(cancel, true);
      await ask(() => api.POST("/api/training/{job_id}/cancel", { params: { path: { job_id: jobId } } }));
    });
    clear(live, h("h2", {}, trigger), status, bar, step, cancel, samples);
    unfollow?.();
    unfollow = events.onJob(jobId, (frame) => {
      const p = frame.payload as Record<string, number | string | null>;
      switch (frame.type) {
        case "training.started.v1":
          status.textContent = t("train.status", { status: statusWord("running") });
          break;
        case "training.progressed.v1": {
          const total = Number(p.total_steps);
          bar.value = Number(p.step) / total;
          stepText = [t("train.step", { step: Number(p.step), total }),
            p.loss !== null ? t("train.loss", { loss: Number(p.loss).toFixed(4) }) : "",
          ].filter(Boolean).join(" · ");
          step.textContent = [stepText, p.eta_seconds !== null
            ? t("train.eta", { s: Math.round(Number(p.eta_seconds)) }) : ""].filter(Boolean).join(" · ");
          break;
        }
        case "training.completed.v1":
        case "training.cancelled.v1":
        case "job.failed.v1": {
          const ended = frame.type === "training.completed.v1" ? "ready"
            : frame.type === "training.cancelled.v1" ? "cancelled" : `failed: ${p.reason ?? ""}`;
          status.textContent = t("train.status", {
            status: ended.startsWith("failed") ? `${statusWord("failed")}: ${p.reason ?? ""}`
              : statusWord(ended) });
          if (ended === "ready") bar.value = 1;
          step.textContent = stepText; // nothing is left to wait for: no ETA
          cancel.remove();
          unfollow?.();
          void drawModels(samples, jobId);
          break;
        }
      }
    });
  }

  async function drawModels(samplesOf?: HTMLElement, jobId?: string): Promise<void> {
    const answer = await ask(() => api.GET("/api/me/models", { params: { query: { limit: 100 } } }));
    if (!answer.ok) return;
    const list = answer.data.items;
    if (samplesOf && jobId) {
      const model = list.find((m) => m.job_id === jobId);
      if (model?.sample_urls.length) {
        clear(samplesOf, h("h3", {}, t("train.samples")), model.sample_urls.map((url, i) =>
          h("img", { src: url, alt: `${t("train.samples")} ${i + 1}`, width: 128, height: 128 })));
      }
    }
    clear(models, h("h2", {}, t("train.models")),
      list.length ? h("ul", { class: "model-list" }, list.map((model) => {
        const remove = h("button", { type: "button", class: "danger",
          "aria-label": t("train.delete_model", { name: model.trigger_word }) }, t("gallery.delete"));
        remove.addEventListener("click", async () => {
          if (!confirm(t("train.confirm_delete_model", { name: model.trigger_word }))) return;
          busy(remove, true);
          const gone = await ask(() => api.DELETE("/api/models/{model_id}", {
            params: { path: { model_id: model.model_id } } }));
          if (gone.ok) void drawModels();
          else {
            busy(remove, false);
            alert(gone.problem.detail ?? gone.problem.status);
          }
        });
        return h("li", { "data-model": model.model_id },
          h("span", {}, t("train.model_line", { name: model.trigger_word, status: statusWord(model.status),
            date: date(model.created_at) })),
          model.sample_urls.slice(0, 2).map((url, i) => h("img", { src: url,
            alt: `${model.trigger_word} ${i + 1}`, width: 64, height: 64 })),
          remove);
      })) : h("p", {}, t("train.no_models")));
  }
  async function drawSets(): Promise<void> {
    const answer = await ask(() => api.GET("/api/me/datasets", { params: { query: { limit: 100 } } }));
    if (!answer.ok || !answer.data.items.length) {
      sets.replaceChildren();
      return;
    }
    clear(sets, h("h2", {}, t("train.sets")), h("ul", { class: "model-list" },
      answer.data.items.map((set) => {
        const use = h("button", { type: "button" }, t("train.use_set"));
        use.addEventListener("click", () => {
          startForm(set.dataset_id);
          startArea.scrollIntoView();
        });
        const remove = h("button", { type: "button", class: "danger" }, t("gallery.delete"));
        const item = h("li", { "data-dataset": set.dataset_id },
          h("span", {}, t("train.set_line", { n: set.image_count, date: date(set.created_at) })),
          use, remove);
        remove.addEventListener("click", async () => {
          if (!confirm(t("train.confirm_delete_set"))) return;
          busy(remove, true);
          const gone = await ask(() => api.DELETE("/api/training/datasets/{dataset_id}", {
            params: { path: { dataset_id: set.dataset_id } } }));
          busy(remove, false);
          if (gone.ok) item.remove();
          else showProblem(item, gone.problem);
        });
        return item;
      })));
  }

  /** A reopened page finds a training still queued or running, and follows it. */
  async function resume(): Promise<void> {
    const answer = await ask(() => api.GET("/api/me/jobs", { params: { query: {
      kind: ["training"], status: ["queued", "running"], limit: 1 } } }));
    const job = answer.ok ? answer.data.items[0] : undefined;
    if (job && !live.hasChildNodes()) follow(job.job_id, t("train.heading"));
  }

  void drawModels();
  void drawSets();
  void resume();

  return h("section", { class: "panel", "aria-labelledby": "train-heading" },
    h("h1", { id: "train-heading" }, t("train.heading")), photos, startArea, live, models, sets);
}
