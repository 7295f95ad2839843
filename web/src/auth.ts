// Register, sign in (password, or Google's button when the gateway has a client id).
import { api, ask, cookieMode, session } from "./api";
import { busy, field, h, showProblem } from "./dom";
import { t } from "./i18n";

export interface ClientConfig {
  google_client_id: string | null;
  s3_origin: string;
}

interface GoogleId {
  accounts: { id: {
    initialize(options: { client_id: string; callback: (r: { credential: string }) => void }): void;
    renderButton(node: HTMLElement, options: Record<string, string>): void;
  } };
}

export function authView(config: ClientConfig, notice?: string): HTMLElement {
  const root = h("section", { class: "panel auth", "aria-labelledby": "auth-heading" });
  let registering = false;

  const render = () => {
    const email = h("input", { name: "email", type: "email", autocomplete: "email", required: true });
    const password = h("input", {
      name: "password", type: "password", required: true, minlength: registering ? 10 : 1,
      autocomplete: registering ? "new-password" : "current-password",
    });
    const name = h("input", { name: "display_name", type: "text", autocomplete: "name", maxlength: 100 });
    const submit = h("button", { type: "submit", class: "primary" },
      registering ? t("auth.register") : t("auth.signin"));
    const form = h("form", { novalidate: true, "aria-labelledby": "auth-heading" },
      field(t("auth.email"), email),
      field(t("auth.password"), password, registering ? t("auth.password_hint") : undefined),
      registering ? field(t("auth.display_name"), name) : null,
      submit);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      busy(submit, true);
      const answer = registering
        ? await ask(() => api.POST("/api/auth/register", { headers: cookieMode, body: {
            email: email.value.trim(), password: password.value,
            display_name: name.value.trim() || null } }))
        : await ask(() => api.POST("/api/auth/login", { headers: cookieMode, body: {
            email: email.value.trim(), password: password.value } }));
      busy(submit, false);
      if (!answer.ok) {
        showProblem(form, answer.problem);
        return;
      }
      session.adopt(answer.data);
      session.signedIn(answer.data.user);
    });
    const toggle = h("button", { type: "button", class: "link" },
      registering ? t("auth.have_account") : t("auth.no_account"));
    toggle.addEventListener("click", () => {
      registering = !registering;
      render();
    });
    const google = h("div", { class: "google", id: "google-button" });
    root.replaceChildren(
      h("h1", { id: "auth-heading" }, registering ? t("auth.register") : t("auth.signin")),
      notice ? h("p", { class: "notice", role: "status" }, notice) : "",
      form, toggle,
      config.google_client_id ? h("p", { class: "or" }, t("auth.or")) : "",
      config.google_client_id ? google : "",
    );
    if (config.google_client_id) googleButton(config.google_client_id, google, form);
  };
  render();
  return root;
}

function googleButton(clientId: string, node: HTMLElement, form: HTMLFormElement): void {
  const draw = () => {
    const google = (window as unknown as { google?: GoogleId }).google;
    if (!google) return;
    google.accounts.id.initialize({
      client_id: clientId,
      callback: async ({ credential }) => {
        const answer = await ask(() => api.POST("/api/auth/login", {
          headers: cookieMode, body: { google_id_token: credential } }));
        if (!answer.ok) {
          showProblem(form, answer.problem);
          return;
        }
        session.adopt(answer.data);
        session.signedIn(answer.data.user);
      },
    });
    google.accounts.id.renderButton(node, { theme: "outline", size: "large" });
  };
  if ((window as unknown as { google?: GoogleId }).google) {
    draw();
    return;
  }
  // Google's script is loaded only when a client id is configured (the CSP allows it then).
  const script = h("script", { src: "https://accounts.google.com/gsi/client", async: true });
  script.addEventListener("load", draw);
  document.head.append(script);
}
