// The account part of the settings dialog (cards.js builds the dialog): "Delete account / 계정 삭제", with a
// confirmation that names the account (and asks for the password when it has one), then DELETE /api/me
// (docs/api.md) and back to the login view. app.js calls attachAccount(user, onDeleted) after attachInterests.

import { ApiError, api } from "./api.js";
import { el } from "./dom.js";
import { t } from "./i18n.js";

function field(id, label, type) {
  const wrap = el("label", "account-field small");
  const input = el("input");
  input.id = id;
  input.type = type;
  input.autocomplete = type === "password" ? "current-password" : "off";
  wrap.append(el("span", "", label), input);
  return [wrap, input];
}

/** Adds the account section to the settings dialog; `onDeleted()` runs once the account is gone. */
export function attachAccount(user, onDeleted) {
  const dialog = document.getElementById("interests-dialog");
  if (!dialog) return;
  dialog.querySelector(".account-section")?.remove();
  const section = el("section", "account-section");
  const heading = el("h3", "account-heading", t("account"));
  const start = el("button", "btn small btn-danger-outline", t("account_delete"));
  start.id = "account-delete";
  start.type = "button";

  const confirmBox = el("div", "account-confirm");
  confirmBox.hidden = true;
  const warning = el("p", "small", t("account_delete_hint", { name: user.name }));
  const [nameWrap, name] = field("account-delete-name", t("account_delete_name"), "text");
  const [passWrap, password] = field("account-delete-password", t("account_delete_password"), "password");
  passWrap.hidden = user.anonymous;
  const error = el("p", "small account-error");
  error.setAttribute("role", "alert");
  error.hidden = true;
  const cancel = el("button", "btn small", t("account_delete_cancel"));
  cancel.type = "button";
  const confirm = el("button", "btn btn-danger small", t("account_delete_confirm"));
  confirm.id = "account-delete-confirm";
  confirm.type = "button";
  confirm.disabled = true;
  const row = el("div", "interests-buttons");
  row.append(cancel, confirm);
  confirmBox.append(warning, nameWrap, passWrap, error, row);

  name.addEventListener("input", () => {
    confirm.disabled = name.value.trim() !== user.name;
  });
  start.addEventListener("click", () => {
    start.hidden = true;
    confirmBox.hidden = false;
    name.focus();
  });
  cancel.addEventListener("click", () => {
    confirmBox.hidden = true;
    start.hidden = false;
    name.value = password.value = "";
    error.hidden = true;
    confirm.disabled = true;
  });
  confirm.addEventListener("click", async () => {
    confirm.disabled = true;
    error.hidden = true;
    const body = { confirm: name.value.trim() };
    if (password.value) body.password = password.value;
    try {
      await api("DELETE", "/api/me", body);
    } catch (e) {
      const code = e instanceof ApiError ? e.code : null;
      if (code === "invalid_credentials") error.textContent = t("account_delete_wrong_password");
      else if (code === "last_admin") error.textContent = t("account_delete_last_admin");
      else error.textContent = (e && e.message) || String(e);
      error.hidden = false;
      confirm.disabled = false;
      return;
    }
    dialog.close();
    onDeleted();
  });

  section.append(heading, start, confirmBox);
  dialog.insertBefore(section, dialog.querySelector(".dialog-close-row"));
}
