// The account: who you are, sign out everywhere, change password, delete the account.
import { api, ask, cookieMode, session } from "./api";
import { forgetThisBrowser } from "./notifications";
import { events } from "./socket";
import { busy, field, h, showProblem } from "./dom";
import { t } from "./i18n";

export function accountView(onDeleted: () => void): HTMLElement {
  const user = session.user;
  const everywhere = h("button", { type: "button" }, t("account.signout_everywhere"));
  everywhere.addEventListener("click", async () => {
    busy(everywhere, true);
    events.stop(); // its token is about to be revoked: no "session ended" for this
    await forgetThisBrowser();
    await session.signOut(true);
  });

  const current = h("input", { name: "current_password", type: "password", autocomplete: "current-password", required: true });
  const next = h("input", { name: "new_password", type: "password", autocomplete: "new-password", minlength: 10, required: true });
  const change = h("button", { type: "submit" }, t("account.password"));
  const password = h("form", { novalidate: true, "aria-labelledby": "password-heading" },
    h("h2", { id: "password-heading" }, t("account.password")),
    field(t("account.current_password"), current),
    field(t("account.new_password"), next, t("auth.password_hint")), change);
  password.addEventListener("submit", async (event) => {
    event.preventDefault();
    busy(change, true);
    events.suspend(); // the change revokes the token this socket was opened with
    const answer = await ask(() => api.POST("/api/auth/password", { headers: cookieMode,
      body: { current_password: current.value, new_password: next.value } }));
    if (answer.ok) session.adopt(answer.data);
    events.renew();
    busy(change, false);
    if (!answer.ok) {
      showProblem(password, answer.problem);
      return;
    }
    current.value = "";
    next.value = "";
    showProblem(password, null);
    password.append(h("p", { class: "notice", role: "status" }, t("account.password_changed")));
  });

  const confirmText = h("input", { name: "confirm", type: "text", autocomplete: "off" });
  const remove = h("button", { type: "submit", class: "danger", disabled: true }, t("account.delete"));
  confirmText.addEventListener("input", () => {
    remove.disabled = confirmText.value.trim() !== "DELETE";
  });
  const deletion = h("form", { novalidate: true, class: "danger-zone", "aria-labelledby": "delete-heading" },
    h("h2", { id: "delete-heading" }, t("account.delete")),
    h("p", {}, t("account.delete_warning")),
    field(t("account.delete_confirm"), confirmText), remove);
  deletion.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (confirmText.value.trim() !== "DELETE") return;
    busy(remove, true);
    const answer = await ask(() => api.DELETE("/api/me"));
    busy(remove, false);
    if (!answer.ok) {
      showProblem(deletion, answer.problem);
      return;
    }
    onDeleted();
  });

  return h("section", { class: "panel", "aria-labelledby": "account-heading" },
    h("h1", { id: "account-heading" }, t("account.heading")),
    h("p", {}, t("account.signed_in_as", { email: user?.email ?? "" })),
    everywhere, password, deletion);
}
