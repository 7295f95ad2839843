// Small DOM helpers, and problem+json shown where it belongs: next to the field it names.
import { t } from "./i18n";

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs: Attrs = {}, ...children: (Child | Child[])[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === false) continue;
    if (typeof value === "function") node.addEventListener(name.replace(/^on/, ""), value);
    else if (value === true) node.setAttribute(name, "");
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child);
  }
  return node;
}

export function clear(node: Element, ...children: (Child | Child[])[]): void {
  node.replaceChildren();
  for (const child of children.flat()) if (child) node.append(child);
}

let ids = 0;
export function uid(prefix: string): string {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled control: <label> then the control, tied by id. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  const id = control.id || uid("f");
  control.id = id;
  const hintNode = hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintNode) control.setAttribute("aria-describedby", hintNode.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hintNode);
}

export interface Problem {
  type?: string;
  title?: string;
  status: number;
  detail?: string;
  errors?: { field: string; message: string }[];
  rejected?: { filename: string; reason: string }[];
  retryAfter?: number;
}

export function problemMessage(problem: Problem): string {
  if (problem.status === 429 && problem.retryAfter !== undefined) {
    return `${problem.detail ?? ""} ${t("error.wait", { s: problem.retryAfter })}`.trim();
  }
  if (problem.status === 0) return t("error.network");
  return problem.detail || problem.title || t("error.generic", { status: problem.status });
}

/** Clears a form's earlier errors, then shows each of `problem.errors` under its field
 * (by name) and the rest in the form's alert line. A 429 keeps the submit button
 * disabled for its Retry-After, counting down. */
export function showProblem(form: HTMLElement, problem: Problem | null): void {
  for (const old of form.querySelectorAll(".field-error")) old.remove();
  for (const bad of form.querySelectorAll("[aria-invalid]")) {
    bad.removeAttribute("aria-invalid");
    const described = bad.getAttribute("aria-describedby")?.split(" ")
      .filter((id) => !id.endsWith("-error")).join(" ");
    if (described) bad.setAttribute("aria-describedby", described);
    else bad.removeAttribute("aria-describedby");
  }
  let alert = form.querySelector<HTMLElement>(".form-error");
  if (!alert) {
    alert = h("p", { class: "form-error", role: "alert" });
    form.append(alert);
  }
  alert.textContent = "";
  if (!problem) return;
  const unplaced: string[] = [];
  for (const error of problem.errors ?? []) {
    const control = form.querySelector<HTMLElement>(`[name="${CSS.escape(error.field)}"]`);
    if (!control) {
      unplaced.push(`${error.field}: ${error.message}`);
      continue;
    }
    const id = `${control.id || uid("c")}-error`;
    control.setAttribute("aria-invalid", "true");
    const described = control.getAttribute("aria-describedby");
    control.setAttribute("aria-describedby", described ? `${described} ${id}` : id);
    control.closest(".field")?.append(h("p", { class: "field-error", id }, error.message));
  }
  const placed = (problem.errors?.length ?? 0) > unplaced.length;
  alert.textContent = placed && !unplaced.length ? "" : [problemMessage(problem), ...unplaced]
    .join(" ");
  if (problem.status === 429 && problem.retryAfter) waitOut(form, problem);
}

function waitOut(form: HTMLElement, problem: Problem): void {
  const button = form.querySelector<HTMLButtonElement>("button[type=submit]");
  const alert = form.querySelector<HTMLElement>(".form-error");
  let left = problem.retryAfter ?? 0;
  if (button) button.disabled = true;
  const tick = () => {
    if (alert) alert.textContent = `${problem.detail ?? ""} ${t("error.wait", { s: left })}`;
    if (left <= 0) {
      if (button) button.disabled = false;
      if (alert) alert.textContent = "";
      return;
    }
    left -= 1;
    setTimeout(tick, 1000);
  };
  tick();
}

export function busy(button: HTMLButtonElement, on: boolean): void {
  button.disabled = on;
  button.setAttribute("aria-busy", String(on));
}
