// Prompt optimisation with a style: the analysis, the changes and a word diff; accept,
// edit or reject. What is kept fills the generation form.
import { api, ask } from "./api";
import { busy, clear, field, h, showProblem } from "./dom";
import { t } from "./i18n";
import { events, type EventFrame } from "./socket";
import { store } from "./store";

export interface Optimised {
  job_id: string;
  original: string;
  optimized: string;
  variants?: string[];
  analysis?: Record<string, string | null>;
  changes?: { kind: string; text: string; reason: string }[];
  tokens?: { clip: number; t5: number };
  warnings?: string[];
}

/** A word-level diff (longest common subsequence): runs of kept, removed and added words. */
export function wordDiff(before: string, after: string): HTMLElement {
  const a = before.split(/\s+/).filter(Boolean);
  const b = after.split(/\s+/).filter(Boolean);
  const lcs = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j] ? lcs[i + 1]![j + 1]! + 1
        : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  const runs: { op: "same" | "del" | "ins"; words: string[] }[] = [];
  const push = (op: "same" | "del" | "ins", word: string) => {
    const last = runs[runs.length - 1];
    if (last?.op === op) last.words.push(word);
    else runs.push({ op, words: [word] });
  };
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    if (i < a.length && j < b.length && a[i] === b[j]) {
      push("same", a[i++]!);
      j++;
    } else if (i < a.length && (j >= b.length || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      push("del", a[i++]!);
    } else {
      push("ins", b[j++]!);
    }
  }
  const out = h("p", { class: "diff" });
  runs.forEach((run, n) => {
    if (n > 0) out.append(" ");
    const text = run.words.join(" ");
    out.append(run.op === "same" ? text : h(run.op, {}, text));
  });
  return out;
}

export function promptView(): HTMLElement {
  const prompt = h("textarea", { name: "prompt", rows: 3, maxlength: 2000, required: true });
  const style = h("select", { name: "style" }, h("option", { value: "" }, t("prompt.no_style")));
  const submit = h("button", { type: "submit", class: "primary" }, t("prompt.optimise"));
  const form = h("form", { novalidate: true },
    field(t("prompt.prompt"), prompt), field(t("prompt.style"), style), submit);
  const result = h("div", { class: "result", "aria-live": "polite" });
  let waiting: (() => void) | null = null;

  void ask(() => api.GET("/api/prompt/styles")).then((answer) => {
    if (!answer.ok) return;
    for (const preset of answer.data) {
      style.append(h("option", { value: preset.name, title: preset.description }, preset.label));
    }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    showProblem(form, null);
    busy(submit, true);
    clear(result, h("p", { class: "status" }, t("prompt.working")));
    const answer = await ask(() => api.POST("/api/prompt/optimize", {
      params: { query: { wait: true } },
      body: { prompt: prompt.value, style: style.value || null },
    }));
    if (!answer.ok) {
      busy(submit, false);
      clear(result);
      showProblem(form, answer.problem);
      return;
    }
    const data = answer.data as unknown as Optimised & { status?: string };
    if (answer.status === 200) {
      busy(submit, false);
      show(data);
      return;
    }
    // 202: the result comes on the socket.
    waiting?.();
    waiting = events.onJob(data.job_id, (frame: EventFrame) => {
      if (frame.type === "prompt.optimized.v1") {
        waiting?.();
        busy(submit, false);
        show(frame.payload as unknown as Optimised);
      } else if (frame.type === "job.failed.v1") {
        waiting?.();
        busy(submit, false);
        clear(result);
        showProblem(form, { status: 422, detail: String(frame.payload.reason ?? "failed") });
      }
    });
  });

  function show(data: Optimised): void {
    const edit = h("textarea", { name: "final_prompt", rows: 4, maxlength: 2000 });
    edit.value = data.optimized;
    const accept = h("button", { type: "submit", class: "primary" }, t("prompt.accept"));
    const reject = h("button", { type: "button" }, t("prompt.reject"));
    const decide = h("form", { novalidate: true, class: "decide" },
      field(t("prompt.edit"), edit),
      h("div", { class: "actions" }, accept, reject));
    const record = async (finalPrompt: string | null, kept: string) => {
      busy(accept, true);
      const answer = await ask(() => api.POST("/api/prompt/{job_id}/accept", {
        params: { path: { job_id: data.job_id } }, body: { final_prompt: finalPrompt } }));
      busy(accept, false);
      if (!answer.ok) {
        showProblem(decide, answer.problem);
        return;
      }
      store.acceptedPrompt = kept;
      decide.append(h("p", { class: "notice", role: "status" }, t("prompt.accepted"),
        " ", h("a", { href: "#generate" }, t("nav.generate"))));
    };
    decide.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = edit.value.trim();
      void record(text === data.optimized ? null : text, text);
    });
    reject.addEventListener("click", () => void record(data.original, data.original));
    const analysis = Object.entries(data.analysis ?? {}).filter(([, v]) => v);
    const variants = (data.variants ?? []).filter((v) => v !== data.optimized);
    clear(result,
      h("h2", {}, t("prompt.diff")), wordDiff(data.original, data.optimized),
      data.tokens ? h("p", { class: "hint" }, t("prompt.tokens", data.tokens)) : null,
      analysis.length ? h("h2", {}, t("prompt.analysis")) : null,
      analysis.length ? h("dl", { class: "analysis" },
        analysis.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "")])) : null,
      data.changes?.length ? h("h2", {}, t("prompt.changes")) : null,
      data.changes?.length ? h("ul", { class: "changes" }, data.changes.map((c) =>
        h("li", {}, h("strong", {}, c.kind.replace(/_/g, " ")), " ", c.text,
          h("span", { class: "hint" }, ` — ${c.reason}`)))) : null,
      (data.warnings ?? []).map((w) => h("p", { class: "warning" }, w)),
      variants.length ? h("h2", {}, t("prompt.variants")) : null,
      variants.length ? h("ul", { class: "variants" }, variants.map((v) => {
        const use = h("button", { type: "button", class: "link" }, v);
        use.addEventListener("click", () => {
          edit.value = v;
          edit.focus();
        });
        return h("li", {}, use);
      })) : null,
      decide);
  }

  return h("section", { class: "panel", "aria-labelledby": "prompt-heading" },
    h("h1", { id: "prompt-heading" }, t("prompt.heading")), form, result);
}
